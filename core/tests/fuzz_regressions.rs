//! Replays every fuzz seed (`fuzz/seeds/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) through the same harness the fuzzer runs
//! (`fleetgate_core::fuzzing`), so a plain `cargo test` keeps them fixed. See `docs/fuzzing.md`.

use std::path::{Path, PathBuf};

use fleetgate_core::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs every file under `<fuzz>/<kind>/<target>/`; returns how many ran, and fails listing
/// every file that panicked.
fn replay(kind: &str) -> usize {
    let root = fuzz_dir().join(kind);
    let mut ran = 0;
    let mut failed = Vec::new();
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return 0;
    };
    for dir in dirs {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        let harness = fuzzing::harness(&target)
            .unwrap_or_else(|| panic!("{} names no fuzz target", dir.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| harness(&data)).is_err() {
                failed.push(file.display().to_string());
            }
            ran += 1;
        }
    }
    assert!(failed.is_empty(), "harness panicked on: {failed:#?}");
    ran
}

#[test]
fn seeds_pass_their_harness() {
    let ran = replay("seeds");
    // Every target has seeds.
    for (target, _) in fuzzing::TARGETS {
        let dir = fuzz_dir().join("seeds").join(target);
        assert!(
            std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
            "no seeds in {}",
            dir.display()
        );
    }
    assert!(ran > 0);
}

#[test]
fn past_crashes_stay_fixed() {
    replay("regressions");
}
