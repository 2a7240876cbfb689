#![allow(clippy::unwrap_used)]
//! Replays the fuzz corpus on stable, so CI guards what fuzzing found.
//!
//! Every file under `fuzz/corpus/<target>/` (the seeds) and
//! `fuzz/regressions/<target>/` (minimised crashes) runs through the same
//! check the fuzz target runs: `fuzz/src/checks.rs`, included here as a
//! module. The fuzzer itself needs nightly and libFuzzer; this needs
//! neither. See `docs/FUZZING.md`.
//!
//! A regression whose file name starts with `open-` records a finding
//! whose fix has not landed: it must still fail its check, so that the fix
//! turns this test red until the file is renamed without the prefix and
//! guards the fix from then on.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Runs `check` on `path`'s bytes; the panic message if it panicked.
fn run(check: fn(&[u8]), path: &Path) -> Option<String> {
    let data = fs::read(path).unwrap();
    panic::catch_unwind(AssertUnwindSafe(|| check(&data)))
        .err()
        .map(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
}

fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap();
    let mut failures = Vec::new();

    let seeds = files(&fuzz_dir().join("corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    for path in &seeds {
        if let Some(message) = run(*check, path) {
            failures.push(format!("{}: {message}", path.display()));
        }
    }

    for path in files(&fuzz_dir().join("regressions").join(target)) {
        let open = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("open-");
        match (run(*check, &path), open) {
            (Some(message), false) => failures.push(format!("{}: {message}", path.display())),
            (None, true) => failures.push(format!(
                "{}: passes now; drop the `open-` prefix so it guards the fix",
                path.display()
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn config_loader_corpus() {
    replay("config_loader");
}

#[test]
fn route_matcher_corpus() {
    replay("route_matcher");
}

#[test]
fn header_sanitiser_corpus() {
    replay("header_sanitiser");
}

#[test]
fn framing_corpus() {
    replay("framing");
}

#[test]
fn every_target_is_replayed() {
    let mut names: Vec<&str> = checks::TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    let mut targets: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert_eq!(
        names, targets,
        "a fuzz target without a replay, or the reverse"
    );
}
