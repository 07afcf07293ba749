//! The server's CPU time and memory from /proc, summed over a process tree; the fd limit.

use std::collections::{HashMap, HashSet};
use std::fs;

/// CPU time and memory of a set of process trees at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// utime + stime + cutime + cstime of every live process in the trees, in clock ticks
    /// (children that exited and were waited for are in their parent's cutime/cstime).
    pub(crate) cpu_ticks: u64,
    /// The sum of VmRSS, KiB.
    pub(crate) rss_kib: u64,
    /// The sum of Pss (proportional set size: shared pages divided among their users), KiB.
    pub(crate) pss_kib: u64,
    /// How many processes the trees have.
    pub(crate) processes: usize,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The fields of `/proc/PID/stat` after the command name, which may contain spaces and ')'.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let close = text.rfind(')')?;
    Some(text[close + 1..].split_ascii_whitespace().collect())
}

/// `(ppid, utime + stime + cutime + cstime)` from the text of `/proc/PID/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let f = stat_fields(text)?;
    // Field 3 (state) is index 0: ppid is field 4, utime..cstime are fields 14..17.
    let ppid = f.get(1)?.parse().ok()?;
    let mut cpu = 0u64;
    for i in 11..=14 {
        cpu += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, cpu))
}

/// A `Key:   123 kB` line's number from a /proc status-like file.
pub(crate) fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_ascii_whitespace().next()?.parse().ok())
}

/// The roots and all their descendants, from a scan of /proc.
pub(crate) fn tree(roots: &[u32]) -> Vec<(u32, u64)> {
    let mut all: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                all.insert(pid, stat);
            }
        }
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &all {
        children.entry(ppid).or_default().push(pid);
    }
    let mut seen = HashSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(&(_, cpu)) = all.get(&pid) {
            out.push((pid, cpu));
            if let Some(c) = children.get(&pid) {
                stack.extend(c);
            }
        }
    }
    out
}

/// Samples the trees rooted at `roots`; with `memory`, also reads VmRSS and Pss of each.
pub(crate) fn sample(roots: &[u32], memory: bool) -> Sample {
    let procs = tree(roots);
    let mut s = Sample {
        processes: procs.len(),
        ..Sample::default()
    };
    for (pid, cpu) in procs {
        s.cpu_ticks += cpu;
        if memory {
            if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
                s.rss_kib += kib_field(&status, "VmRSS").unwrap_or(0);
            }
            if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                s.pss_kib += kib_field(&rollup, "Pss").unwrap_or(0);
            }
        }
    }
    s
}

/// This process's own CPU time (all threads), in clock ticks.
pub(crate) fn own_cpu_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
        .map_or(0, |(_, cpu)| cpu)
}

/// This process's resident set size (VmRSS), KiB; 0 if unknown.
pub(crate) fn own_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "VmRSS"))
        .unwrap_or(0)
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let text = "1234 (smtpd (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 3 2 20 0 1 0 100 1000 200";
        assert_eq!(parse_stat(text), Some((1, 17 + 5 + 3 + 2)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tsmtpd\nVmRSS:\t   13312 kB\nRssAnon:\t 2000 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(13312));
        assert_eq!(kib_field(status, "Pss"), None);
        let rollup = "00400000-7fff [rollup]\nRss:  100 kB\nPss:   42 kB\nPss_Anon: 7 kB\n";
        assert_eq!(kib_field(rollup, "Pss"), Some(42));
    }

    #[test]
    fn own_tree_and_sample() {
        let me = std::process::id();
        let t = tree(&[me]);
        assert!(t.iter().any(|&(pid, _)| pid == me));
        let s = sample(&[me], true);
        assert!(s.processes >= 1);
        assert!(s.rss_kib > 0);
        assert!(raise_fd_limit() >= 1);
        assert!(own_rss_kib() > 0);
        assert!(clock_ticks_per_second() > 0);
    }
}
