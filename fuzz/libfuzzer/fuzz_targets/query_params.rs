#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telemetry_fuzz::target::query_params(data));
