//! Reading the machine. Nothing here judges: every reading is handed over as it is, and every read
//! that can fail is a [`Read`] whose error says what could not be read and why. Nothing here may
//! panic on the machine's state: a missing `/proc` file is an `Err`, not a crash.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::plan::Plan;
use crate::shard::uring::RING_ENTRIES;

/// A reading, or why it could not be taken.
pub type Read<T> = Result<T, String>;

/// Where `/proc` and `/sys` are; tests point these at a made-up tree.
#[derive(Clone, Debug)]
pub struct Paths {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Paths {
    pub fn real() -> Paths {
        Paths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// A resource limit; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Why an io_uring could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringError {
    pub errno: Option<i32>,
    pub message: String,
    /// Which ring (1-based) failed; the earlier ones were set up.
    pub ring: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UringReading {
    /// Rings set up at once (one per shard, each with the shard's entry count).
    pub rings: usize,
    pub result: Result<(), UringError>,
    /// `kernel.io_uring_disabled` (Linux 6.6+; absent before).
    pub disabled: Read<u64>,
    /// The `Seccomp:` mode of this process (0 off, 1 strict, 2 filter).
    pub seccomp: Read<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuReading {
    /// CPUs online.
    pub online: Read<usize>,
    /// CPUs in this process's affinity mask: the cores `serve` pins its shards to.
    pub allowed: Read<usize>,
    /// The CPU bandwidth limit of this process's cgroup, in CPUs, if one is set and readable.
    pub quota: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FsyncReading {
    /// Where the file was written.
    pub dir: PathBuf,
    /// The data directory did not exist, so `dir` is its nearest existing ancestor.
    pub data_dir_missing: bool,
    /// The filesystem's name (from statfs), if known.
    pub fs_type: Option<String>,
    /// Bytes appended before each fdatasync.
    pub block: usize,
    /// Each append + fdatasync, in nanoseconds, in the order taken.
    pub samples_ns: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    pub kernel: Read<String>,
    pub uring: UringReading,
    pub nofile: Read<Limit>,
    pub memlock: Read<Limit>,
    pub somaxconn: Read<u64>,
    pub syn_backlog: Read<u64>,
    pub syncookies: Read<u64>,
    pub port_range: Read<(u64, u64)>,
    /// `net.ipv4.ip_local_reserved_ports` as ranges.
    pub reserved_ports: Read<Vec<(u64, u64)>>,
    pub file_max: Read<u64>,
    pub nr_open: Read<u64>,
    pub cpus: CpuReading,
    /// RocksDB table files (`*.sst`) in the data directory; 0 when it does not exist yet.
    pub table_files: Read<u64>,
    pub fsync: Read<FsyncReading>,
}

/// Bytes appended before each timed fdatasync (about one small group commit).
pub const FSYNC_BLOCK: usize = 4096;

pub fn read_machine(paths: &Paths, data_dir: &Path, plan: &Plan, fsync_samples: usize) -> Readings {
    Readings {
        kernel: kernel_release(),
        uring: UringReading {
            rings: plan.shards,
            result: probe_uring(plan.shards, RING_ENTRIES),
            disabled: sysctl_u64(paths, "kernel.io_uring_disabled"),
            seccomp: read_file(&paths.proc.join("self/status")).and_then(|s| {
                status_field(&s, "Seccomp")
                    .ok_or_else(|| "no Seccomp: line in /proc/self/status".to_string())
            }),
        },
        nofile: rlimit(Rlimit::Nofile),
        memlock: rlimit(Rlimit::Memlock),
        somaxconn: sysctl_u64(paths, "net.core.somaxconn"),
        syn_backlog: sysctl_u64(paths, "net.ipv4.tcp_max_syn_backlog"),
        syncookies: sysctl_u64(paths, "net.ipv4.tcp_syncookies"),
        port_range: sysctl(paths, "net.ipv4.ip_local_port_range").and_then(|s| {
            parse_pair(&s)
                .ok_or_else(|| format!("unexpected net.ipv4.ip_local_port_range {:?}", s.trim()))
        }),
        reserved_ports: sysctl(paths, "net.ipv4.ip_local_reserved_ports").and_then(|s| {
            parse_port_list(&s).ok_or_else(|| {
                format!("unexpected net.ipv4.ip_local_reserved_ports {:?}", s.trim())
            })
        }),
        file_max: sysctl_u64(paths, "fs.file-max"),
        nr_open: sysctl_u64(paths, "fs.nr_open"),
        cpus: CpuReading {
            online: online_cpus(),
            allowed: allowed_cpus(),
            quota: cpu_quota(paths),
        },
        table_files: count_table_files(data_dir),
        fsync: measure_fsync(data_dir, fsync_samples, FSYNC_BLOCK),
    }
}

fn read_file(path: &Path) -> Read<String> {
    std::fs::read_to_string(path).map_err(|e| format!("could not read {}: {e}", path.display()))
}

/// A sysctl's text from `/proc/sys`.
pub fn sysctl(paths: &Paths, name: &str) -> Read<String> {
    read_file(&paths.proc.join("sys").join(name.replace('.', "/")))
}

pub fn sysctl_u64(paths: &Paths, name: &str) -> Read<u64> {
    let s = sysctl(paths, name)?;
    s.trim()
        .parse()
        .map_err(|_| format!("unexpected {name} value {:?}", s.trim()))
}

/// Two whitespace-separated numbers (`ip_local_port_range`).
pub fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
        _ => None,
    }
}

/// `ip_local_reserved_ports`: `""`, or a comma list of ports and `a-b` ranges.
pub fn parse_port_list(s: &str) -> Option<Vec<(u64, u64)>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',')
        .map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => {
                    let p = part.parse().ok()?;
                    Some((p, p))
                }
            }
        })
        .collect()
}

/// A numeric field of `/proc/<pid>/status` (`Seccomp:\t2`).
pub fn status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() == name {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn kernel_release() -> Read<String> {
    // SAFETY: `utsname` is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(format!("uname failed: {}", std::io::Error::last_os_error()));
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Clone, Copy)]
enum Rlimit {
    Nofile,
    Memlock,
}

fn rlimit(which: Rlimit) -> Read<Limit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`. (The resource constants' type differs between
    // libcs, hence a call per resource.)
    let (rc, name) = unsafe {
        match which {
            Rlimit::Nofile => (
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut r),
                "RLIMIT_NOFILE",
            ),
            Rlimit::Memlock => (
                libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r),
                "RLIMIT_MEMLOCK",
            ),
        }
    };
    if rc != 0 {
        return Err(format!(
            "getrlimit({name}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let conv = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v as u64);
    Ok(Limit {
        soft: conv(r.rlim_cur),
        hard: conv(r.rlim_max),
    })
}

/// Sets up `rings` shard rings of `entries` as `serve` does (`shard::uring::Ring`: its flags and
/// its provided-buffer ring), all held at once as the shards hold them, then drops them. These are
/// the real syscalls, so seccomp, `io_uring_disabled`, a kernel without io_uring or too old for
/// the ring's features (before 6.0) and (before 5.12) RLIMIT_MEMLOCK all show here as the errno
/// they cause.
pub fn probe_uring(rings: usize, entries: u32) -> Result<(), UringError> {
    let mut held = Vec::with_capacity(rings);
    for i in 0..rings {
        match crate::shard::uring::Ring::probe(entries) {
            Ok(r) => held.push(r),
            Err(e) => {
                return Err(UringError {
                    errno: e.raw_os_error(),
                    message: e.to_string(),
                    ring: i + 1,
                });
            }
        }
    }
    Ok(())
}

fn online_cpus() -> Read<usize> {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        return Err("sysconf(_SC_NPROCESSORS_ONLN) failed".into());
    }
    Ok(n as usize)
}

/// CPUs in this process's affinity mask, which is what `serve` pins its shards to.
fn allowed_cpus() -> Read<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!(
                "sched_getaffinity failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(libc::CPU_COUNT(&set) as usize)
    }
}

/// cgroup v2 `cpu.max` (`"200000 100000"` is 2 CPUs, `"max 100000"` no limit).
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota -1 is no limit).
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// The cgroup v2 path (`0::/path`) and the v1 `cpu` controller's path from `/proc/self/cgroup`.
pub fn cgroup_paths(text: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "cpu") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// The CPU limit of this process's cgroup, if any can be read; absent files mean no limit known.
fn cpu_quota(paths: &Paths) -> Option<f64> {
    let cg = std::fs::read_to_string(paths.proc.join("self/cgroup")).unwrap_or_default();
    let (v2, v1) = cgroup_paths(&cg);
    let root = paths.sys.join("fs/cgroup");
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    if let Some(p) = v2 {
        for dir in [root.join(rel(&p)), root.clone()] {
            if let Ok(s) = std::fs::read_to_string(dir.join("cpu.max")) {
                return parse_cpu_max(&s);
            }
        }
    }
    if let Some(p) = v1 {
        for mount in ["cpu", "cpu,cpuacct"] {
            for dir in [root.join(mount).join(rel(&p)), root.join(mount)] {
                if let (Ok(q), Ok(per)) = (
                    std::fs::read_to_string(dir.join("cpu.cfs_quota_us")),
                    std::fs::read_to_string(dir.join("cpu.cfs_period_us")),
                ) {
                    return parse_cfs(&q, &per);
                }
            }
        }
    }
    None
}

/// RocksDB table files in the data directory: each open one costs a descriptor (the store keeps up
/// to `store::MAX_OPEN_FILES` of them open).
pub fn count_table_files(data_dir: &Path) -> Read<u64> {
    match std::fs::read_dir(data_dir) {
        Ok(entries) => {
            let mut n = 0;
            for e in entries {
                let e = e.map_err(|e| format!("could not list {}: {e}", data_dir.display()))?;
                if e.file_name().to_string_lossy().ends_with(".sst") {
                    n += 1;
                }
            }
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("could not list {}: {e}", data_dir.display())),
    }
}

/// The directory to measure in: the data directory, or its nearest existing ancestor if it does
/// not exist yet (`serve` creates it), with whether it was missing.
pub fn measure_dir(data_dir: &Path) -> Read<(PathBuf, bool)> {
    match std::fs::metadata(data_dir) {
        Ok(m) if m.is_dir() => return Ok((data_dir.to_path_buf(), false)),
        Ok(_) => return Err(format!("{} is not a directory", data_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("could not stat {}: {e}", data_dir.display())),
    }
    for a in data_dir.ancestors().skip(1) {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.is_dir() {
            return Ok((a.to_path_buf(), true));
        }
    }
    Err(format!(
        "neither {} nor any parent of it exists",
        data_dir.display()
    ))
}

/// Removes the probe file however the measurement ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Appends `block` bytes and fdatasyncs, `samples` times (after one untimed warm-up), in the data
/// directory: what a WAL group commit costs on that filesystem. The file is removed afterwards.
pub fn measure_fsync(data_dir: &Path, samples: usize, block: usize) -> Read<FsyncReading> {
    let (dir, data_dir_missing) = measure_dir(data_dir)?;
    let path = dir.join(format!(".fleetgate-doctor-{}.tmp", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("could not create {}: {e}", path.display()))?;
    let _cleanup = RemoveOnDrop(path.clone());
    let buf = vec![0x5a_u8; block];
    let mut out = Vec::with_capacity(samples);
    for i in 0..=samples {
        let t = Instant::now();
        f.write_all(&buf)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("write + fdatasync of {} failed: {e}", path.display()))?;
        if i > 0 {
            out.push(t.elapsed().as_nanos() as u64);
        }
    }
    Ok(FsyncReading {
        fs_type: fs_type(&dir),
        dir: std::fs::canonicalize(&dir).unwrap_or(dir),
        data_dir_missing,
        block,
        samples_ns: out,
    })
}

/// The filesystem type of `dir` by its statfs magic number.
fn fs_type(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes one struct into `st`; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(fs_name(st.f_type as u64 & 0xffff_ffff))
}

/// The statfs magic numbers are the kernel's (`linux/magic.h`); libc names only some of them (not
/// zfs, ramfs, 9p or smb2), so they are listed here as the kernel defines them.
pub fn fs_name(magic: u64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x8584_58F6 => "ramfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        0xFF53_4D42 | 0xFE53_4D42 => "cifs/smb".into(),
        m => format!("unknown (magic 0x{m:x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unique empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "fleetgate-doctor-unit-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn doctor_sysctl_reads_from_the_given_proc_and_reports_missing_files() {
        let t = TempDir::new("sysctl");
        let paths = Paths {
            proc: t.0.clone(),
            sys: t.0.join("sys-none"),
        };
        std::fs::create_dir_all(t.0.join("sys/net/core")).unwrap();
        std::fs::write(t.0.join("sys/net/core/somaxconn"), "4096\n").unwrap();
        std::fs::create_dir_all(t.0.join("sys/net/ipv4")).unwrap();
        std::fs::write(t.0.join("sys/net/ipv4/tcp_syncookies"), "yes\n").unwrap();
        assert_eq!(sysctl_u64(&paths, "net.core.somaxconn"), Ok(4096));
        // Errors name what could not be read: the file, or the value that is not a number.
        let missing = sysctl_u64(&paths, "fs.nr_open").unwrap_err();
        assert!(missing.contains("sys/fs/nr_open"), "{missing}");
        let garbled = sysctl_u64(&paths, "net.ipv4.tcp_syncookies").unwrap_err();
        assert!(garbled.contains("\"yes\""), "{garbled}");
        // No cgroup files at all: no quota, and no panic.
        assert_eq!(cpu_quota(&paths), None);
    }

    #[test]
    fn doctor_cpu_quota_from_cgroup_v2_and_v1_trees() {
        let t = TempDir::new("cgroup");
        let paths = Paths {
            proc: t.0.join("proc"),
            sys: t.0.join("sys"),
        };
        std::fs::create_dir_all(t.0.join("proc/self")).unwrap();
        std::fs::write(t.0.join("proc/self/cgroup"), "0::/svc/fg\n").unwrap();
        std::fs::create_dir_all(t.0.join("sys/fs/cgroup/svc/fg")).unwrap();
        std::fs::write(t.0.join("sys/fs/cgroup/svc/fg/cpu.max"), "150000 100000\n").unwrap();
        assert_eq!(cpu_quota(&paths), Some(1.5));

        std::fs::write(t.0.join("proc/self/cgroup"), "3:cpu,cpuacct:/box\n0::/\n").unwrap();
        std::fs::remove_dir_all(t.0.join("sys/fs/cgroup/svc")).unwrap();
        std::fs::create_dir_all(t.0.join("sys/fs/cgroup/cpu,cpuacct/box")).unwrap();
        std::fs::write(
            t.0.join("sys/fs/cgroup/cpu,cpuacct/box/cpu.cfs_quota_us"),
            "300000",
        )
        .unwrap();
        std::fs::write(
            t.0.join("sys/fs/cgroup/cpu,cpuacct/box/cpu.cfs_period_us"),
            "100000",
        )
        .unwrap();
        assert_eq!(cpu_quota(&paths), Some(3.0));
    }

    #[test]
    fn doctor_parsers() {
        assert_eq!(parse_pair("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_pair("32768"), None);
        assert_eq!(parse_pair("1 2 3"), None);
        assert_eq!(parse_pair("a b"), None);
        assert_eq!(parse_port_list("\n"), Some(vec![]));
        assert_eq!(
            parse_port_list("3000,8000-8010\n"),
            Some(vec![(3000, 3000), (8000, 8010)])
        );
        assert_eq!(parse_port_list("30x0"), None);
        assert_eq!(
            status_field("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n", "Seccomp"),
            Some(2)
        );
        assert_eq!(status_field("Name:\tx\n", "Seccomp"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(
            cgroup_paths("9:name=systemd:/\n4:memory:/m\n1:cpu:/c\n0::/v2\n"),
            (Some("/v2".into()), Some("/c".into()))
        );
        assert_eq!(cgroup_paths("garbage"), (None, None));
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_name(0x1234), "unknown (magic 0x1234)");
    }

    #[test]
    fn doctor_fsync_measures_and_cleans_up() {
        let t = TempDir::new("fsync");
        let r = measure_fsync(&t.0, 5, 512).expect("fsync in a temp dir");
        assert_eq!(r.samples_ns.len(), 5);
        assert_eq!(r.dir, std::fs::canonicalize(&t.0).unwrap());
        assert!(!r.data_dir_missing);
        assert_eq!(r.block, 512);
        let left: Vec<_> = std::fs::read_dir(&t.0).unwrap().collect();
        assert!(left.is_empty(), "probe file left behind: {left:?}");

        // A data dir that does not exist yet: measured in its nearest existing parent.
        let r = measure_fsync(&t.0.join("a/b"), 2, 512).expect("fsync in the parent");
        assert_eq!(r.dir, std::fs::canonicalize(&t.0).unwrap());
        assert!(r.data_dir_missing);
        assert!(
            !t.0.join("a").exists(),
            "the doctor must not create the data dir"
        );

        // A file where the data dir should be: an error naming it, not a panic, and no probe file.
        let file = t.0.join("file");
        std::fs::write(&file, "x").unwrap();
        let e = measure_fsync(&file, 2, 512).unwrap_err();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 1);
    }

    #[test]
    fn doctor_counts_only_table_files() {
        let t = TempDir::new("sst");
        assert_eq!(count_table_files(&t.0.join("missing")), Ok(0));
        for f in ["000012.sst", "000013.sst", "000004.log", "MANIFEST-000005"] {
            std::fs::write(t.0.join(f), "").unwrap();
        }
        assert_eq!(count_table_files(&t.0), Ok(2));
    }

    #[test]
    fn doctor_uring_probe_reports_an_errno_not_a_panic() {
        // Zero entries is refused by the kernel (EINVAL); where io_uring is blocked or absent the
        // first ring already fails. Either way the answer is an errno on ring 1.
        let e = probe_uring(1, 0).unwrap_err();
        assert_eq!(e.ring, 1);
        assert!(e.errno.is_some(), "{e:?}");
        assert!(probe_uring(0, RING_ENTRIES).is_ok());
    }
}
