//! `cargo +nightly fuzz run header_sanitiser`: see `breakwater_fuzz::checks::header_sanitiser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| breakwater_fuzz::checks::header_sanitiser(data));
