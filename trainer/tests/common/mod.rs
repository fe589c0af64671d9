//! Helpers shared by the tests that drive the `trainer` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `trainer` binary, with no fault injection inherited from the environment.
pub fn trainer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.env_remove("TRAINER_FAULT");
    c
}

/// Asserts that a run succeeded, showing its stderr when not.
pub fn ok(o: &Output) {
    assert!(o.status.success(), "trainer failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// `n` labelled series of 30 steps cycling through `classes` shapes (sine, ramp, bump), shifted
/// in phase by `shift`, written as a UCR file `shapes.tsv` in `dir`.
pub fn write_shapes(dir: &Path, n: usize, classes: usize, shift: f32) -> PathBuf {
    let mut s = String::new();
    for i in 0..n {
        let class = i % classes;
        let vals: Vec<String> = (0..30)
            .map(|t| {
                let x = t as f32 / 5.0 + (i / classes) as f32 * 0.05 + shift;
                let v = match class {
                    0 => x.sin(),
                    1 => (x % 2.0) - 1.0,
                    _ => (-(x - 3.0).powi(2)).exp() * 2.0 - 0.5,
                };
                format!("{v}")
            })
            .collect();
        s.push_str(&format!("{}\t{}\n", class + 1, vals.join("\t")));
    }
    let p = dir.join("shapes.tsv");
    std::fs::write(&p, s).unwrap();
    p
}

/// `trainer fit DATA --out OUT` with a tiny model (8 hidden, latent 3, 2 k-means restarts, quiet)
/// and `extra` flags.
pub fn tiny_fit_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let base = ["fit", data, "--out", out, "--hidden-size", "8", "--latent-length", "3", "--n-init", "2", "--quiet"];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}
