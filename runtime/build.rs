//! Sets `arm_dsp` on targets that always have the Arm DSP instructions (`SXTB16`, `SMLAD`):
//! Cortex-M4/M7 (`thumbv7em`) and Armv7-A gateways. Rust's `target_feature = "dsp"` is not
//! stable, so the target name decides; Cortex-M33 (`thumbv8m.main`) is left out because its DSP
//! extension is optional.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(arm_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") || target.starts_with("armv7") {
        println!("cargo::rustc-cfg=arm_dsp");
    }
}
