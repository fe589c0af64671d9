//! The figures, drawn with `plotters` once into a PNG and once into an SVG. Text uses DejaVu Sans
//! compiled into the binary (the `dejavu` crate), so a machine without fonts renders the same.
//! Every file goes through a temp name and a rename, like all other artifacts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::train_log::EpochLog;

/// Tableau-10 colours, cycled for groups beyond ten.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of group `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a known-good TTF shipped by the `dejavu` crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Pixel size (the SVG uses the same size in user units).
    fn size(&self) -> (u32, u32);
    /// Draws onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String>;
}

/// `fig.draw`, with a panic inside plotters turned into an error: its tick computation overflows
/// integer arithmetic on some axis ranges in builds with overflow checks, and a figure that cannot
/// be drawn must not cost the caller (`fit` keeps the model, `plot` reports the file).
fn draw_caught<F: Figure, DB: DrawingBackend>(fig: &F, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fig.draw(root)))
        .unwrap_or_else(|_| Err("the plotting library panicked".into()))
}

/// Writes `stem.png` and `stem.svg`; returns both paths.
pub fn save<F: Figure>(fig: &F, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let fail = |p: &Path, e: String| Error::model(p, format!("cannot draw: {e}"));

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, fig.size()).into_drawing_area();
        draw_caught(fig, &root).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    write_atomic(&svg, text.as_bytes())?;

    // The image encoder picks the format from the extension, so the temp name ends in .png.
    let tmp = png.with_file_name(format!(
        ".{}.{}.tmp.png",
        png.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, fig.size()).into_drawing_area();
        draw_caught(fig, &root)?;
        root.present().map_err(|e| e.to_string())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&png, e));
    }
    let bytes = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let _ = std::fs::remove_file(&tmp);
    write_atomic(&png, &bytes)?;
    Ok([png, svg])
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Padded range covering `vals`.
fn range(vals: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad)..(hi + pad)
}

/// 2-D points coloured by group, with a legend.
pub struct Scatter<'a> {
    /// Title.
    pub title: String,
    /// Axis names.
    pub axes: [String; 2],
    /// Points.
    pub points: &'a [[f64; 2]],
    /// Group of each point (index into `names`).
    pub groups: &'a [usize],
    /// Legend text per group.
    pub names: &'a [String],
}

impl Figure for Scatter<'_> {
    fn size(&self) -> (u32, u32) {
        (800, 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let xr = range(self.points.iter().map(|p| p[0]));
        let yr = range(self.points.iter().map(|p| p[1]));
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(xr, yr)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc(&self.axes[0])
            .y_desc(&self.axes[1])
            .label_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(s)?;
        for (g, name) in self.names.iter().enumerate() {
            let c = color(g);
            let pts = self.points.iter().zip(self.groups).filter(|(_, &gi)| gi == g).map(|(p, _)| (p[0], p[1]));
            let n = self.groups.iter().filter(|&&gi| gi == g).count();
            chart
                .draw_series(pts.map(|p| Circle::new(p, 2, c.mix(0.7).filled())))
                .map_err(s)?
                .label(format!("{name} ({n})"))
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(s)?;
        Ok(())
    }
}

/// Total, reconstruction and KL loss per epoch.
pub struct LossCurve<'a> {
    /// The training log.
    pub log: &'a [EpochLog],
}

impl Figure for LossCurve<'_> {
    fn size(&self) -> (u32, u32) {
        (800, 450)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let last = self.log.last().map_or(1, |e| e.epoch).max(1) as i64;
        let first = self.log.first().map_or(1, |e| e.epoch) as i64;
        let y = range(self.log.iter().flat_map(|e| [e.loss, e.recon, e.kl]).chain([0.0]));
        let mut chart = ChartBuilder::on(root)
            .caption("Training loss per epoch", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first.min(last - 1).max(0)..last, y)
            .map_err(s)?;
        chart.configure_mesh().x_desc("epoch").y_desc("loss").label_style((FONT, 13)).draw().map_err(s)?;
        type Curve = (&'static str, fn(&EpochLog) -> f64, RGBColor);
        let series: [Curve; 3] =
            [("total", |e| e.loss, BLACK), ("reconstruction", |e| e.recon, color(0)), ("KL (weighted)", |e| e.kl, color(1))];
        for (name, f, c) in series {
            let pts: Vec<(i64, f64)> = self.log.iter().map(|e| (e.epoch as i64, f(e))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(s)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(s)?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(s)?;
        Ok(())
    }
}

/// One panel per cluster: some member series (feature 0) and the decoded centroid.
pub struct ClusterExamples<'a> {
    /// Per cluster: its member series to draw (time-major values), and its size.
    pub members: &'a [(Vec<&'a [f32]>, usize)],
    /// Per cluster: the decoder's output for the centroid (time-major values).
    pub centroids: &'a [Vec<f32>],
    /// Values per time step (only feature 0 is drawn).
    pub n_features: usize,
}

/// Panels per row of the examples grid.
pub const EXAMPLE_COLUMNS: usize = 3;

impl Figure for ClusterExamples<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.members.len().div_ceil(EXAMPLE_COLUMNS).max(1);
        (960, 40 + 260 * rows as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let title = if self.n_features > 1 { "Examples per cluster (feature 1)" } else { "Examples per cluster" };
        let body = root.titled(title, (FONT, 22)).map_err(s)?;
        let rows = self.members.len().div_ceil(EXAMPLE_COLUMNS).max(1);
        let f = self.n_features.max(1);
        let feature0 = |v: &[f32]| -> Vec<f64> { v.iter().step_by(f).map(|&x| x as f64).collect() };
        let y = range(
            self.members
                .iter()
                .flat_map(|(m, _)| m.iter().flat_map(|v| feature0(v)))
                .chain(self.centroids.iter().flat_map(|c| feature0(c))),
        );
        for (k, (panel, ((members, size), centroid))) in
            body.split_evenly((rows, EXAMPLE_COLUMNS)).iter().zip(self.members.iter().zip(self.centroids)).enumerate()
        {
            let steps = centroid.len() / f;
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("cluster {k} ({size} series)"), (FONT, 15))
                .margin(8)
                .x_label_area_size(22)
                .y_label_area_size(38)
                .build_cartesian_2d(0i64..steps.saturating_sub(1).max(1) as i64, y.clone())
                .map_err(s)?;
            chart.configure_mesh().label_style((FONT, 11)).max_light_lines(0).draw().map_err(s)?;
            let c = color(k);
            for m in members {
                let pts = feature0(m).into_iter().enumerate().map(|(t, v)| (t as i64, v));
                chart.draw_series(LineSeries::new(pts, c.mix(0.45).stroke_width(1))).map_err(s)?;
            }
            let pts = feature0(centroid).into_iter().enumerate().map(|(t, v)| (t as i64, v));
            chart.draw_series(LineSeries::new(pts, BLACK.stroke_width(2))).map_err(s)?;
        }
        Ok(())
    }
}
