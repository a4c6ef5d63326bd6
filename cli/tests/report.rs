//! The report of `fedsynth evaluate --out` and `fedsynth synth --report`: its figures against
//! the reference evaluator, its rendering in a real browser, and its membership-inference
//! audit on a model that leaks and one that does not.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/data")
    .join(name)
}

fn fedsynth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedsynth"))
        .args(args)
        .output()
        .expect("run fedsynth")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn evaluate(real: &Path, synth: &Path, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "evaluate",
        "--real",
        s(real),
        "--synth",
        s(synth),
        "--out",
        s(out),
    ];
    args.extend(extra);
    fedsynth(&args)
}

fn metrics(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

/// Writes the rows of wage.csv whose 0-based index `keep` accepts (with the header).
fn wage_rows(out: &Path, keep: impl Fn(usize) -> bool) {
    let text = std::fs::read_to_string(data("wage.csv")).unwrap();
    let mut lines = text.lines();
    let mut body = vec![lines.next().unwrap().to_string()];
    body.extend(
        lines
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, l)| l.to_string()),
    );
    std::fs::write(out, body.join("\n") + "\n").unwrap();
}

/// The reference split of wage.csv, the fixed synthetic table and the reference figures.
fn reference(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(data("report/reference.json")).unwrap())
            .unwrap();
    let hold: std::collections::HashSet<usize> = r["holdout_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (train, holdout) = (dir.join("train.csv"), dir.join("holdout.csv"));
    wage_rows(&train, |i| !hold.contains(&i));
    wage_rows(&holdout, |i| hold.contains(&i));
    (train, holdout, r)
}

fn evaluate_reference(dir: &Path) -> (PathBuf, Value) {
    let (train, holdout, r) = reference(dir);
    let out = dir.join("report");
    let o = evaluate(
        &train,
        &data("report/wage_synth.csv"),
        &[
            "--holdout",
            s(&holdout),
            "--target",
            "health_ins",
            "--quasi-identifiers",
            "age,race,maritl",
        ],
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (out, r)
}

#[test]
fn the_reports_figures_match_the_reference_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = evaluate_reference(dir.path());
    let m = metrics(&out);
    for (ours, theirs) in [
        (&m["quality"]["column_shapes"], "shapes_own"),
        (&m["quality"]["column_pair_trends"], "pair_trends_own"),
        (&m["workload"]["synth"]["3way"]["mean_l1"], "3way_err"),
    ] {
        let (a, b) = (ours.as_f64().unwrap(), r[theirs].as_f64().unwrap());
        assert!(
            (a - b).abs() < 0.01,
            "{theirs}: fedsynth {a}, reference {b}"
        );
    }
    // The audit ran on the holdout, with its control, and k-anonymity on the named columns.
    let mi = &m["privacy"]["membership_inference"];
    for side in ["attacks", "control"] {
        for attack in ["dcr", "density_ratio"] {
            let auc = mi[side][attack]["auc"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&auc), "{side} {attack}: {auc}");
        }
    }
    assert_eq!(mi["members"], mi["non_members"]);
    let k = &m["privacy"]["k_anonymity"];
    assert_eq!(k["quasi_identifiers"].as_array().unwrap().len(), 3);
    assert!(k["synthetic"]["k"].as_u64().unwrap() >= 1);
    // Every column is drawn, and the page names the worst first.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let imgs = std::fs::read_dir(out.join("img")).unwrap().count();
    assert_eq!(html.matches("<img ").count(), imgs);
    let per_col = m["quality"]["per_column"].as_object().unwrap();
    let worst = per_col
        .iter()
        .min_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap()
        .0;
    assert!(
        html.contains(&format!("alt=\"column {worst}\"")),
        "worst column {worst}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the report fetches nothing"
    );
}

/// Chromium, when it is installed (CI installs it and sets FEDSYNTH_TEST_CHROMIUM=required).
fn chromium() -> Option<&'static str> {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(name);
        }
    }
    assert!(
        std::env::var("FEDSYNTH_TEST_CHROMIUM").as_deref() != Ok("required"),
        "FEDSYNTH_TEST_CHROMIUM=required but no chromium is installed"
    );
    eprintln!("skipped: no chromium (set FEDSYNTH_TEST_CHROMIUM=required to make this a failure)");
    None
}

fn headless(browser: &str, args: &[&str]) -> Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_image_and_no_console_error() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = evaluate_reference(dir.path());
    let url = format!("file://{}", s(&out.join("report.html")));
    let profile = dir.path().join("profile");
    let profile = format!("--user-data-dir={}", s(&profile));
    // The page checks itself once loaded: every image decoded, no script error.
    let dom = headless(
        browser,
        &[&profile, "--virtual-time-budget=10000", "--dump-dom", &url],
    );
    let page = String::from_utf8_lossy(&dom.stdout);
    let images = std::fs::read_dir(out.join("img")).unwrap().count();
    assert!(
        page.contains(&format!("data-selfcheck=\"ok {images} images\"")),
        "self-check: {:?}",
        page.split("data-selfcheck=")
            .nth(1)
            .map(|t| &t[..t.len().min(200)])
    );
    let log = stderr(&dom);
    if let Some(line) = log.lines().find(|l| l.contains("CONSOLE")) {
        panic!("console message: {line}");
    }
    assert!(!log.contains("Uncaught"), "{log}");
    // And a screenshot of it: a real picture, not an empty page.
    let shot = dir.path().join("report.png");
    let o = headless(
        browser,
        &[
            &profile,
            "--hide-scrollbars",
            "--window-size=1400,2000",
            &format!("--screenshot={}", s(&shot)),
            &url,
        ],
    );
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {}", stderr(&o)));
    assert_eq!(&png[1..4], b"PNG");
    assert!(png.len() > 50_000, "screenshot of {} bytes", png.len());
}

#[test]
fn hostile_column_names_are_text_in_the_report_never_markup() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("h.csv");
    let mut text = String::from("<script>alert(1)</script>,x\n");
    for i in 0..200 {
        text.push_str(&format!("{},{}\n", ["<b>a</b>", "\"b&c\""][i % 2], i % 7));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("r");
    let o = evaluate(&csv, &csv, &[], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<script>alert"),
        "column name written as markup"
    );
    assert!(!html.contains("<b>a</b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn bad_report_arguments_are_one_line_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wage = data("wage.csv");
    let out = dir.path().join("r");
    let o = evaluate(&wage, &wage, &["--quasi-identifiers", "age,zip"], &out);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("quasi-identifier 'zip'"), "{err}");
    assert!(!out.exists());

    let run = dir.path().join("run.json");
    std::fs::write(&run, "{\"not\": \"a run\"").unwrap();
    let o = evaluate(&wage, &wage, &["--run", s(&run)], &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not the run.json"), "{}", stderr(&o));
    assert!(!out.exists());

    // synth checks the report's columns before it spends or trains.
    let ledger = dir.path().join("ledger.db");
    let o = fedsynth(&[
        "synth",
        "--input",
        s(&wage),
        "--out",
        s(&dir.path().join("o.csv")),
        "--epsilon",
        "1",
        "--ledger",
        s(&ledger),
        "--report",
        s(&out),
        "--quasi-identifiers",
        "zip",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--quasi-identifiers zip"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists() && !ledger.exists());
}

fn auc(m: &Value, side: &str, attack: &str) -> (f64, f64) {
    let a = &m["privacy"]["membership_inference"][side][attack];
    (a["auc"].as_f64().unwrap(), a["auc_se"].as_f64().unwrap())
}

/// A 300-row table (every tenth row of wage.csv) and the other 2,700 rows as the holdout:
/// trained 300 epochs without DP the model overfits and the audit sees it; trained with DP
/// (the default plan at ε = 3) it does not.
#[test]
fn the_audit_finds_a_non_private_models_leak_and_not_a_private_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (train, holdout) = (dir.path().join("t.csv"), dir.path().join("h.csv"));
    wage_rows(&train, |i| i % 10 == 3);
    wage_rows(&holdout, |i| i % 10 != 3);
    let ledger = dir.path().join("ledger.db");
    let run = |eps: &str, extra: &[&str]| {
        let report = dir.path().join(format!("report-{eps}"));
        let out = dir.path().join(format!("out-{eps}.csv"));
        let mut args = vec![
            "synth",
            "--input",
            s(&train),
            "--epsilon",
            eps,
            "--seed",
            "1",
            "--ledger",
            s(&ledger),
            "--report",
            s(&report),
            "--holdout",
            s(&holdout),
        ];
        args.extend(["--out", s(&out)]);
        args.extend(extra);
        let o = fedsynth(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        metrics(&report)
    };
    let leaky = run(
        "inf",
        &[
            "--epochs",
            "300",
            "--batch-size",
            "30",
            "--hidden",
            "256",
            "--kl-weight",
            "0.05",
        ],
    );
    let (d, d_se) = auc(&leaky, "attacks", "dcr");
    let (r, r_se) = auc(&leaky, "attacks", "density_ratio");
    assert!(
        d.max(r) > 0.55 && (d > 0.5 + 2.0 * d_se || r > 0.5 + 2.0 * r_se),
        "no leak found at ε = ∞: distance {d} ± {d_se}, density ratio {r} ± {r_se}"
    );
    assert!(leaky["run"]["privacy"].is_null());
    assert_eq!(leaky["run"]["epochs"].as_array().unwrap().len(), 300);

    let private = run("3", &[]);
    for side in ["attacks", "control"] {
        for attack in ["dcr", "density_ratio"] {
            let (a, se) = auc(&private, side, attack);
            assert!(
                (a - 0.5).abs() < 3.0 * se + 0.02,
                "ε = 3 {side} {attack}: {a} ± {se}"
            );
        }
    }
    // The report itemises the run's charges as the ledger recorded them.
    let p = &private["run"]["privacy"];
    let charges = p["charges"].as_array().unwrap();
    assert_eq!(charges.last().unwrap()["purpose"], "DP-SGD training");
    let last = charges.last().unwrap()["epsilon_after"].as_f64().unwrap();
    assert!((last - 3.0).abs() < 0.01, "{last}");
    assert!((p["epsilon"].as_f64().unwrap() - 3.0).abs() < 0.01);
    let epochs = private["run"]["epochs"].as_array().unwrap();
    let eps_last = epochs.last().unwrap()["epsilon"].as_f64().unwrap();
    assert!((eps_last - 3.0).abs() < 0.01, "{eps_last}");
}
