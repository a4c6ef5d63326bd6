//! The quality and privacy report: one self-contained `report.html` (every image inline, no
//! script or style fetched), drawn from the `metrics.json` of [`crate::quality::evaluate`]
//! and, for a `fedsynth synth` run, its [`RunRecord`] (the ledger's charges, the loss and ε
//! per epoch). The images are also written beside it in `img/`.
//!
//! The report shows the real table's distributions and its rows' distances: it is as
//! sensitive as the real data and stays where the real data may be (never sent to a
//! coordinator).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SynthError};

/// One charge of a run, as the ledger recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    /// What it released.
    #[serde(default)]
    pub purpose: String,
    /// The mechanism and its parameters.
    pub what: String,
    /// ε of this charge alone at the run's δ.
    pub epsilon_alone: f64,
    /// The dataset's ε spent after it (all runs, composed).
    pub epsilon_after: f64,
}

/// The privacy side of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPrivacy {
    /// The ledger file.
    pub ledger: String,
    /// The dataset key charged.
    pub dataset: String,
    /// The run's charges, in order.
    pub charges: Vec<Charge>,
    /// The run's ε, all charges composed (PLD accountant).
    pub epsilon: f64,
    /// Its δ.
    pub delta: f64,
    /// The dataset's cap and what all its runs have spent.
    pub cap_epsilon: f64,
    /// ε spent on the dataset so far, this run included.
    pub spent_epsilon: f64,
}

/// One training epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Epoch {
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean training loss.
    pub loss: f64,
    /// ε spent once it ended (None: no DP).
    pub epsilon: Option<f64>,
}

/// What a `fedsynth synth` run adds to its report.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunRecord {
    /// The command line.
    pub command: String,
    /// None: trained without differential privacy.
    pub privacy: Option<RunPrivacy>,
    /// The training curve.
    pub epochs: Vec<Epoch>,
}

const REAL: RGBColor = RGBColor(31, 119, 180);
const SYNTH: RGBColor = RGBColor(255, 127, 14);
const CONTROL: RGBColor = RGBColor(128, 128, 128);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn fmt(v: &Value, digits: usize) -> String {
    num(v).map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: &Value) -> String {
    num(v).map_or_else(|| "n/a".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> SynthError {
    SynthError::Setting(format!("report plot: {e:?}"))
}

/// An SVG drawn by `draw` on a `w`×`h` canvas.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(s)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A legend's square of `color`.
fn swatch(color: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
}

/// The series' legend at `position`.
fn legend<'b>(c: &mut Chart<'b, 'b>, position: SeriesLabelPosition) -> Result<()> {
    c.configure_series_labels()
        .position(position)
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_err)
}

/// Real and synthetic shares of one column, overlaid.
fn column_plot(name: &str, d: &Value, score: &str) -> Result<String> {
    let (real, synth) = (floats(&d["real"]), floats(&d["synth"]));
    let top = real
        .iter()
        .chain(&synth)
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let caption = format!("{} (score {score})", short(name, 40));
    if d["kind"] == "numerical" {
        let edges = floats(&d["edges"]);
        let (lo, hi) = (edges[0], edges[edges.len() - 1]);
        svg(420, 260, |root| {
            let mut c = ChartBuilder::on(root)
                .caption(caption, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(lo..hi, 0.0..top)
                .map_err(plot_err)?;
            c.configure_mesh()
                .disable_x_mesh()
                .x_labels(5)
                .y_labels(4)
                .y_label_formatter(&|v| format!("{:.0}%", 100.0 * v))
                .draw()
                .map_err(plot_err)?;
            for (shares, color, label) in [(&real, REAL, "real"), (&synth, SYNTH, "synthetic")] {
                c.draw_series(shares.iter().enumerate().map(|(k, &v)| {
                    Rectangle::new(
                        [(edges[k], 0.0), (edges[k + 1], v)],
                        color.mix(0.45).filled(),
                    )
                }))
                .map_err(plot_err)?
                .label(label)
                .legend(swatch(color));
            }
            legend(&mut c, SeriesLabelPosition::UpperRight)
        })
    } else {
        let labels: Vec<String> = d["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| short(l.as_str().unwrap_or(""), 18))
                    .collect()
            })
            .unwrap_or_default();
        let k = labels.len().max(1);
        let h = (60 + 18 * k as u32).max(160);
        svg(420, h, |root| {
            let mut c = ChartBuilder::on(root)
                .caption(caption, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(130)
                .build_cartesian_2d(0.0..top, 0.0..k as f64)
                .map_err(plot_err)?;
            c.configure_mesh()
                .disable_y_mesh()
                .x_labels(4)
                .x_label_formatter(&|v| format!("{:.0}%", 100.0 * v))
                .y_labels(0)
                .draw()
                .map_err(plot_err)?;
            // Category names beside their bars, in the label area (pixel coordinates).
            let style = TextStyle::from(("sans-serif", 11).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            for (i, label) in labels.iter().enumerate() {
                let (x, y) = c.backend_coord(&(0.0, (k - 1 - i) as f64 + 0.5));
                root.draw(&Text::new(label.clone(), (x - 6, y), style.clone()))
                    .map_err(plot_err)?;
            }
            for (shares, color, off, label) in [
                (&real, REAL, 0.5, "real"),
                (&synth, SYNTH, 0.1, "synthetic"),
            ] {
                c.draw_series(shares.iter().enumerate().map(|(i, &v)| {
                    let y = (k - 1 - i) as f64;
                    Rectangle::new(
                        [(0.0, y + off), (v, y + off + 0.4)],
                        color.mix(0.8).filled(),
                    )
                }))
                .map_err(plot_err)?
                .label(label)
                .legend(swatch(color));
            }
            legend(&mut c, SeriesLabelPosition::LowerRight)
        })
    }
}

/// A heatmap of a square matrix in [0, 1] (white → dark).
fn heatmap(title: &str, names: &[String], m: &[Vec<f64>], base: RGBColor) -> Result<String> {
    let d = m.len().max(1);
    let labelled = d <= 30;
    let size = if labelled { 360 } else { 300 };
    svg(size + 40, size, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 15))
            .margin(6)
            .x_label_area_size(if labelled { 70 } else { 10 })
            .y_label_area_size(if labelled { 90 } else { 10 })
            .build_cartesian_2d(0.0..d as f64, 0.0..d as f64)
            .map_err(plot_err)?;
        let label = |v: &f64| {
            let i = v.floor() as usize;
            if labelled && (v.fract() - 0.5).abs() < 1e-6 {
                names.get(i).map(|n| short(n, 12)).unwrap_or_default()
            } else {
                String::new()
            }
        };
        let flip = |v: &f64| label(&(d as f64 - v));
        c.configure_mesh()
            .disable_mesh()
            .x_labels(if labelled { 2 * d + 1 } else { 0 })
            .y_labels(if labelled { 2 * d + 1 } else { 0 })
            .x_label_formatter(&label)
            .y_label_formatter(&flip)
            .x_label_style(
                ("sans-serif", 10)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_label_style(("sans-serif", 10))
            .draw()
            .map_err(plot_err)?;
        c.draw_series(m.iter().enumerate().flat_map(|(i, row)| {
            row.iter().enumerate().map(move |(j, &v)| {
                let v = if v.is_finite() {
                    v.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let mix = |b: u8| (255.0 - (255.0 - f64::from(b)) * v) as u8;
                let y = (d - 1 - i) as f64;
                Rectangle::new(
                    [(j as f64, y), (j as f64 + 1.0, y + 1.0)],
                    RGBColor(mix(base.0), mix(base.1), mix(base.2)).filled(),
                )
            })
        }))
        .map_err(plot_err)?;
        Ok(())
    })
}

/// ROC curves of the attacks and their control.
fn roc_plot(mi: &Value) -> Result<String> {
    let curve = |v: &Value| -> Vec<(f64, f64)> {
        v["roc"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    svg(460, 360, |root| {
        let mut c = ChartBuilder::on(root)
            .caption("Membership inference: ROC", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .draw()
            .map_err(plot_err)?;
        c.draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3),
        ))
        .map_err(plot_err)?
        .label("chance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.mix(0.3)));
        let series = [
            ("attacks", "dcr", "distance to closest record", REAL),
            ("attacks", "density_ratio", "density ratio (DOMIAS)", SYNTH),
            ("control", "dcr", "control: distance", CONTROL),
            (
                "control",
                "density_ratio",
                "control: density ratio",
                RGBColor(180, 180, 180),
            ),
        ];
        for (side, attack, name, color) in series {
            let v = &mi[side][attack];
            let label = format!("{name}, AUC {}", fmt(&v["auc"], 3));
            c.draw_series(LineSeries::new(curve(v), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(plot_err)
    })
}

/// One training series against the epoch.
fn epoch_plot(title: &str, points: &[(f64, f64)], color: RGBColor) -> Result<String> {
    let (x1, lo, hi) = points.iter().fold(
        (1.0_f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)),
    );
    let (lo, hi) = if hi > lo {
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    } else {
        (lo - 1.0, lo + 1.0)
    };
    svg(420, 240, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..x1.max(2.0), lo..hi)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("epoch")
            .x_labels(6)
            .y_labels(5)
            .draw()
            .map_err(plot_err)?;
        c.draw_series(LineSeries::new(points.to_vec(), color.stroke_width(2)))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The report being written: its HTML and its images.
struct Page {
    html: String,
    images: Vec<(String, String)>,
}

impl Page {
    fn image(&mut self, file: &str, alt: &str, svg: String) {
        let data = base64::engine::general_purpose::STANDARD.encode(svg.as_bytes());
        let _ = write!(
            self.html,
            "<img src=\"data:image/svg+xml;base64,{data}\" alt=\"{}\" data-file=\"img/{}\">",
            esc(alt),
            esc(file)
        );
        self.images.push((file.to_string(), svg));
    }

    fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        self.html.push_str("<table><tr>");
        for h in head {
            let _ = write!(self.html, "<th>{}</th>", esc(h));
        }
        self.html.push_str("</tr>");
        for r in rows {
            self.html.push_str("<tr>");
            for c in r {
                let _ = write!(self.html, "<td>{}</td>", esc(c));
            }
            self.html.push_str("</tr>");
        }
        self.html.push_str("</table>");
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:8px}.note{color:#555;font-size:.92em}\
.warn{color:#a40}img{border:1px solid #eee}";

/// Checks, once the page has loaded, that every image decoded, and records it (and any
/// script error) on the page: `data-selfcheck` of `<body>`.
const SELFCHECK: &str = "<script>\
var errs=[];window.addEventListener('error',function(e){errs.push(String(e.message))});\
window.addEventListener('load',function(){var bad=[],imgs=document.images;\
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){bad.push(imgs[i].alt)}}\
document.body.setAttribute('data-selfcheck',(bad.length||errs.length)?'broken: '+bad.concat(errs).join('; '):'ok '+imgs.length+' images')});\
</script>";

fn filename(prefix: &str, k: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("{prefix}{k:03}_{clean}.svg")
}

/// Writes `dir/report.html` and `dir/img/*.svg` from the metrics (with `metrics["run"]`, a
/// [`RunRecord`], when the report is of a `fedsynth synth` run).
pub fn write(metrics: &Value, dir: &Path) -> Result<()> {
    let mut p = Page {
        html: String::new(),
        images: Vec::new(),
    };
    let q = &metrics["quality"];
    let _ = write!(
        p.html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fedsynth report</title><style>{STYLE}</style>{SELFCHECK}</head><body>\
         <h1>fedsynth: synthetic data report</h1>\
         <p class=\"note\">This report shows the real table's distributions and distances between \
         its rows: keep it where the real data may be kept.</p>"
    );
    if let Some(cmd) = metrics["run"]["command"].as_str() {
        let _ = write!(
            p.html,
            "<p class=\"note\">Run: <code>{}</code></p>",
            esc(cmd)
        );
    }

    // Summary.
    p.html.push_str("<h2>Summary</h2>");
    let w = &metrics["workload"];
    let mut rows = vec![
        vec![
            "column shapes (1 − KS / 1 − TVD, mean)".into(),
            fmt(&q["column_shapes"], 3),
            "1 = identical".into(),
        ],
        vec![
            "column pair trends (mean)".into(),
            fmt(&q["column_pair_trends"], 3),
            "1 = identical".into(),
        ],
        vec![
            "3-way marginal error (mean L1)".into(),
            fmt(&w["synth"]["3way"]["mean_l1"], 3),
            format!(
                "holdout of the real table: {}",
                fmt(&w["holdout_baseline"]["3way"]["mean_l1"], 3)
            ),
        ],
    ];
    if let Some(r) = metrics["run"]["privacy"].as_object() {
        rows.push(vec![
            "privacy".into(),
            format!(
                "ε = {} at δ = {:.2e}",
                fmt(&r["epsilon"], 3),
                r["delta"].as_f64().unwrap_or(0.0)
            ),
            "all charges of the run composed".into(),
        ]);
    } else if metrics["run"].is_object() {
        rows.push(vec![
            "privacy".into(),
            "none (ε = ∞)".into(),
            "trained WITHOUT differential privacy".into(),
        ]);
    }
    p.table(&["measure", "value", "reference"], &rows);

    // Columns, worst first.
    p.html
        .push_str("<h2>Columns (worst first)</h2><div class=\"grid\">");
    let mut cols: Vec<(&String, f64)> = q["per_column"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k, v.as_f64().unwrap_or(f64::NAN)))
                .collect()
        })
        .unwrap_or_default();
    cols.sort_by(|a, b| a.1.total_cmp(&b.1));
    let dists = &metrics["report"]["distributions"];
    for (k, (name, score)) in cols.iter().enumerate() {
        let d = &dists[name.as_str()];
        if d.is_null() {
            continue;
        }
        let svg = column_plot(name, d, &format!("{score:.3}"))?;
        p.image(
            &filename("column_", k, name),
            &format!("column {name}"),
            svg,
        );
    }
    p.html.push_str("</div><p class=\"note\">Numbers: 30 equal bins between the real 0.5% and 99.5% \
        quantiles (the tails in the end bins). Categories: the 20 most frequent real ones, the rest together.</p>");

    // Pairs.
    let a = &metrics["report"]["associations"];
    if let Some(names) = a["columns"].as_array() {
        let names: Vec<String> = names
            .iter()
            .map(|n| n.as_str().unwrap_or("").to_string())
            .collect();
        let m = |v: &Value| -> Vec<Vec<f64>> {
            v.as_array()
                .map(|r| r.iter().map(floats).collect())
                .unwrap_or_default()
        };
        let (real, synth) = (m(&a["real"]), m(&a["synth"]));
        let diff: Vec<Vec<f64>> = real
            .iter()
            .zip(&synth)
            .map(|(r, s)| r.iter().zip(s).map(|(x, y)| (x - y).abs()).collect())
            .collect();
        p.html
            .push_str("<h2>Pairs of columns</h2><div class=\"grid\">");
        p.image(
            "pairs_real.svg",
            "associations, real",
            heatmap("real", &names, &real, REAL)?,
        );
        p.image(
            "pairs_synth.svg",
            "associations, synthetic",
            heatmap("synthetic", &names, &synth, SYNTH)?,
        );
        p.image(
            "pairs_diff.svg",
            "associations, difference",
            heatmap("|real − synthetic|", &names, &diff, RGBColor(200, 30, 30))?,
        );
        let _ = write!(
            p.html,
            "</div><p class=\"note\">{}.</p>",
            esc(a["measure"].as_str().unwrap_or(""))
        );
    }

    // Utility.
    p.html.push_str("<h2>Utility</h2>");
    let u = &metrics["utility"];
    if u.is_object() {
        let keys: &[(&str, &str)] = if u["task"] == "classification" {
            &[("roc_auc", "ROC AUC"), ("accuracy", "accuracy")]
        } else {
            &[("r2", "R²")]
        };
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|(k, name)| {
                vec![
                    name.to_string(),
                    fmt(&u["tstr"][*k], 3),
                    fmt(&u["trtr"][*k], 3),
                ]
            })
            .collect();
        let _ = write!(
            p.html,
            "<p>Predicting <b>{}</b> on the holdout with {}.</p>",
            esc(u["target"].as_str().unwrap_or("")),
            esc(u["model"].as_str().unwrap_or(""))
        );
        p.table(&["score", "trained on synthetic", "trained on real"], &rows);
    } else {
        p.html.push_str("<p class=\"note\">Not measured: give a holdout (real rows not used for training) and a target column.</p>");
    }

    // Privacy.
    p.html.push_str("<h2>Privacy</h2>");
    match metrics["run"]["privacy"].as_object() {
        Some(r) => {
            let rows: Vec<Vec<String>> = r["charges"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            vec![
                                c["purpose"].as_str().unwrap_or("").to_string(),
                                c["what"].as_str().unwrap_or("").to_string(),
                                fmt(&c["epsilon_alone"], 4),
                                fmt(&c["epsilon_after"], 3),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                p.html,
                "<p>Charged to dataset <code>{}</code> in the ledger <code>{}</code>: this run \
                 ε = <b>{}</b> at δ = {:.2e} (all its charges composed with the PLD accountant, \
                 less than their sum); the dataset has spent ε = {} of its cap {}.</p>",
                esc(r["dataset"].as_str().unwrap_or("")),
                esc(r["ledger"].as_str().unwrap_or("")),
                fmt(&r["epsilon"], 3),
                r["delta"].as_f64().unwrap_or(0.0),
                fmt(&r["spent_epsilon"], 3),
                fmt(&r["cap_epsilon"], 3),
            );
            p.table(
                &["release", "mechanism", "ε alone", "dataset ε after"],
                &rows,
            );
        }
        None if metrics["run"].is_object() => p.html.push_str(
            "<p class=\"warn\">Trained WITHOUT differential privacy (ε = ∞): no guarantee.</p>",
        ),
        None => p.html.push_str(
            "<p class=\"note\">The run's charges are not known here: `fedsynth synth --report DIR` \
             itemises them, and `fedsynth budget` lists the ledger.</p>",
        ),
    }
    let pr = &metrics["privacy"];
    let mi = &pr["membership_inference"];
    p.html.push_str("<h3>Membership inference</h3>");
    if mi["attacks"].is_object() {
        let row = |side: &str, attack: &str, name: &str| {
            let v = &mi[side][attack];
            vec![
                name.to_string(),
                format!("{} ± {}", fmt(&v["auc"], 3), fmt(&v["auc_se"], 3)),
                pct(&v["tpr_at_1pct_fpr"]),
                pct(&v["tpr_at_10pct_fpr"]),
            ]
        };
        let _ = write!(
            p.html,
            "<p>{} training rows (a random sample) against {} holdout rows the generator never \
             saw; the density ratio's reference is {} other holdout rows. AUC 0.5: the attack \
             cannot tell them apart. The control replaces the synthetic table by real rows \
             independent of training: it must be ≈ 0.5, else the two groups differ for another \
             reason and the attack's figures prove nothing.</p>",
            mi["members"], mi["non_members"], mi["reference_rows"]
        );
        p.table(
            &[
                "attack",
                "ROC AUC ± s.e.",
                "TPR at 1% FPR",
                "TPR at 10% FPR",
            ],
            &[
                row("attacks", "dcr", "distance to closest synthetic record"),
                row(
                    "attacks",
                    "density_ratio",
                    "density ratio (DOMIAS-style, KDE)",
                ),
                row("control", "dcr", "control: distance"),
                row("control", "density_ratio", "control: density ratio"),
            ],
        );
        let svg = roc_plot(mi)?;
        p.image("mia_roc.svg", "membership inference ROC", svg);
        let off = |side: &str| {
            ["dcr", "density_ratio"].iter().any(|a| {
                let v = &mi[side][*a];
                (num(&v["auc"]).unwrap_or(0.5) - 0.5).abs()
                    > 3.0 * num(&v["auc_se"]).unwrap_or(0.0) + 0.02
            })
        };
        if off("control") {
            p.html.push_str("<p class=\"warn\">The control is far from 0.5: the holdout does not look like a random sample of the same table as the training rows.</p>");
        } else if off("attacks") {
            p.html.push_str("<p class=\"warn\">An attack tells training rows from unseen ones better than chance: the synthetic table reveals membership.</p>");
        }
    } else {
        let _ = write!(
            p.html,
            "<p class=\"note\">Not measured: {}.</p>",
            esc(mi["skipped"]
                .as_str()
                .unwrap_or("give a holdout (real rows not used for training)"))
        );
    }
    let id = &pr["identifiability"];
    p.html.push_str("<h3>Identifiability and copies</h3>");
    p.table(
        &["measure", "synthetic", "holdout baseline"],
        &[
            vec![
                "real rows nearer to a synthetic row than to another real row".into(),
                pct(&id["share"]),
                pct(&id["holdout_baseline"]),
            ],
            vec![
                "distance to the closest real row, 5th percentile".into(),
                fmt(&pr["dcr_synth_to_train"]["p5"], 3),
                fmt(&pr["dcr_holdout_to_train_baseline"]["p5"], 3),
            ],
            vec![
                "exact copies of a real row".into(),
                pct(&pr["exact_copy_share"]),
                String::new(),
            ],
        ],
    );
    let _ = write!(
        p.html,
        "<p class=\"note\">Identifiability compares pools of {} rows each: data independent of the \
         training rows scores about 50%, a copy of them 100%.</p>",
        id["pool_rows"]
    );
    let k = &pr["k_anonymity"];
    if k.is_object() {
        let names: Vec<String> = k["quasi_identifiers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(p.html, "<h3>k-anonymity on {}</h3>", esc(&names.join(", ")));
        p.table(
            &["table", "k", "classes", "rows in classes of fewer than 5"],
            &["synthetic", "real"]
                .iter()
                .map(|t| {
                    vec![
                        t.to_string(),
                        k[*t]["k"].to_string(),
                        k[*t]["classes"].to_string(),
                        pct(&k[*t]["rows_in_classes_below_5"]),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        let _ = write!(
            p.html,
            "<p>Synthetic rows whose combination is unique among the real rows: {}.</p>",
            pct(&k["synthetic_rows_matching_a_unique_real_row"])
        );
    }

    // Training.
    if let Some(epochs) = metrics["run"]["epochs"]
        .as_array()
        .filter(|e| !e.is_empty())
    {
        p.html.push_str("<h2>Training</h2><div class=\"grid\">");
        let series = |key: &str| -> Vec<(f64, f64)> {
            epochs
                .iter()
                .filter_map(|e| Some((e["epoch"].as_f64()?, num(&e[key])?)))
                .collect()
        };
        p.image(
            "training_loss.svg",
            "training loss",
            epoch_plot("loss per epoch", &series("loss"), REAL)?,
        );
        let eps = series("epsilon");
        if !eps.is_empty() {
            p.image(
                "training_epsilon.svg",
                "training epsilon",
                epoch_plot("ε spent after each epoch", &eps, SYNTH)?,
            );
        }
        p.html.push_str("</div>");
    }
    p.html.push_str("</body></html>\n");

    let img = dir.join("img");
    std::fs::create_dir_all(&img).map_err(|e| SynthError::Output {
        path: img.display().to_string(),
        message: format!("cannot create: {e}"),
    })?;
    let put = |path: &Path, text: &str| {
        fedsynth_privacy::envelope::write_atomically(path, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
        .map_err(|e| SynthError::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    for (file, svg) in &p.images {
        put(&img.join(file), svg)?;
    }
    put(&dir.join("report.html"), &p.html)
}
