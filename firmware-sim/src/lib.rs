//! Builds the Cortex-M4F firmware in `firmware-sim/mcu` and runs it under QEMU
//! (`qemu-system-arm -M mps2-an386`), for the tests and for people.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The firmware crate's directory.
pub fn mcu_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcu")
}

/// Builds the firmware in release mode into `target_dir` with extra environment `env`; returns
/// the ELF path or cargo's output on failure.
pub fn build(target_dir: &Path, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(mcu_dir())
        .args(["build", "--release", "--target-dir"])
        .arg(target_dir)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(target_dir.join("thumbv7em-none-eabihf/release/firmware-mcu"))
}

/// Runs `elf` under QEMU (mps2-an386, Cortex-M4, semihosting, `-icount shift=0` so the
/// firmware's instruction count is deterministic) with a time limit.
pub fn run_qemu(elf: &Path) -> Result<Output, String> {
    Command::new("timeout")
        .args(["120", "qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4", "-icount", "shift=0", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run qemu-system-arm (Debian package qemu-system-arm): {e}"))
}
