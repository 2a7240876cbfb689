//! `cargo +nightly fuzz run route_matcher`: see `breakwater_fuzz::checks::route_matcher`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| breakwater_fuzz::checks::route_matcher(data));
