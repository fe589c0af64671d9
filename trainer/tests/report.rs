//! The run report: `trainer fit` writes report.json, report.html and the figures; `trainer plot`
//! draws them for any data; the HTML page renders in a real browser (headless Chromium) with its
//! images.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, tiny_fit_args, trainer, write_shapes};
use trainer::report::Report;

fn run(args: &[&str]) -> std::process::Output {
    trainer().args(args).output().unwrap()
}

fn fit(dir: &Path) -> (PathBuf, PathBuf) {
    let data = write_shapes(dir, 60, 3, 0.0);
    let out = dir.join("model");
    ok(&trainer().args(tiny_fit_args(&data, &out, &["--epochs", "3", "--tsne-iterations", "300"])).output().unwrap());
    (data, out)
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

const FIGURES: [(&str, (u32, u32)); 6] = [
    ("pca_clusters", (800, 600)),
    ("pca_labels", (800, 600)),
    ("tsne_clusters", (800, 600)),
    ("tsne_labels", (800, 600)),
    ("loss", (800, 450)),
    // Three clusters fit one row of panels.
    ("examples", (960, 300)),
];

fn check_figures(dir: &Path, n_points: usize, groups: usize) {
    for (stem, size) in FIGURES {
        let png = dir.join(format!("{stem}.png"));
        assert_eq!(png_size(&png), size, "{stem}.png");
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{stem}.svg is not a complete SVG");
        if stem.starts_with("pca") || stem.starts_with("tsne") {
            // One dot per point plus one legend marker per group.
            assert_eq!(svg.matches("<circle").count(), n_points + groups, "{stem}.svg");
        }
    }
}

#[test]
fn fit_writes_report_json_html_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model) = fit(tmp.path());
    let r: Report = serde_json::from_str(&std::fs::read_to_string(model.join("report.json")).unwrap()).unwrap();
    assert_eq!(r.epochs.len(), 3);
    assert_eq!((r.run.data.n_series, r.run.data.n_train, r.run.data.n_holdout, r.run.model.seq_len), (60, 54, 6, 30));
    assert_eq!(r.run.params.hidden_size, 8);
    // One run record: config.json, the checkpoint and report.json hold the same one, with the
    // data's fingerprint and the cluster settings.
    let config: trainer::run_record::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let ck = trainer::checkpoint::Checkpoint::load(&model, &candle_core::Device::Cpu).unwrap();
    assert_eq!((&config, &ck.meta.run), (&r.run, &r.run));
    assert!(r.run.data.fingerprint.as_ref().is_some_and(|f| f.len() == 16) && r.run.clustering.is_some_and(|c| c.n_init > 0));
    assert_eq!(r.metrics.k, 3);
    assert_eq!(r.metrics.cluster_sizes.iter().sum::<usize>(), 54);
    let (vrae, raw) = (r.metrics.vrae_holdout.unwrap(), r.metrics.raw_holdout.unwrap());
    let plots = r.plots.as_ref().unwrap();
    assert_eq!(plots.files.len(), 12);
    assert_eq!(plots.points, 60);
    assert!(!plots.tsne_barnes_hut);
    check_figures(&model.join("plots"), 60, 3);

    let html = std::fs::read_to_string(model.join("report.html")).unwrap();
    for f in plots.files.iter().filter(|f| f.ends_with(".svg")) {
        assert!(html.contains(&format!("src=\"{f}\"")), "report.html does not show {f}");
    }
    for v in [vrae.ari, vrae.nmi, raw.ari, raw.purity] {
        assert!(html.contains(&format!("<td>{v:.3}</td>")), "report.html lacks the score {v:.3}");
    }
    assert!(html.contains("3 epochs"));
}

#[test]
fn plot_command_draws_any_data_with_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = fit(tmp.path());
    let out = tmp.path().join("figs");
    let o = run(&[
        "plot",
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--perplexity",
        "10",
        "--tsne-iterations",
        "250",
    ]);
    ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("wrote ").count(), 12);
    check_figures(&out, 60, 3);
    // A model/data feature-count mismatch is a clear error, not a panic.
    let two = tmp.path().join("two.csv");
    std::fs::write(&two, "series_id,t,a,b\ns,0,1,2\ns,1,3,4\n").unwrap();
    let o = run(&["plot", model.to_str().unwrap(), two.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("feature"), "{}", String::from_utf8_lossy(&o.stderr));
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Screenshot of `html` in headless Chromium; pixels of the plots' first two colours.
fn plot_pixels(browser: &Path, html: &Path, shot: &Path) -> usize {
    let o = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,2600"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(shot).unwrap().to_rgb8();
    assert_eq!(img.width(), 1000);
    let near = |p: &image::Rgb<u8>, c: [i32; 3]| (0..3).all(|i| (p[i] as i32 - c[i]).abs() < 40);
    img.pixels().filter(|p| near(p, [31, 119, 180]) || near(p, [255, 127, 14])).count()
}

#[test]
fn report_html_renders_with_its_images_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("REQUIRE_CHROMIUM").is_none(), "REQUIRE_CHROMIUM is set but no chromium is on PATH");
        eprintln!("skipped: no chromium on PATH (scripts/test.sh installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, model) = fit(tmp.path());
    let coloured = plot_pixels(&browser, &model.join("report.html"), &tmp.path().join("shot.png"));
    // The same page without its plots folder: the images are missing, so the colours are too.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(model.join("report.html"), bare.join("report.html")).unwrap();
    let missing = plot_pixels(&browser, &bare.join("report.html"), &tmp.path().join("bare.png"));
    assert!(coloured > 2000 && missing < 100, "plot-coloured pixels: {coloured} with images, {missing} without");
}

#[test]
fn too_few_series_for_figures_still_give_a_model_and_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("three.tsv");
    std::fs::write(&data, "1\t1\t2\t3\n2\t3\t2\t1\n1\t1\t2\t2\n").unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "fit",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--holdout",
        "0",
        "--epochs",
        "1",
        "--hidden-size",
        "4",
        "--latent-length",
        "2",
        "--quiet",
    ]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("t-SNE needs at least 4 points"));
    let r: Report = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(r.plots.is_none());
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("not drawn"));
    trainer::artifacts::load_model(&out, &candle_core::Device::Cpu).unwrap();
}

#[test]
fn plot_names_the_line_of_a_corrupt_training_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = fit(tmp.path());
    let log = model.join("training_log.csv");
    let text = std::fs::read_to_string(&log).unwrap().replacen("\n2,", "\n2,oops,", 1);
    std::fs::write(&log, text).unwrap();
    let o = run(&["plot", model.to_str().unwrap(), data.to_str().unwrap(), "--out", tmp.path().join("f").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("training_log.csv:3") && e.contains("expected 6 or 7 fields"), "{e}");
}
