//! `cargo +nightly fuzz run framing`: see `breakwater_fuzz::checks::framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| breakwater_fuzz::checks::framing(data));
