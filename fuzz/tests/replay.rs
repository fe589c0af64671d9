//! Every committed seed and every crasher the fuzzers ever found (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) goes through its target body again, on stable Rust, in CI.

use std::path::PathBuf;

#[test]
fn seeds_and_regressions_still_pass() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut ran = std::collections::BTreeMap::new();
    for kind in ["seeds", "regressions"] {
        for target in fuzz::TARGETS {
            let dir = root.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                // A panic here names the file through the test's output.
                eprintln!("{}", path.display());
                assert!(fuzz::run(target, &data));
                *ran.entry(target).or_insert(0) += 1;
            }
        }
    }
    for target in fuzz::TARGETS {
        assert!(ran.get(target).copied().unwrap_or(0) > 0, "no seed for target {target}");
    }
}

#[test]
fn unknown_target_is_refused() {
    assert!(!fuzz::run("no_such_target", b""));
}
