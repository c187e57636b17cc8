//! Backups of a data directory and their restore.
//!
//! A backup is a directory: `store/`, a RocksDB checkpoint of the store (every write committed
//! before it began, consistent across column families); the data directory's own files beside
//! the store (`data_dir::SIDE_FILES`: the generated admin token, the initial dashboard password);
//! and `fleetgate-backup.json`, written last, so a directory without it is no complete backup. It
//! is taken from the running server's open store (`POST /api/backup`, on a thread of its own) or
//! from a stopped server's (`fleetgate backup --data-dir`). A restore copies it into a data
//! directory no server runs on, and checks the copy opens as a fleetgate store before it takes
//! the place of anything there.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::data_dir::{self, DATA_DIR_MODE, SIDE_FILES};
use crate::store::{self, SCHEMA_VERSION, Store, StoreError};

/// The backup's description, written last.
pub const MANIFEST: &str = "fleetgate-backup.json";
/// The checkpoint's directory inside a backup.
pub const STORE_DIR: &str = "store";
/// Where a restore assembles the copy inside the data directory before it takes its place.
const STAGING: &str = ".fleetgate-restore";
/// The layout described here; a restore refuses others.
const FORMAT: u32 = 1;

/// `fleetgate-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// When the checkpoint was taken (RFC 3339).
    pub created_at: String,
    pub schema_version: u32,
    /// The data directory's files copied beside the store: those of `SIDE_FILES` that existed.
    pub side_files: Vec<String>,
    /// The size of every file of the backup but this one.
    pub bytes: u64,
}

#[derive(Debug)]
pub enum Error {
    /// The target cannot be used as given.
    BadPath(String),
    /// The target exists and is not an empty directory.
    NotEmpty(PathBuf),
    /// A running server holds the data directory.
    InUse {
        dir: PathBuf,
        pid: u32,
    },
    /// What should be a backup or a store is not one.
    Invalid(String),
    /// A file operation failed: what was being done, and why.
    Io(String, io::Error),
    Store(StoreError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::BadPath(m) | Error::Invalid(m) => f.write_str(m),
            Error::NotEmpty(p) => write!(
                f,
                "{} exists and is not an empty directory; give a new or empty one",
                p.display()
            ),
            Error::InUse { dir, pid } => write!(
                f,
                "the data directory {} is in use by a running server (pid {pid}); back it up \
                 through the server (fleetgate backup --url …) or stop the server first",
                dir.display()
            ),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

fn io_err(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::Io(what(), e)
}

/// A finished backup.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Lets one backup run at a time, server-wide.
#[derive(Default)]
pub struct OneAtATime(Arc<AtomicBool>);

/// The right to run the backup; given back when dropped.
pub struct Running(Arc<AtomicBool>);

impl OneAtATime {
    /// `None` while another backup runs.
    pub fn begin(&self) -> Option<Running> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| Running(self.0.clone()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Backs up the open `store` of `data_dir` into `target`: an absolute path, new or an empty
/// directory, outside the data directory. Blocks for as long as the checkpoint takes (flushing
/// the memtables, linking or copying every table file). On failure, what it wrote is removed.
pub fn write(store: &Store, data_dir: &Path, target: &Path) -> Result<Written, Error> {
    let created = prepare_target(target, data_dir)?;
    write_into(store, data_dir, target).inspect_err(|_| {
        let cleared = if created {
            std::fs::remove_dir_all(target)
        } else {
            clear_dir(target, None)
        };
        if let Err(e) = cleared {
            tracing::warn!(target = %target.display(), error = %e, "could not remove a failed backup");
        }
    })
}

/// Backs up the store of a stopped server: refuses while a server holds `data_dir`, and holds
/// it (RocksDB's lock) while the checkpoint is taken, so no server starts on it meanwhile.
pub fn offline(data_dir: &Path, target: &Path) -> Result<Written, Error> {
    refuse_in_use(data_dir)?;
    let store = Store::open_for_backup(data_dir).map_err(|e| match e {
        StoreError::Schema(m) => Error::Invalid(m),
        e => Error::Store(e),
    })?;
    write(&store, data_dir, target)
}

/// Whether the target may take a backup; creates it (and missing parents, mode 0700) if it does
/// not exist. True if it was created.
fn prepare_target(target: &Path, data_dir: &Path) -> Result<bool, Error> {
    if !target.is_absolute() {
        return Err(Error::BadPath(format!(
            "{}: give an absolute path",
            target.display()
        )));
    }
    let (resolved, data) = (resolve(target), resolve(data_dir));
    if let (Ok(t), Ok(d)) = (&resolved, &data)
        && (t.starts_with(d) || d.starts_with(t))
    {
        return Err(Error::BadPath(format!(
            "{} and the data directory {} lie inside one another; a backup belongs elsewhere \
             (best on another disk)",
            target.display(),
            data_dir.display()
        )));
    }
    match std::fs::metadata(target) {
        Ok(m) if !m.is_dir() => Err(Error::NotEmpty(target.to_path_buf())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(target)
                .map_err(io_err(|| format!("reading {}", target.display())))?;
            match entries.next() {
                None => Ok(false),
                Some(_) => Err(Error::NotEmpty(target.to_path_buf())),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DATA_DIR_MODE)
                .create(target)
                .map_err(io_err(|| format!("creating {}", target.display())))?;
            Ok(true)
        }
        Err(e) => Err(Error::Io(format!("reading {}", target.display()), e)),
    }
}

/// `path` with symbolic links and `..` resolved as far as it exists, the rest appended: where it
/// is (or would be) on disk.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        match std::fs::canonicalize(at) {
            Ok(mut p) => {
                p.extend(rest.iter().rev());
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (at.parent(), at.file_name()) else {
                    return Err(e);
                };
                rest.push(name.to_owned());
                at = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_into(store: &Store, data_dir: &Path, target: &Path) -> Result<Written, Error> {
    let created_at = crate::time::rfc3339_ms(crate::time::now_ms());
    let store_dir = target.join(STORE_DIR);
    store.checkpoint(&store_dir).map_err(Error::Store)?;
    let mut side_files = Vec::new();
    for name in SIDE_FILES {
        match std::fs::read(data_dir.join(name)) {
            Ok(bytes) => {
                data_dir::write_atomically(&target.join(name), &bytes, 0o600)
                    .map_err(io_err(|| format!("writing {name} into the backup")))?;
                side_files.push(name.to_string());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io(format!("reading {name}"), e)),
        }
    }
    data_dir::sync_dir(&store_dir).map_err(io_err(|| "syncing the checkpoint".to_string()))?;
    let bytes = dir_bytes(target).map_err(io_err(|| "measuring the backup".to_string()))?;
    let manifest = Manifest {
        format: FORMAT,
        created_at,
        schema_version: SCHEMA_VERSION,
        side_files,
        bytes,
    };
    let json = simd_json::to_string(&manifest)
        .map_err(|e| Error::Invalid(format!("encoding the manifest: {e}")))?;
    data_dir::write_atomically(&target.join(MANIFEST), json.as_bytes(), 0o600)
        .map_err(io_err(|| format!("writing {MANIFEST}")))?;
    data_dir::sync_dir(target).map_err(io_err(|| "syncing the backup".to_string()))?;
    Ok(Written {
        path: target.to_path_buf(),
        bytes,
    })
}

/// The size of every file under `dir`.
fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Removes everything in `dir` but `keep`.
fn clear_dir(dir: &Path, keep: Option<&str>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if keep.is_some_and(|k| entry.file_name() == k) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn refuse_in_use(data_dir: &Path) -> Result<(), Error> {
    match data_dir::lock_holder(data_dir) {
        Ok(Some(pid)) => Err(Error::InUse {
            dir: data_dir.to_path_buf(),
            pid,
        }),
        Ok(None) => Ok(()),
        Err(e) => Err(Error::Io(
            format!("checking whether a server runs on {}", data_dir.display()),
            e,
        )),
    }
}

/// The manifest of the backup in `dir`, if it is one this build can restore.
pub fn read_manifest(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    let mut bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "{} is no complete fleetgate backup: it has no {MANIFEST}",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::Io(format!("reading {}", path.display()), e)),
    };
    let m: Manifest = simd_json::serde::from_slice(&mut bytes)
        .map_err(|e| Error::Invalid(format!("{}: unreadable ({e})", path.display())))?;
    if m.format != FORMAT {
        return Err(Error::Invalid(format!(
            "{}: backup format {} is not the one this build writes ({FORMAT})",
            path.display(),
            m.format
        )));
    }
    if m.schema_version > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "{}: made by a newer fleetgate (schema {}, this build knows {SCHEMA_VERSION})",
            path.display(),
            m.schema_version
        )));
    }
    if let Some(odd) = m
        .side_files
        .iter()
        .find(|f| !SIDE_FILES.contains(&f.as_str()))
    {
        return Err(Error::Invalid(format!(
            "{}: names a file fleetgate does not keep ({odd})",
            path.display()
        )));
    }
    Ok(m)
}

/// Restores the backup in `from` into `data_dir`, which must not be in use, and must be empty or
/// missing unless `force` (whose contents are then replaced). The copy is assembled inside the
/// data directory and opened as a store before anything there is removed, so a bad backup leaves
/// the data directory as it was.
pub fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<Manifest, Error> {
    let manifest = read_manifest(from)?;
    if let (Ok(f), Ok(d)) = (resolve(from), resolve(data_dir))
        && (f.starts_with(&d) || d.starts_with(&f))
    {
        return Err(Error::BadPath(format!(
            "the backup {} and the data directory {} lie inside one another",
            from.display(),
            data_dir.display()
        )));
    }
    refuse_in_use(data_dir)?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if !force && entries.next().is_some() {
                return Err(Error::NotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io(format!("reading {}", data_dir.display()), e)),
    }
    data_dir::private_data_dir(data_dir).map_err(Error::Invalid)?;
    let staging = data_dir.join(STAGING);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::Io(format!("removing {}", staging.display()), e));
        }
        _ => {}
    }
    std::fs::DirBuilder::new()
        .mode(DATA_DIR_MODE)
        .create(&staging)
        .map_err(io_err(|| format!("creating {}", staging.display())))?;
    if let Err(e) = stage(from, &manifest, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    clear_dir(data_dir, Some(STAGING))
        .map_err(io_err(|| format!("clearing {}", data_dir.display())))?;
    for entry in std::fs::read_dir(&staging).map_err(io_err(|| "reading the copy".to_string()))? {
        let entry = entry.map_err(io_err(|| "reading the copy".to_string()))?;
        std::fs::rename(entry.path(), data_dir.join(entry.file_name())).map_err(io_err(|| {
            format!("moving {:?} into place", entry.file_name())
        }))?;
    }
    std::fs::remove_dir(&staging).map_err(io_err(|| format!("removing {}", staging.display())))?;
    data_dir::sync_dir(data_dir).map_err(io_err(|| format!("syncing {}", data_dir.display())))?;
    Ok(manifest)
}

/// Copies the backup's store and side files into `staging` (files mode 0600, synced) and checks
/// that they open as a fleetgate store.
fn stage(from: &Path, manifest: &Manifest, staging: &Path) -> Result<(), Error> {
    let store_dir = from.join(STORE_DIR);
    let entries = std::fs::read_dir(&store_dir)
        .map_err(io_err(|| format!("reading {}", store_dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(|| format!("reading {}", store_dir.display())))?;
        if !entry
            .file_type()
            .map_err(io_err(|| format!("reading {}", store_dir.display())))?
            .is_file()
        {
            return Err(Error::Invalid(format!(
                "{}: a checkpoint holds only files",
                entry.path().display()
            )));
        }
        copy_private(&entry.path(), &staging.join(entry.file_name()))?;
    }
    for name in &manifest.side_files {
        copy_private(&from.join(name), &staging.join(name))?;
    }
    store::backup::inspect(staging).map_err(|e| match e {
        StoreError::Schema(m) => Error::Invalid(m),
        e => Error::Invalid(format!("the backup's store does not open: {e}")),
    })?;
    data_dir::sync_dir(staging).map_err(io_err(|| "syncing the copy".to_string()))
}

fn copy_private(from: &Path, to: &Path) -> Result<(), Error> {
    let what = || format!("copying {}", from.display());
    std::fs::copy(from, to).map_err(io_err(what))?;
    let f = std::fs::File::open(to).map_err(io_err(what))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(what))?;
    f.sync_all().map_err(io_err(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cf;
    use crate::store::temp::{Scratch, TempStore};

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    fn put(store: &Store, key: &[u8]) {
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(store.cf(Cf::Devices).expect("cf"), key, b"v");
        store.write(b).expect("write");
    }

    #[test]
    fn only_one_backup_runs_at_a_time() {
        let gate = OneAtATime::default();
        let first = gate.begin().expect("free");
        assert!(gate.begin().is_none());
        drop(first);
        assert!(gate.begin().is_some());
    }

    #[test]
    fn a_backup_restores_with_its_side_files_and_modes() {
        let t = TempStore::open("backup-src", true).expect("store");
        put(t.store(), b"before");
        let scratch = Scratch::new("roundtrip");
        let data = scratch.0.join("data");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::write(data.join(data_dir::ADMIN_TOKEN), "tok\n").expect("token");
        let target = scratch.0.join("b/1");
        let w = write(t.store(), &data, &target).expect("backup");
        put(t.store(), b"after");
        assert!(w.bytes > 0);
        assert_eq!(mode(&target), 0o700);
        assert_eq!(mode(&target.join(data_dir::ADMIN_TOKEN)), 0o600);
        let m = read_manifest(&target).expect("manifest");
        assert_eq!(m.side_files, [data_dir::ADMIN_TOKEN]);
        assert_eq!((m.bytes, m.schema_version), (w.bytes, SCHEMA_VERSION));

        let restored = scratch.0.join("restored");
        restore(&target, &restored, false).expect("restore");
        assert_eq!(mode(&restored), 0o700);
        assert_eq!(
            std::fs::read_to_string(restored.join(data_dir::ADMIN_TOKEN)).expect("token"),
            "tok\n"
        );
        assert!(!restored.join(STAGING).exists());
        let s = Store::open_for_backup(&restored).expect("opens");
        assert!(s.exists(Cf::Devices, b"before").expect("read"));
        assert!(!s.exists(Cf::Devices, b"after").expect("read"));
        drop(s);

        let again = restore(&target, &restored, false).expect_err("not empty");
        assert!(matches!(again, Error::NotEmpty(_)), "{again}");
        std::fs::write(restored.join("stray"), "x").expect("stray file");
        restore(&target, &restored, true).expect("forced");
        assert!(
            !restored.join("stray").exists(),
            "--force replaces the contents"
        );
    }

    #[test]
    fn bad_targets_are_refused_and_nothing_is_left_behind() {
        let t = TempStore::open("backup-bad", true).expect("store");
        let scratch = Scratch::new("bad");
        let data = scratch.0.join("data");
        std::fs::create_dir(&data).expect("data dir");
        let e = write(t.store(), &data, Path::new("rel/dir")).expect_err("relative");
        assert!(matches!(e, Error::BadPath(_)), "{e}");
        let e = write(t.store(), &data, &data.join("inside")).expect_err("inside");
        assert!(matches!(e, Error::BadPath(_)), "{e}");
        assert!(!data.join("inside").exists());
        let full = scratch.0.join("full");
        std::fs::create_dir(&full).expect("mkdir");
        std::fs::write(full.join("x"), "x").expect("file");
        let e = write(t.store(), &data, &full).expect_err("not empty");
        assert!(matches!(e, Error::NotEmpty(_)), "{e}");
        let e = write(t.store(), &data, &full.join("x")).expect_err("a file");
        assert!(matches!(e, Error::NotEmpty(_)), "{e}");
        let empty = scratch.0.join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        write(t.store(), &data, &empty).expect("an empty directory will do");
    }

    #[test]
    fn a_restore_refuses_what_is_no_complete_backup_and_keeps_the_data_dir() {
        let t = TempStore::open("backup-incomplete", true).expect("store");
        let scratch = Scratch::new("incomplete");
        let data = scratch.0.join("data");
        std::fs::create_dir(&data).expect("data dir");
        let target = scratch.0.join("b");
        write(t.store(), &data, &target).expect("backup");
        let existing = scratch.0.join("existing");
        std::fs::create_dir(&existing).expect("mkdir");
        std::fs::write(existing.join("keep"), "x").expect("file");

        std::fs::remove_file(target.join(STORE_DIR).join("CURRENT")).expect("break the store");
        let e = restore(&target, &existing, true).expect_err("a broken store");
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(
            existing.join("keep").exists(),
            "a failed restore removes nothing"
        );
        assert!(!existing.join(STAGING).exists());

        std::fs::remove_file(target.join(MANIFEST)).expect("unfinished");
        let e = restore(&target, &existing, true).expect_err("no manifest");
        assert!(
            e.to_string().contains("no complete fleetgate backup"),
            "{e}"
        );
        let e = restore(&scratch.0, &existing, true).expect_err("not a backup at all");
        assert!(matches!(e, Error::Invalid(_)), "{e}");
    }
}
