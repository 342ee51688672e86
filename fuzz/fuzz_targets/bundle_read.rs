#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keypack_fuzz::bundle_read(data));
