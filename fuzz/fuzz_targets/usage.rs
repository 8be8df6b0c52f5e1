//! libFuzzer target `usage`: see `tokengate_fuzz::usage` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tokengate_fuzz::usage(data));
