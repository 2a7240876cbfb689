//! What a process costs, read from `/proc`: CPU time and resident memory.
//!
//! A daemon may be more than one process (nginx runs a master and a worker),
//! so every figure is summed over the process and its direct children. CPU
//! is `utime + stime` from `/proc/PID/stat` (all threads, in clock ticks);
//! memory is `VmRSS` (now) or `VmHWM` (peak) from `/proc/PID/status`. The
//! sum of per-process peaks is an upper bound of the tree's peak, which is
//! the honest direction for a budget.

use std::fs;

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// The process and its direct children (one level is enough for nginx's
/// master and worker; HAProxy and breakwater are one process).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if child != pid
            && stat_fields(child)
                .and_then(|fields| fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()))
                == Some(pid)
        {
            pids.push(child);
        }
    }
    pids
}

/// CPU seconds (user + system, all threads) used so far by `pid` and its children.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = process_tree(pid)
        .into_iter()
        .filter_map(process_ticks)
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// User-mode CPU seconds (all threads) used so far by `pid` and its
/// children; the rest of [`cpu_seconds`] is kernel time (system calls,
/// and on loopback the receiving side's network stack too).
pub fn user_cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = process_tree(pid)
        .into_iter()
        .filter_map(|pid| stat_fields(pid)?.get(11)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// CPU seconds used so far by this bench process itself.
pub fn own_cpu_seconds() -> f64 {
    process_ticks(std::process::id()).unwrap_or(0) as f64 / clock_ticks_per_second()
}

/// CPU seconds all processes on the machine have used (every CPU's
/// user, nice, system, irq, softirq and steal time from `/proc/stat`).
pub fn system_busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0.0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&index| fields.get(index))
        .sum();
    busy as f64 / clock_ticks_per_second()
}

/// Resident set size now (`VmRSS`) of `pid` and its children, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    process_tree(pid)
        .into_iter()
        .filter_map(|pid| status_kib(pid, "VmRSS"))
        .sum()
}

/// Peak resident set size (`VmHWM`) of `pid` and its children, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    process_tree(pid)
        .into_iter()
        .filter_map(|pid| status_kib(pid, "VmHWM"))
        .sum()
}

/// `utime + stime` of one process, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    // After the command name: state is field 0 here, utime 11, stime 12
    // (fields 14 and 15 of proc(5), counted from 1 with pid and comm).
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// The fields of `/proc/PID/stat` after the parenthesised command name,
/// which may itself hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// One `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}
