//! The operating system, read and asked: the few calls breakwater makes
//! outside tokio.
//!
//! - [`rss_of`] and [`current_rss`] read resident memory from
//!   `/proc/PID/statm` (the overload ladder samples breakwater's own, the
//!   supervisor's `memory_limit` trigger its child's);
//! - [`release_free_memory`] hands freed heap back with glibc's
//!   `malloc_trim`, when [`crate::policy::trim::TrimPolicy`] says so.
//!
//! Nothing here decides anything: the decisions are pure types in
//! `policy/`, and the task that samples and acts is [`crate::sampler`].

/// Resident set size of this process, in bytes.
pub fn current_rss() -> Option<u64> {
    rss_of("self")
}

/// Resident set size of process `pid` (`"self"` for this one), in bytes,
/// from `/proc/PID/statm`.
pub fn rss_of(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Returns free heap pages to the OS (glibc only; elsewhere a no-op).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes a padding size and only walks the
    // allocator's own free lists under its locks; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_rss() {
        assert!(current_rss().is_some_and(|rss| rss > 0));
    }

    #[test]
    fn a_missing_process_has_no_rss() {
        assert_eq!(rss_of("not-a-pid"), None);
    }
}
