#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keypack_fuzz::sops_parse(data));
