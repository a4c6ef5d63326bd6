//! `fedsynth evaluate`: quality, utility and privacy of a synthetic table against the real one.

use std::path::Path;

use anyhow::{Context, Result};
use fedsynth_privacy::envelope;
use fedsynth_synth::quality::{EvalOptions, evaluate};
use fedsynth_synth::report::RunRecord;
use fedsynth_synth::table::{Table, read_table};
use serde_json::Value;

use crate::EvaluateArgs;

/// What a report compares.
pub struct ReportInput<'a> {
    /// The real rows the generator was trained on.
    pub real: &'a Table,
    /// The synthetic table.
    pub synth: &'a Table,
    /// Real rows it never saw.
    pub holdout: Option<&'a Table>,
    /// Column to predict.
    pub target: Option<String>,
    /// Columns for k-anonymity.
    pub quasi_identifiers: Vec<String>,
    /// The synth run's charges and curve.
    pub run: Option<RunRecord>,
}

/// Scores and writes `DIR/metrics.json`, `DIR/report.html` and `DIR/img/`; returns the
/// metrics.
pub fn report(input: ReportInput, dir: &Path) -> Result<Value> {
    let opts = EvalOptions {
        target: input.target,
        quasi_identifiers: input.quasi_identifiers,
        ..EvalOptions::default()
    };
    let mut metrics = evaluate(input.real, input.synth, input.holdout, &opts)?;
    if let Some(run) = &input.run {
        metrics["run"] = serde_json::to_value(run)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&metrics)?;
    envelope::write_atomically(&dir.join("metrics.json"), |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })?;
    fedsynth_synth::report::write(&metrics, dir)?;
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
    let mi = &m["privacy"]["membership_inference"]["attacks"];
    if mi.is_object() {
        s.push_str(&format!(
            ", membership inference AUC {} (distance) / {} (density ratio)",
            f(&mi["dcr"]["auc"]),
            f(&mi["density_ratio"]["auc"])
        ));
    }
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
    let run = args
        .run
        .as_deref()
        .map(|p| -> Result<RunRecord> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not the run.json of a fedsynth synth report",
                    p.display()
                )
            })
        })
        .transpose()?;
    let metrics = report(
        ReportInput {
            real: &real,
            synth: &synth,
            holdout: holdout.as_ref(),
            target: args.target.clone(),
            quasi_identifiers: args.quasi_identifiers.clone(),
            run,
        },
        &args.out,
    )?;
    println!(
        "{}; wrote {} and {}",
        headline(&metrics),
        args.out.join("report.html").display(),
        args.out.join("metrics.json").display()
    );
    Ok(())
}
