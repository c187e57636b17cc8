//! What `tuning/` says, read from its files when the doctor is built: the values its sysctl file
//! and systemd unit set, which the doctor's commands recommend, and its README's recommendations,
//! which the doctor quotes. The doctor keeps no copy of either, so it cannot come to recommend
//! something other than what `tuning/` installs and explains.

const README: &str = include_str!("../../tuning/README.md");
const SYSCTLS: &str = include_str!("../../tuning/99-fleetgate.conf");
const UNIT: &str = include_str!("../../tuning/fleetgate.service");

// Each value is read at compile time: a key missing from its file fails the build.
pub const SOMAXCONN: u64 = number(setting(SYSCTLS, "net.core.somaxconn"), 0);
pub const SYN_BACKLOG: u64 = number(setting(SYSCTLS, "net.ipv4.tcp_max_syn_backlog"), 0);
pub const SYNCOOKIES: u64 = number(setting(SYSCTLS, "net.ipv4.tcp_syncookies"), 0);
/// `net.ipv4.ip_local_port_range`, for load clients on the same box.
pub const PORT_RANGE: (u64, u64) = (number(PORT_RANGE_TEXT, 0), number(PORT_RANGE_TEXT, 1));
const PORT_RANGE_TEXT: &str = setting(SYSCTLS, "net.ipv4.ip_local_port_range");
pub const NR_OPEN: u64 = number(setting(SYSCTLS, "fs.nr_open"), 0);
/// Commented out in the file: applied only where the doctor flags it.
pub const FILE_MAX: u64 = number(setting(SYSCTLS, "fs.file-max"), 0);
/// Commented out in the file: needed only where a distribution disabled io_uring.
pub const IO_URING_DISABLED: u64 = number(setting(SYSCTLS, "kernel.io_uring_disabled"), 0);
/// The unit's `LimitNOFILE=` (its limits.d file sets the same for login sessions).
pub const NOFILE: u64 = number(setting(UNIT, "LimitNOFILE"), 0);
/// The unit's `LimitMEMLOCK=` as written there, and in KiB (what `ulimit -l` takes).
pub const MEMLOCK: &str = setting(UNIT, "LimitMEMLOCK");
pub const MEMLOCK_KIB: u64 = kib(MEMLOCK);

/// The value of the first line `key = value` (or `key=value`) of `file`, also when the line is
/// commented out with a leading `#`: a setting `tuning/` suggests but does not apply by default.
const fn setting(file: &'static str, key: &str) -> &'static str {
    let f = file.as_bytes();
    let k = key.as_bytes();
    let mut line = 0;
    while line < f.len() {
        let mut i = line;
        if f[i] == b'#' {
            i += 1;
        }
        if starts_with_at(f, i, k) {
            let mut j = skip_spaces(f, i + k.len());
            if j < f.len() && f[j] == b'=' {
                j = skip_spaces(f, j + 1);
                let mut end = j;
                while end < f.len() && f[end] != b'\n' {
                    end += 1;
                }
                while end > j && f[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                let (_, rest) = f.split_at(j);
                let (value, _) = rest.split_at(end - j);
                return match core::str::from_utf8(value) {
                    Ok(v) => v,
                    Err(_) => panic!("a tuning/ setting is not UTF-8"),
                };
            }
        }
        while line < f.len() && f[line] != b'\n' {
            line += 1;
        }
        line += 1;
    }
    panic!("tuning/ does not set a key the doctor reads")
}

const fn starts_with_at(f: &[u8], at: usize, k: &[u8]) -> bool {
    if at + k.len() > f.len() {
        return false;
    }
    let mut i = 0;
    while i < k.len() {
        if f[at + i] != k[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn skip_spaces(f: &[u8], mut i: usize) -> usize {
    while i < f.len() && (f[i] == b' ' || f[i] == b'\t') {
        i += 1;
    }
    i
}

/// The `nth` (from 0) whitespace-separated number of `s`, and the byte after its digits.
const fn digits(s: &str, nth: usize) -> (u64, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    loop {
        i = skip_spaces(b, i);
        if i >= b.len() || !b[i].is_ascii_digit() {
            panic!("a tuning/ setting the doctor reads is not a number");
        }
        let mut v: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            v = v * 10 + (b[i] - b'0') as u64;
            i += 1;
        }
        if n == nth {
            return (v, i);
        }
        n += 1;
    }
}

/// The `nth` (from 0) whitespace-separated number of `s`, which must be digits only.
const fn number(s: &str, nth: usize) -> u64 {
    let (v, end) = digits(s, nth);
    let b = s.as_bytes();
    if end < b.len() && !b[end].is_ascii_whitespace() {
        panic!("a tuning/ setting the doctor reads is not a plain number");
    }
    v
}

/// A systemd size (`64M`: binary suffixes K, M, G) in KiB.
const fn kib(s: &str) -> u64 {
    let (v, end) = digits(s, 0);
    let b = s.as_bytes();
    if end + 1 != b.len() {
        panic!("a tuning/ size the doctor reads is not a number and one of K, M, G");
    }
    match b[end] {
        b'K' => v,
        b'M' => v << 10,
        b'G' => v << 20,
        _ => panic!("a tuning/ size the doctor reads is not a number and one of K, M, G"),
    }
}

/// What `tuning/README.md` recommends for `check`, with the section that says why: the section's
/// `**Recommended:**` bullet, or this check's line in it where it has one per check.
pub fn recommendation(check: &str) -> String {
    match advice(README, check) {
        Some((title, text)) => format!("{text}\nwhy: tuning/README.md § {title}"),
        // Unreachable for the doctor's own checks (a unit test finds advice for each of them).
        None => "see tuning/README.md".to_string(),
    }
}

/// The title of the section whose heading names `check` (`### Title (doctor: `check`, …)`) and its
/// recommendation for it, each bullet's wrapped lines joined.
fn advice<'a>(readme: &'a str, check: &str) -> Option<(&'a str, String)> {
    let tag = format!("`{check}`");
    let mut lines = readme.lines();
    let title = loop {
        let heading = lines.next()?.strip_prefix("### ");
        if let Some((title, checks)) = heading.and_then(|h| h.split_once(" (doctor: "))
            && checks.contains(&tag)
        {
            break title;
        }
    };
    // The bullet and its sub-bullets, each as one line of text.
    let mut items: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with('#') {
            break;
        }
        if let Some(rest) = line.strip_prefix("* **Recommended:**") {
            items.push(rest.trim().to_string());
        } else if items.is_empty() {
            continue;
        } else if line.trim().is_empty() || line.starts_with("* ") {
            break;
        } else if let Some(sub) = line.strip_prefix("  * ") {
            items.push(sub.trim().to_string());
        } else if let Some(last) = items.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    let (main, per_check) = items.split_first()?;
    if per_check.is_empty() {
        return Some((title, main.clone()));
    }
    let own = format!("{tag}:");
    per_check
        .iter()
        .find_map(|item| item.strip_prefix(&own))
        .map(|text| (title, text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_reads_tuning_settings_plain_commented_and_sized() {
        const FILE: &str =
            "# a comment naming a.b = 9\na.bc = 7\na.b = 10000\t65535 \n#c.d=0\nE=64M\n";
        assert_eq!(setting(FILE, "a.b"), "10000\t65535");
        assert_eq!(number(setting(FILE, "a.b"), 1), 65_535);
        // A key that is a prefix of another is not confused with it.
        assert_eq!(setting(FILE, "a.bc"), "7");
        // A commented-out setting is what tuning/ suggests where the doctor asks for it.
        assert_eq!(setting(FILE, "c.d"), "0");
        assert_eq!(kib(setting(FILE, "E")), 65_536);
        assert_eq!(kib("2G"), 2 << 20);
    }

    #[test]
    #[should_panic]
    fn doctor_tuning_setting_absent_is_refused() {
        setting("a = 1\n", "b");
    }

    #[test]
    #[should_panic]
    fn doctor_tuning_number_with_a_unit_is_refused() {
        number("64M", 0);
    }

    const README_FIXTURE: &str = "\
### Other (doctor: `other`)

* **Recommended:** not this one.

### Disk (doctor: `fsync`)

* **What:** how long.
* **Recommended:** p50 ≤ 2 ms,
  on local disks.
* **Why:** acks wait.

### Files (doctor: `nofile`, `fs.nr_open`)

* **Recommended:**
  * `nofile`: at least
    65536.
  * `fs.nr_open`: the default.

### Unchecked

* **Recommended:** nothing.
";

    #[test]
    fn doctor_quotes_the_recommended_bullet_of_the_checks_section() {
        assert_eq!(
            advice(README_FIXTURE, "fsync"),
            Some(("Disk", "p50 ≤ 2 ms, on local disks.".to_string()))
        );
        assert_eq!(
            advice(README_FIXTURE, "nofile"),
            Some(("Files", "at least 65536.".to_string()))
        );
        assert_eq!(
            advice(README_FIXTURE, "fs.nr_open"),
            Some(("Files", "the default.".to_string()))
        );
        assert_eq!(advice(README_FIXTURE, "cpus"), None);
        assert_eq!(advice(README_FIXTURE, "fs"), None);
    }
}
