//! Builds the firmware in `firmware-sim/mcu` and runs it under QEMU, for the tests and for
//! people: Cortex-M4F on `mps2-an386`, Cortex-M33 on `mps2-an505`, Armv6-M (the Cortex-M0+'s
//! instruction set) on `microbit` ([`Board`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The firmware crate's directory.
pub fn mcu_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcu")
}

/// A board QEMU emulates and the firmware target for its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Arm MPS2 AN386: Cortex-M4 with FPU (`thumbv7em-none-eabihf`, `memory-an386.x`).
    An386,
    /// Arm MPS2 AN505: Cortex-M33 with FPU, Secure state (`thumbv8m.main-none-eabihf`,
    /// `memory-an505.x`).
    An505,
    /// BBC micro:bit: nRF51 Cortex-M0, Armv6-M as the Cortex-M0+ (`thumbv6m-none-eabi`, soft
    /// float, `memory-microbit.x`: 256 KiB flash, 16 KiB RAM).
    Microbit,
}

impl Board {
    /// The Rust target of its core.
    pub fn target(self) -> &'static str {
        match self {
            Board::An386 => "thumbv7em-none-eabihf",
            Board::An505 => "thumbv8m.main-none-eabihf",
            Board::Microbit => "thumbv6m-none-eabi",
        }
    }

    /// QEMU's machine and CPU names, and the time limit (soft float is slow to emulate).
    fn qemu(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Board::An386 => ("mps2-an386", "cortex-m4", "120"),
            Board::An505 => ("mps2-an505", "cortex-m33", "120"),
            Board::Microbit => ("microbit", "cortex-m0", "300"),
        }
    }
}

/// Builds the Cortex-M4F firmware (see [`build_for`]).
pub fn build(target_dir: &Path, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    build_for(Board::An386, target_dir, env)
}

/// Runs the Cortex-M4F firmware (see [`run_on`]).
pub fn run_qemu(elf: &Path) -> Result<Output, String> {
    run_on(Board::An386, elf)
}

/// Builds the firmware for `board` in release mode into `target_dir` with extra environment
/// `env`; returns the ELF path or cargo's output on failure.
pub fn build_for(board: Board, target_dir: &Path, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    // Made here: cargo sets up a missing target dir through a temporary sibling, which fails
    // when parallel tests race to create their common parent (a fresh clone has no mcu/target).
    std::fs::create_dir_all(target_dir).map_err(|e| format!("{}: cannot create: {e}", target_dir.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(mcu_dir())
        .args(["build", "--release", "--target", board.target(), "--target-dir"])
        .arg(target_dir)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(target_dir.join(board.target()).join("release/firmware-mcu"))
}

/// Runs `elf` under QEMU on `board` (semihosting, `-icount shift=0` so the firmware's
/// instruction count is deterministic) with a time limit.
pub fn run_on(board: Board, elf: &Path) -> Result<Output, String> {
    let (machine, cpu, limit) = board.qemu();
    Command::new("timeout")
        .args([limit, "qemu-system-arm", "-M", machine, "-cpu", cpu, "-icount", "shift=0", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run qemu-system-arm (Debian package qemu-system-arm): {e}"))
}
