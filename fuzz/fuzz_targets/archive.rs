#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_zone::fuzzing::archive(data));
