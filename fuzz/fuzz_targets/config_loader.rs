//! `cargo +nightly fuzz run config_loader`: see `breakwater_fuzz::checks::config_loader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| breakwater_fuzz::checks::config_loader(data));
