//! What the benchmarks read about a process from outside it, so the node needs no measurement code of its
//! own: resident memory and CPU time from `/proc/<pid>`, TCP bytes sent per process from `ss -ti` (the
//! kernel's per-socket `bytes_sent` counter), and a description of the machine and its load.

use std::collections::HashMap;
use std::process::Command;

/// Resident set size now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/status`; None when the process is gone.
pub fn rss(pid: u32) -> Option<Rss> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time the process has used so far, in seconds (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields are counted after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14 and stime 15, so indices 11 and 12 here.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// TCP bytes sent by each process over its established sockets, from `ss -tinp` (the kernel's
/// `tcp_info.bytes_sent`, payload bytes including retransmissions, no IP/TCP headers). Sockets whose local
/// port is in `skip_local_ports` (a node's API listener, say) are not counted. A socket closed between two
/// readings takes its bytes with it, so deltas undercount when connections churn.
pub fn tcp_bytes_sent(skip_local_ports: &[u16]) -> HashMap<u32, u64> {
    let out = match Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => return HashMap::new(),
    };
    let mut sums = HashMap::new();
    let mut current: Option<u32> = None;
    for line in out.lines() {
        if !line.starts_with([' ', '\t']) {
            current = None;
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if local_port.is_some_and(|p| skip_local_ports.contains(&p)) {
                continue;
            }
            current = line
                .split("pid=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok());
        } else if let Some(pid) = current {
            if let Some(b) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bytes_sent:"))
                .and_then(|v| v.parse::<u64>().ok())
            {
                *sums.entry(pid).or_insert(0) += b;
            }
        }
    }
    sums
}

/// One line naming the machine and how busy it is now: CPUs, CPU model, RAM, load average.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cpus} CPU ({model}), {:.1} GiB RAM, load average {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        load_average()
    )
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); None when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sorts in place (NaN-free input) and returns it, for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = sorted((1..=100).map(f64::from).rev().collect());
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn own_process_is_measurable() {
        let me = std::process::id();
        assert!(rss(me).is_some_and(|r| r.rss_kib > 0 && r.hwm_kib >= r.rss_kib));
        assert!(cpu_secs(me).is_some());
    }
}

/// A scenario's report: each line printed as it comes and kept, headed by the machine and the binary.
pub struct Report(String);

impl Report {
    pub fn start() -> Report {
        let mut r = Report(String::new());
        r.say(format!("machine: {}", machine()));
        r.say(format!("xov binary: {}", crate::node::xov_bin().display()));
        r
    }

    pub fn say(&mut self, s: String) {
        println!("{s}");
        self.0.push_str(&s);
        self.0.push('\n');
    }

    pub fn text(self) -> String {
        self.0
    }
}
