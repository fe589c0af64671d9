//! Crash safety and resumable training, through the real `trainer` binary: a run killed or
//! crashed at any point leaves the previous model whole and loadable; a diverging run stops and
//! keeps its last good checkpoint; `fit --resume` ends with the same weights as an uninterrupted
//! run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::{ok, tiny_fit_args, trainer, write_shapes};
use trainer::artifacts::load_model;
use trainer::checkpoint::{Checkpoint, CHECKPOINT};

/// Files that make up a trained model (the ones that must never be mixed across runs).
const MODEL_FILES: [&str; 5] = ["config.json", "model.safetensors", "centroids.json", "model.bundle", "encoder.onnx"];

fn fit_args(data: &Path, out: &Path, seed: &str, epochs: &str) -> Vec<String> {
    tiny_fit_args(data, out, &["--batch-size", "8", "--epochs", epochs, "--seed", seed])
}

fn run(args: &[String], fault: Option<&str>) -> Output {
    let mut c = trainer();
    c.args(args);
    if let Some(f) = fault {
        c.env("TRAINER_FAULT", f);
    }
    c.output().unwrap()
}

fn snapshot(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    MODEL_FILES.iter().map(|&f| (f, std::fs::read(dir.join(f)).unwrap_or_default())).collect()
}

fn staging_leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-"))
        .collect()
}

#[test]
fn diverging_run_stops_keeps_its_checkpoint_and_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_shapes(tmp.path(), 24, 2, 0.0);
    let (straight, interrupted) = (tmp.path().join("straight"), tmp.path().join("interrupted"));

    ok(&run(&fit_args(&data, &straight, "2", "5"), None));

    // An earlier model of another seed sits in the directory the interrupted run writes to.
    ok(&run(&fit_args(&data, &interrupted, "1", "2"), None));
    let before = snapshot(&interrupted);

    let o = run(&fit_args(&data, &interrupted, "2", "5"), Some("nan-loss-at-epoch=4"));
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("diverged") && e.contains("loss became NaN at epoch 4"), "{e}");
    assert!(e.contains("last good checkpoint (epoch 3)"), "{e}");
    assert_eq!(snapshot(&interrupted), before, "a failed run must not touch the previous model");
    let ck = Checkpoint::load(&interrupted, &Device::Cpu).unwrap();
    assert_eq!(ck.meta.state.epochs_done, 3);
    assert_eq!(ck.meta.run.params.seed, 2);
    load_model(&interrupted, &Device::Cpu).expect("previous model still loads");

    let o = run(
        &["fit".into(), data.to_str().unwrap().into(), "--resume".into(), interrupted.to_str().unwrap().into(), "--quiet".into()],
        None,
    );
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("after epoch 3 of 5"));
    let (a, b) = (snapshot(&straight), snapshot(&interrupted));
    for f in ["model.safetensors", "centroids.json", "model.bundle"] {
        assert!(a[f] == b[f], "{f} differs between the resumed and the uninterrupted run");
    }
    assert_eq!(Checkpoint::load(&interrupted, &Device::Cpu).unwrap().meta.state.epochs_done, 5);
    assert!(staging_leftovers(tmp.path()).is_empty());

    // A finished run can be resumed again (nothing to train, the checkpoint stays) or extended.
    let again = |extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["fit".into(), data.to_str().unwrap().into(), "--resume".into(), interrupted.to_str().unwrap().into(), "--quiet".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        ok(&run(&args, None));
        Checkpoint::load(&interrupted, &Device::Cpu).unwrap().meta.state.epochs_done
    };
    assert_eq!(again(&[]), 5);
    assert_eq!(snapshot(&interrupted)["model.safetensors"], a["model.safetensors"]);
    assert_eq!(again(&["--epochs", "6"]), 6);

    // A resumed run cannot silently change its data or its model.
    let other = tempfile::tempdir().unwrap();
    let other_data = write_shapes(other.path(), 24, 2, 0.5);
    let resume = |extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["fit".into(), other_data.to_str().unwrap().into(), "--resume".into(), interrupted.to_str().unwrap().into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(&args, None)
    };
    let e = String::from_utf8_lossy(&resume(&["--quiet"]).stderr).into_owned();
    assert!(e.contains("training data differ"), "{e}");
    let e = String::from_utf8_lossy(&resume(&["--hidden-size", "9"]).stderr).into_owned();
    assert!(e.contains("--hidden-size cannot change"), "{e}");
}

#[test]
fn crash_in_the_middle_of_any_write_leaves_the_previous_model_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_shapes(tmp.path(), 24, 2, 0.0);
    let dir = tmp.path().join("model");
    ok(&run(&fit_args(&data, &dir, "1", "2"), None));
    let before = snapshot(&dir);
    let old_ck = std::fs::read(dir.join(CHECKPOINT)).unwrap();

    for file in ["checkpoint.safetensors", "model.safetensors", "centroids.json", "model.bundle", "encoder.onnx", "metrics.json"] {
        let o = run(&fit_args(&data, &dir, "3", "2"), Some(&format!("abort-writing={file}")));
        assert!(!o.status.success(), "{file}: the injected crash did not happen");
        assert_eq!(snapshot(&dir), before, "{file}: crash mid-write changed the previous model");
        let m = load_model(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{file}: previous model no longer loads: {e}"));
        assert_eq!(m.config.params.seed, 1);
        if file == "checkpoint.safetensors" {
            assert_eq!(std::fs::read(dir.join(CHECKPOINT)).unwrap(), old_ck, "torn checkpoint");
        }
        Checkpoint::load(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{file}: checkpoint unreadable: {e}"));
    }
    // The model still scores data, and the next good run cleans up the crashed runs' leftovers.
    ok(&trainer().args(["cluster", dir.to_str().unwrap(), data.to_str().unwrap()]).output().unwrap());
    assert!(!staging_leftovers(tmp.path()).is_empty(), "aborted runs leave their staging folders");
    ok(&run(&fit_args(&data, &dir, "3", "2"), None));
    assert!(staging_leftovers(tmp.path()).is_empty());
    assert_eq!(load_model(&dir, &Device::Cpu).unwrap().config.params.seed, 3);
}

#[test]
fn killed_at_random_moments_the_model_directory_is_always_one_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_shapes(tmp.path(), 24, 2, 0.0);
    let (dir, reference) = (tmp.path().join("model"), tmp.path().join("reference"));
    ok(&run(&fit_args(&data, &dir, "1", "3"), None));
    ok(&run(&fit_args(&data, &reference, "4", "30"), None));
    let (old, new) = (snapshot(&dir), snapshot(&reference));
    let started = Instant::now();
    ok(&run(&fit_args(&data, &tmp.path().join("timing"), "4", "30"), None));
    let full = started.elapsed();
    let mut seen_new = false;
    for i in 1..=8u32 {
        let mut child = trainer().args(fit_args(&data, &dir, "4", "30")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(full * i / 8 + Duration::from_millis(5 * i as u64));
        let _ = child.kill(); // SIGKILL; the run may also have finished already
        let _ = child.wait();
        let now = snapshot(&dir);
        assert!(now == old || now == new, "kill {i}: the directory mixes two runs or holds a torn file");
        seen_new |= now == new;
        load_model(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("kill {i}: model does not load: {e}"));
    }
    ok(&run(&fit_args(&data, &dir, "4", "30"), None));
    assert!(seen_new || snapshot(&dir) == new);
}

#[test]
fn fit_refuses_to_replace_a_directory_with_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_shapes(tmp.path(), 24, 2, 0.0);
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let o = run(&fit_args(&data, &dir, "1", "1"), None);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'notes.txt'"));
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "keep me");
    assert!(staging_leftovers(tmp.path()).is_empty());
}

/// Early stopping across an interruption: the checkpoint keeps the best epoch's weights and the
/// validation log, so a run stopped by a fault and resumed keeps the same weights as one that
/// was never interrupted, and stops at the same epoch for the same reason.
#[test]
fn early_stopping_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_shapes(tmp.path(), 40, 2, 0.0);
    let (straight, interrupted) = (tmp.path().join("straight"), tmp.path().join("interrupted"));
    let args = |out: &Path| {
        tiny_fit_args(
            &data,
            out,
            &[
                "--batch-size",
                "8",
                "--epochs",
                "40",
                "--early-stopping",
                "true",
                "--patience",
                "3",
                "--min-steps",
                "8",
                "--learning-rate",
                "0.02",
                "--seed",
                "3",
            ],
        )
    };
    ok(&run(&args(&straight), None));
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(straight.join("metrics.json")).unwrap()).unwrap();
    let stop = &metrics["stop"];
    let epochs = stop["epochs"].as_u64().unwrap();
    assert_eq!(stop["validation_rows"], 4);
    assert!(epochs < 40 && stop["reason"].as_str().unwrap().starts_with("converged"), "{stop}");
    assert!(stop["kept_epoch"].as_u64().unwrap() < epochs, "{stop}");
    // Interrupted after the best epoch was found, then resumed.
    let fault = format!("nan-loss-at-epoch={}", epochs - 1);
    assert_eq!(run(&args(&interrupted), Some(&fault)).status.code(), Some(1));
    let o = run(
        &["fit".into(), data.to_str().unwrap().into(), "--resume".into(), interrupted.to_str().unwrap().into(), "--quiet".into()],
        None,
    );
    ok(&o);
    let (a, b) = (snapshot(&straight), snapshot(&interrupted));
    for f in ["model.safetensors", "centroids.json", "model.bundle"] {
        assert!(a[f] == b[f], "{f} differs between the resumed and the uninterrupted early-stopped run");
    }
    let resumed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(interrupted.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(resumed["stop"]["kept_epoch"], stop["kept_epoch"]);
    assert_eq!(resumed["stop"]["reason"], stop["reason"]);
}
