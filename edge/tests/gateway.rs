//! The `edge` gateway binary cross-built for aarch64 Linux (native and tract engines) and armv7
//! (native), run
//! under qemu-user gives the host build's output on the shipped sample fleet: byte-identical for
//! the native engine, identical cluster IDs for tract.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assign(exe: &[&str], engine: &str) -> Vec<Vec<String>> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new(exe[0])
        .args(&exe[1..])
        .args(["assign", "--quiet", "--engine", engine, "--model"])
        .arg(root().join("models/ecg5000"))
        .arg("--input")
        .arg(root().join("data/fleet/sample.csv"))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("edge runs (aarch64 needs Debian qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)");
    assert!(o.status.success(), "{exe:?} --engine {engine} failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out.path()).unwrap().lines().map(|l| l.split(',').map(String::from).collect()).collect()
}

/// Cross-builds `edge` for `target` (with the tract engine when `with_tract`) and returns the
/// binary. A target dir of its own: the outer `cargo test` holds the workspace one.
fn cross_build(target: &str, with_tract: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root().join("target/gateway");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root()).args(["build", "--release", "-p", "edge", "--target", target, "--target-dir"]).arg(&target_dir);
    if with_tract {
        cmd.args(["--features", "tract"]);
    }
    let o = cmd.output().expect("cargo runs");
    assert!(o.status.success(), "{target} build failed:\n{}", String::from_utf8_lossy(&o.stderr));
    target_dir.join(target).join("release/edge")
}

/// aarch64 with both engines (the host binary needs the `tract` feature too, as scripts/test.sh
/// builds it).
#[cfg(feature = "tract")]
#[test]
fn aarch64_edge_matches_the_host() {
    let arm = cross_build("aarch64-unknown-linux-gnu", true);
    let qemu = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", arm.to_str().unwrap()];
    let host = [env!("CARGO_BIN_EXE_edge")];

    let (h, a) = (assign(&host, "native"), assign(&qemu, "native"));
    assert_eq!(h.len(), 73);
    assert_eq!(h, a, "native engine: aarch64 output differs from the host's");

    let (h, a) = (assign(&host, "tract"), assign(&qemu, "tract"));
    assert_eq!(h.len(), a.len());
    for (x, y) in h.iter().zip(&a).skip(1) {
        assert_eq!(x[..4], y[..4], "tract engine: host {x:?} vs aarch64 {y:?}");
        let (dx, dy): (f32, f32) = (x[4].parse().unwrap(), y[4].parse().unwrap());
        assert!((dx - dy).abs() < 1e-5, "tract distances {dx} vs {dy}");
    }
}

/// armv7 (32-bit ARM gateways), native engine: byte-identical to the host.
#[test]
fn armv7_native_edge_is_identical_to_the_host() {
    let arm = cross_build("armv7-unknown-linux-gnueabihf", false);
    let qemu = ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf", arm.to_str().unwrap()];
    let host = [env!("CARGO_BIN_EXE_edge")];
    assert_eq!(assign(&host, "native"), assign(&qemu, "native"), "armv7 output differs from the host's");
}
