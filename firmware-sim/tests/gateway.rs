//! The `edge` gateway binary cross-built for aarch64 Linux and run under qemu-user gives output
//! byte-identical to the host build on the shipped sample fleet.

use std::path::Path;
use std::process::Command;

#[test]
fn aarch64_edge_output_is_identical_to_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target/gateway");
    let mut outputs = Vec::new();
    for target in [None, Some("aarch64-unknown-linux-gnu")] {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root).args(["build", "--release", "-p", "edge", "--no-default-features", "--target-dir"]).arg(&target_dir);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        let o = cmd.output().expect("cargo runs");
        assert!(o.status.success(), "build for {target:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        let exe = match target {
            Some(t) => target_dir.join(t).join("release/edge"),
            None => target_dir.join("release/edge"),
        };
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut run = match target {
            Some(_) => {
                let mut c = Command::new("qemu-aarch64");
                c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let o = run
            .args(["assign", "--quiet", "--model"])
            .arg(root.join("models/ecg5000"))
            .arg("--input")
            .arg(root.join("data/fleet/sample.csv"))
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("edge runs (aarch64 needs Debian qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)");
        assert!(o.status.success(), "edge for {target:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        outputs.push(std::fs::read_to_string(out.path()).unwrap());
    }
    assert_eq!(outputs[0].lines().count(), 73);
    assert_eq!(outputs[0], outputs[1], "aarch64 output differs from the host's");
}
