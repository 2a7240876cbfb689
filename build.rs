//! Build facts for `breakwater --version` and `breakwater_build_info`: the
//! git commit (`git rev-parse --short HEAD`) and the build date (UTC).
//!
//! Never fails the build: without git, or outside a git checkout (a
//! source tarball), the commit is `unknown`. `SOURCE_DATE_EPOCH`, when
//! set, fixes the date for reproducible builds.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    // Run again when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit). Paths come from git, so worktrees work too.
    // A missing path would make cargo run this every build, so a branch
    // whose ref is packed is watched through packed-refs.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|branch| {
        git(&["rev-parse", "--git-path", &branch])
            .filter(|path| std::path::Path::new(path).exists())
            .or_else(|| git(&["rev-parse", "--git-path", "packed-refs"]))
    });
    for path in [git(&["rev-parse", "--git-path", "HEAD"]), branch]
        .into_iter()
        .flatten()
        .filter(|path| std::path::Path::new(path).exists())
    {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rustc-env=BREAKWATER_COMMIT={commit}");
    println!("cargo:rustc-env=BREAKWATER_BUILD_DATE={}", build_date());
}

/// The trimmed output of a successful `git` run, or `None`.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// `YYYY-MM-DD` (UTC) of `SOURCE_DATE_EPOCH` or now.
fn build_date() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|since| since.as_secs())
        })
        .unwrap_or(0);
    let (year, month, day) = civil_from_days(seconds / 86_400);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
