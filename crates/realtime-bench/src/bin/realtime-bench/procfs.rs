//! Process and machine figures read from /proc: resident memory, CPU time, kernel slab,
//! and a description of the machine.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The value in kB of `key` in a `/proc/*/status` or `/proc/meminfo` style text.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS")
}

/// Kernel slab memory of the whole machine, in KiB.
pub fn slab_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&text, "Slab")
}

/// User plus system CPU time of `pid`, in clock ticks, from `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// User plus system CPU seconds used by `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Some(ticks as f64 / per_second as f64)
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// Total memory, in KiB.
    pub mem_total_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Soft limit of open files per process.
    pub open_files_limit: String,
}

/// Describes this machine.
pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let limits = read("/proc/self/limits");
    let open_files_limit = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("unknown")
        .to_owned();
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        mem_total_kib: kib_field(&read("/proc/meminfo"), "MemTotal").unwrap_or(0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        cpu_model,
        open_files_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t    3396 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(3396));
        assert_eq!(kib_field(status, "VmSwap"), None);
        let meminfo =
            "MemTotal:       24000000 kB\nSlab:             123456 kB\nSReclaimable: 5 kB\n";
        assert_eq!(kib_field(meminfo, "Slab"), Some(123_456));
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process_and_machine() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|r| r > 0));
        assert!(cpu_seconds(pid).is_some());
        assert!(slab_kib().is_some());
        let m = machine();
        assert!(m.nproc > 0 && m.mem_total_kib > 0 && !m.kernel.is_empty(), "{m:?}");
    }
}
