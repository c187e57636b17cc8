//! The disk guard: below `--min-free-disk` of free space on the data directory's file system the
//! store stops taking writes *before* the disk is full. Every write then fails the way a full disk
//! fails it (`StoreError::DiskLow`), so each protocol answers "not stored" and its device keeps the
//! data: no crash, no lost ack, and no half-written WAL. RocksDB itself is never driven into its
//! own disk-full state, from which it recovers only after a poll of its own.
//!
//! `store::monitor` samples the free space once a second and calls `observe`; writes read one
//! atomic. Writing resumes by itself once the free space is back above the threshold plus a margin
//! (1 % of the disk), so a disk hovering at the threshold does not flap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How much free space the guard keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinFree {
    /// No guard: writes go on until the disk itself is full (`tests/disk_full.rs`).
    Off,
    /// Percent of the file system's size (0 < p < 100).
    Percent(f64),
    Bytes(u64),
}

/// The default: 5 % keeps room for RocksDB's compactions, which need free space to free space.
pub const DEFAULT_MIN_FREE: MinFree = MinFree::Percent(5.0);

impl MinFree {
    /// Parses `5%`, `512MiB`, `2GB`, `1073741824` (bytes), or `0` / `off`.
    pub fn parse(s: &str) -> Result<MinFree, String> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("off") {
            return Ok(MinFree::Off);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: a percentage is a number followed by %"))?;
            if !(p > 0.0 && p < 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and below 100"
                ));
            }
            return Ok(MinFree::Percent(p));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?}: give a size like 5%, 512MiB, 2GB or 0 (off)"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB or %)"
                ));
            }
        };
        n.checked_mul(scale)
            .map(MinFree::Bytes)
            .ok_or_else(|| format!("{s:?} is too large"))
    }

    /// The free bytes to keep on a file system of `total` bytes.
    fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFree::Off => 0,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
            MinFree::Bytes(b) => b,
        }
    }
}

/// The guard's state, shared by the committers (reading) and the monitor (writing).
#[derive(Debug)]
pub struct DiskGuard {
    min_free: std::sync::Mutex<MinFree>,
    low: AtomicBool,
    free: AtomicU64,
    total: AtomicU64,
}

/// What one observation changed.
#[derive(Debug, PartialEq)]
pub enum Change {
    None,
    /// Free space fell below the threshold: writes stop.
    WentLow {
        free: u64,
        keep: u64,
    },
    /// Free space is back above the threshold and its margin: writes resume.
    Recovered {
        free: u64,
    },
}

impl Default for DiskGuard {
    fn default() -> Self {
        DiskGuard {
            min_free: std::sync::Mutex::new(MinFree::Off),
            low: AtomicBool::new(false),
            free: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl DiskGuard {
    pub fn set_min_free(&self, min_free: MinFree) {
        if let Ok(mut m) = self.min_free.lock() {
            *m = min_free;
        }
    }

    fn min_free(&self) -> MinFree {
        self.min_free.lock().map_or(MinFree::Off, |m| *m)
    }

    /// Whether writes are refused now.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// The last observation: (free, total) bytes.
    pub fn space(&self) -> (u64, u64) {
        (
            self.free.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Takes a measurement of the file system: `free` bytes available to the server of `total`.
    pub fn observe(&self, free: u64, total: u64) -> Change {
        self.free.store(free, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        let keep = self.min_free().bytes_of(total);
        let was_low = self.is_low();
        if keep == 0 {
            self.low.store(false, Ordering::Relaxed);
            return if was_low {
                Change::Recovered { free }
            } else {
                Change::None
            };
        }
        let margin = total / 100;
        match (was_low, free) {
            (false, f) if f < keep => {
                self.low.store(true, Ordering::Relaxed);
                Change::WentLow { free, keep }
            }
            (true, f) if f >= keep.saturating_add(margin) => {
                self.low.store(false, Ordering::Relaxed);
                Change::Recovered { free }
            }
            _ => Change::None,
        }
    }
}

/// Free (available to unprivileged users, as RocksDB's writes are) and total bytes of the file
/// system holding `path`.
pub fn statvfs(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory of the right size;
    // on success statvfs initialised it.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.assume_init()
    };
    let frsize = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(frsize),
        (st.f_blocks as u64).saturating_mul(frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_with_units_and_refuse_nonsense() {
        assert_eq!(MinFree::parse("5%"), Ok(MinFree::Percent(5.0)));
        assert_eq!(MinFree::parse(" 0.5 %"), Ok(MinFree::Percent(0.5)));
        assert_eq!(MinFree::parse("512MiB"), Ok(MinFree::Bytes(512 << 20)));
        assert_eq!(MinFree::parse("2GB"), Ok(MinFree::Bytes(2_000_000_000)));
        assert_eq!(MinFree::parse("4096"), Ok(MinFree::Bytes(4096)));
        assert_eq!(MinFree::parse("0"), Ok(MinFree::Off));
        assert_eq!(MinFree::parse("off"), Ok(MinFree::Off));
        for bad in [
            "",
            "%",
            "100%",
            "0%",
            "-1%",
            "5 parsecs",
            "GiB",
            "99999999999999TiB",
        ] {
            assert!(MinFree::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_stop_below_the_threshold_and_resume_past_its_margin() {
        let g = DiskGuard::default();
        g.set_min_free(MinFree::Percent(10.0));
        let total = 1_000_000;
        assert_eq!(g.observe(200_000, total), Change::None);
        assert!(!g.is_low());
        assert_eq!(
            g.observe(99_999, total),
            Change::WentLow {
                free: 99_999,
                keep: 100_000
            }
        );
        assert!(g.is_low());
        // At the threshold but inside the 1 % margin: still low, no flapping.
        assert_eq!(g.observe(105_000, total), Change::None);
        assert!(g.is_low());
        assert_eq!(
            g.observe(110_000, total),
            Change::Recovered { free: 110_000 }
        );
        assert!(!g.is_low());
        assert_eq!(g.space(), (110_000, total));
    }

    #[test]
    fn turning_the_guard_off_resumes_writes() {
        let g = DiskGuard::default();
        g.set_min_free(MinFree::Bytes(500));
        assert!(matches!(g.observe(100, 1000), Change::WentLow { .. }));
        g.set_min_free(MinFree::Off);
        assert_eq!(g.observe(100, 1000), Change::Recovered { free: 100 });
        assert!(!g.is_low());
    }

    #[test]
    fn statvfs_reads_the_temp_dir() {
        let (free, total) = statvfs(&std::env::temp_dir()).expect("statvfs");
        assert!(total > 0 && free <= total);
    }
}
