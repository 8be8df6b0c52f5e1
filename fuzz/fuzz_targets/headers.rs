//! libFuzzer target `headers`: see `tokengate_fuzz::headers` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tokengate_fuzz::headers(data));
