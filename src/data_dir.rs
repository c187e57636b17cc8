//! The data directory: its permissions, the files fleetgate keeps in it beside the store, and
//! whether a running server holds it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The admin token, when it was generated rather than given in `FLEETGATE_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "admin-token";
/// The dashboard user `admin`'s first password, until it is changed.
pub const INITIAL_ADMIN_PASSWORD: &str = "initial-admin-password";
/// Every file fleetgate keeps in the data directory beside RocksDB's own: what a backup carries
/// besides the store.
pub const SIDE_FILES: [&str; 2] = [ADMIN_TOKEN, INITIAL_ADMIN_PASSWORD];

/// The data directory holds password and token hashes and every record: only its owner may enter.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Files this process creates get no group or other permissions. RocksDB creates its WAL, SST and
/// MANIFEST files with mode 0644 less the umask and takes no mode of its own, so the umask is the
/// one place to keep them private; it is set before the store opens, and no file this process
/// writes is meant for other users (`write_atomically` sets its mode explicitly).
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it has no failure mode.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory (and missing parents) with mode 0700, or restricts an existing one
/// to it, so files an earlier version left readable cannot be reached through it. A directory
/// that cannot be restricted (owned by another user) is logged and used as it is.
pub fn private_data_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)
        .map_err(|e| format!("creating the data directory {}: {e}", dir.display()))?;
    match restrict_dir(dir) {
        Ok(Some(was)) => tracing::warn!(
            dir = %dir.display(),
            was = format!("{was:o}"),
            "the data directory was open to other users; restricted it to mode 700"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "could not restrict the data directory to mode 700; other users may read it"
        ),
    }
    Ok(())
}

/// Sets `dir` to `DATA_DIR_MODE` if it grants anything to group or others; returns the
/// permission bits it had then.
fn restrict_dir(dir: &Path) -> std::io::Result<Option<u32>> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))?;
    Ok(Some(mode))
}

/// Writes `path` through a temporary file renamed over it, so a reader sees the old bytes or the
/// new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    // Exactly `mode`, whatever the umask (`restrict_umask`) or an older file left behind.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The process id of whoever holds RocksDB's lock on the store in `dir` (a running server), if
/// anyone does. RocksDB locks `<dir>/LOCK` with a POSIX record lock (`fcntl(F_SETLK)`), which
/// `F_GETLK` reports with its holder.
///
/// Only another process's lock shows, and POSIX drops all of a process's locks on a file when it
/// closes any descriptor of it: so this is for a process that has not opened the store, never
/// for the server.
pub fn lock_holder(dir: &Path) -> std::io::Result<Option<u32>> {
    let file = match std::fs::File::open(dir.join("LOCK")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: `flock` is plain data; F_GETLK only fills it in for the open descriptor.
    let lock = unsafe {
        let mut lock: libc::flock = std::mem::zeroed();
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        if libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lock
    };
    Ok((lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let n = crate::time::now_us();
        std::env::temp_dir().join(format!(
            "fleetgate-data-dir-{tag}-{}-{n}",
            std::process::id()
        ))
    }

    #[test]
    fn a_new_data_dir_is_created_private_with_its_parents() {
        let root = scratch("new");
        let dir = root.join("a/b/data");
        private_data_dir(&dir).expect("created");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            restrict_dir(&dir).expect("stat"),
            None,
            "nothing to restrict"
        );
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn an_open_data_dir_is_restricted_and_says_what_it_was() {
        let dir = scratch("open");
        std::fs::create_dir(&dir).expect("mkdir");
        for was in [0o755, 0o750, 0o701, 0o777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(was)).expect("chmod");
            assert_eq!(restrict_dir(&dir).expect("restrict"), Some(was), "{was:o}");
            assert_eq!(mode(&dir), 0o700);
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_data_dir(&dir).expect("existing dir");
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn written_files_get_exactly_their_mode() {
        let dir = scratch("files");
        std::fs::create_dir(&dir).expect("mkdir");
        // A temporary file left behind with the other mode: `mode` on open would not apply to it.
        for (m, left) in [(0o600, 0o644), (0o644, 0o600)] {
            let p = dir.join(format!("f{m:o}"));
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, b"old").expect("leftover");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(left)).expect("chmod");
            write_atomically(&p, b"x\n", m).expect("write");
            assert_eq!(mode(&p), m, "{m:o}");
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A lock held by a running server: `tests/backup.rs`.
    #[test]
    fn no_lock_file_or_an_unheld_one_is_no_holder() {
        let dir = scratch("lock");
        std::fs::create_dir(&dir).expect("mkdir");
        assert_eq!(lock_holder(&dir).expect("no LOCK file"), None);
        std::fs::write(dir.join("LOCK"), b"").expect("LOCK");
        assert_eq!(lock_holder(&dir).expect("unlocked"), None);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
