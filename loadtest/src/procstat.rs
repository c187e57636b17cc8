//! What `/proc` says about a process: resident memory and CPU time consumed.

/// VmRSS in KiB, if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in clock ticks, all threads included.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 3.. are at index 0..; utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU use between two readings as a percentage of one core.
pub fn cpu_pct(before: Option<u64>, after: Option<u64>, wall_s: f64) -> Option<f64> {
    let (b, a) = (before?, after?);
    if wall_s <= 0.0 {
        return None;
    }
    let pct = a.saturating_sub(b) as f64 / ticks_per_s() / wall_s * 100.0;
    Some((pct * 10.0).round() / 10.0)
}

/// Nanoseconds the process's threads have spent runnable but waiting for a CPU (the second
/// field of each `/proc/PID/task/*/schedstat`). Over a window, this is how much the process
/// was held back by whatever else was running.
pub fn runq_wait_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        total += s
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Busy ticks of the whole machine (all CPUs: everything but idle and iowait), from /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(total.saturating_sub(idle))
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples the disk's `fdatasync` latency every 100 ms on a 4 KiB write in `dir` until `stop`:
/// what a group commit with `--sync-writes true` waits for, under whatever else the disk is
/// doing during the window. Returns the latencies in µs.
pub fn fsync_probe(
    dir: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        use std::io::Write;
        let path = dir.join(format!(".loadtest-fsync-probe-{}", std::process::id()));
        let mut out = Vec::new();
        let Ok(mut f) = std::fs::File::create(&path) else {
            return out;
        };
        let block = [0x5au8; 4096];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = std::time::Instant::now();
            if f.write_all(&block).is_err() || f.sync_data().is_err() {
                break;
            }
            out.push((t.elapsed().as_micros() as u64).max(1));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&path);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_ticks(me).is_some());
        assert_eq!(
            cpu_pct(Some(0), Some(100), 1.0),
            Some(100.0 * 100.0 / ticks_per_s())
        );
    }
}
