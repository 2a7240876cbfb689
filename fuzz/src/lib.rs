//! breakwater's fuzz checks, as a library for the `fuzz_targets/` binaries.
//!
//! The checks themselves are in `checks.rs`, which `tests/fuzz_corpus.rs`
//! also includes, so the fuzzer (nightly) and the corpus replay in CI
//! (stable) run the same code.

pub mod checks;
