//! libFuzzer target `config`: see `tokengate_fuzz::config` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tokengate_fuzz::config(data));
