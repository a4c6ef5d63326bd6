//! `fedsynth evaluate`: quality, utility and privacy of a synthetic table against the real one.

use std::path::Path;

use anyhow::{Context, Result};
use fedsynth_privacy::envelope;
use fedsynth_synth::quality::{EvalOptions, evaluate};
use fedsynth_synth::table::{Table, read_table};
use serde_json::Value;

use crate::EvaluateArgs;

/// Scores and writes `DIR/metrics.json`; returns the metrics.
pub fn report(
    real: &Table,
    synth: &Table,
    holdout: Option<&Table>,
    target: Option<String>,
    dir: &Path,
) -> Result<Value> {
    let opts = EvalOptions {
        target,
        ..EvalOptions::default()
    };
    let metrics = evaluate(real, synth, holdout, &opts)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&metrics)?;
    envelope::write_atomically(&dir.join("metrics.json"), |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })?;
    Ok(metrics)
}

/// One line: the headline figures.
pub fn headline(m: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.3}"));
    let mut s = format!(
        "column shapes {}, pair trends {}, 3-way error {}, DCR p5 {}",
        f(&m["quality"]["column_shapes"]),
        f(&m["quality"]["column_pair_trends"]),
        f(&m["workload"]["synth"]["3way"]["mean_l1"]),
        f(&m["privacy"]["dcr_synth_to_train"]["p5"]),
    );
    if let Some(u) = m.get("utility") {
        let (key, name) = if u["task"] == "classification" {
            ("roc_auc", "ROC AUC")
        } else {
            ("r2", "R²")
        };
        s.push_str(&format!(
            ", utility {name} {} (train on real: {})",
            f(&u["tstr"][key]),
            f(&u["trtr"][key])
        ));
    }
    s
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    let real = read_table(&args.real)?;
    let synth = read_table(&args.synth)?;
    let holdout = args.holdout.as_deref().map(read_table).transpose()?;
    let metrics = report(
        &real,
        &synth,
        holdout.as_ref(),
        args.target.clone(),
        &args.out,
    )?;
    println!(
        "{}; wrote {}",
        headline(&metrics),
        args.out.join("metrics.json").display()
    );
    Ok(())
}
