//! CPU time and memory of a process, read from Linux's /proc.
//!
//! The broker's CPU seconds per million messages and RSS per idle connection are the figures that
//! compare brokers fairly; the load generator's own CPU time shows whether it was the bottleneck.

use std::time::Instant;

/// Which process to read: the broker under test (`--broker-pid`) or the load generator itself.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Pid(u32),
    Current,
}

impl Target {
    fn dir(self) -> String {
        match self {
            Target::Pid(pid) => format!("/proc/{pid}"),
            Target::Current => "/proc/self".to_owned(),
        }
    }
}

/// Clock ticks per second used by /proc/PID/stat (USER_HZ).
#[allow(unsafe_code)] // the one libc call of the package
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0 // USER_HZ on every mainstream Linux architecture
    }
}

/// user + system CPU seconds of every thread of the process so far.
pub fn cpu_secs(target: Target) -> Result<f64, String> {
    let path = format!("{}/stat", target.dir());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_stat_cpu_ticks(&text)
        .map(|ticks| ticks as f64 / ticks_per_sec())
        .ok_or_else(|| format!("{path}: unexpected format"))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last ')'.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // field 3 (state) is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(target: Target) -> Result<u64, String> {
    let path = format!("{}/status", target.dir());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_status_rss_kib(&text).ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// Reset the peak resident set size of a process to its current RSS (writes `5` to
/// /proc/PID/clear_refs; needs the same user or CAP_SYS_ADMIN), so that a later
/// [`peak_rss_kib`] gives the peak since now.
pub fn reset_peak_rss(target: Target) -> Result<(), String> {
    let path = format!("{}/clear_refs", target.dir());
    std::fs::write(&path, b"5").map_err(|e| format!("cannot write {path}: {e}"))
}

/// Peak resident set size in KiB since the process started or since [`reset_peak_rss`]
/// (VmHWM of /proc/PID/status).
pub fn peak_rss_kib(target: Target) -> Result<u64, String> {
    let path = format!("{}/status", target.dir());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status_kib(&text, "VmHWM:").ok_or_else(|| format!("{path}: no VmHWM line"))
}

fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS:")
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.trim_start_matches(key)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds of a process at one instant, to subtract from a later sample.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    cpu_secs: f64,
    at: Instant,
}

impl CpuSample {
    pub fn take(target: Target) -> Result<Self, String> {
        Ok(CpuSample {
            cpu_secs: cpu_secs(target)?,
            at: Instant::now(),
        })
    }

    /// (CPU seconds used since `self`, wall seconds since `self`).
    pub fn since(&self, target: Target) -> Result<(f64, f64), String> {
        let now = cpu_secs(target)?;
        Ok((now - self.cpu_secs, self.at.elapsed().as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_comes_from_the_vmrss_line() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss_kib(status), Some(1234));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn peak_rss_is_at_least_the_current_rss_after_a_reset() {
        reset_peak_rss(Target::Current).expect("own clear_refs");
        let peak = peak_rss_kib(Target::Current).expect("own VmHWM");
        assert!(peak > 0 && peak >= rss_kib(Target::Current).expect("own VmRSS") / 2);
    }

    #[test]
    fn own_process_is_readable_and_burning_cpu_shows() {
        let before = CpuSample::take(Target::Current).expect("own stat");
        let mut x = 0u64;
        let spin_until = Instant::now() + std::time::Duration::from_millis(300);
        while Instant::now() < spin_until {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (cpu, wall) = before.since(Target::Current).expect("own stat");
        assert!(wall >= 0.3);
        assert!(cpu > 0.05, "spinning 300 ms used only {cpu} s of CPU");
        assert!(rss_kib(Target::Current).expect("own status") > 0);
    }
}
