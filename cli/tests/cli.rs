//! The `fedsynth` binary as a user meets it: outputs, exit codes and one-line errors.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Output};

fn fedsynth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedsynth"))
        .args(args)
        .output()
        .expect("run fedsynth")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got {:?}", o.status);
    let err = stderr(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn budget_json_reproduces_the_reference_accountants() {
    let o = fedsynth(&[
        "budget",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["accountant"], "pld");
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(
        (eps - 1.828_243_645_585_509_1).abs() / 1.828 < 0.02,
        "{eps}"
    );

    let o = fedsynth(&[
        "budget",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["accountant"], "rdp");
    assert!((v["epsilon"].as_f64().unwrap() - 2.101_366_525_420_273).abs() / 2.1 < 0.01);
}

#[test]
fn budget_text_and_calibration() {
    let o = fedsynth(&[
        "budget",
        "--sampling-rate",
        "0.05",
        "--noise-multiplier",
        "2",
        "--steps",
        "300",
        "--delta",
        "1e-5",
    ]);
    assert!(stdout(&o).starts_with("ε = 1.92"), "{}", stdout(&o));
    let o = fedsynth(&[
        "budget",
        "--calibrate",
        "--epsilon",
        "1",
        "--sampling-rate",
        "0.01",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let sigma = v["noise_multiplier"].as_f64().unwrap();
    assert!(
        (sigma - 1.513_122_162_607_204).abs() / 1.513 < 0.01,
        "{sigma}"
    );
    assert!(v["epsilon"].as_f64().unwrap() <= 1.0);
}

#[test]
fn bad_budget_arguments_are_one_line_errors() {
    let base = [
        "budget",
        "--noise-multiplier",
        "1",
        "--steps",
        "10",
        "--delta",
        "1e-5",
    ];
    for (rate, needle) in [
        ("1.5", "sampling rate"),
        ("-0.1", "sampling rate"),
        ("nan", "sampling rate"),
        ("abc", "--sampling-rate"),
    ] {
        let mut args = base.to_vec();
        args.extend(["--sampling-rate", rate]);
        assert_one_line_error(&fedsynth(&args), needle);
    }
    assert_one_line_error(
        &fedsynth(&[
            "budget",
            "--sampling-rate",
            "0.1",
            "--noise-multiplier",
            "inf",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ]),
        "noise multiplier",
    );
    assert_one_line_error(
        &fedsynth(&[
            "budget",
            "--sampling-rate",
            "0.1",
            "--noise-multiplier",
            "1",
            "--steps",
            "0",
            "--delta",
            "1e-5",
        ]),
        "steps",
    );
    assert_one_line_error(
        &fedsynth(&[
            "budget",
            "--sampling-rate",
            "0.1",
            "--noise-multiplier",
            "1",
            "--steps",
            "10",
            "--delta",
            "2",
        ]),
        "delta",
    );
    assert_one_line_error(
        &fedsynth(&[
            "budget",
            "--sampling-rate",
            "0.1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ]),
        "noise-multiplier",
    );
    assert_one_line_error(
        &fedsynth(&[
            "budget",
            "--calibrate",
            "--epsilon",
            "-1",
            "--sampling-rate",
            "0.1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ]),
        "epsilon",
    );
    assert_one_line_error(&fedsynth(&["frobnicate"]), "unrecognized subcommand");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_encrypt_decrypt_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["alice", "bob", "eve"] {
        let o = fedsynth(&["keygen", "--out", path(&d.join(name))]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::metadata(d.join("alice.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_one_line_error(
        &fedsynth(&["keygen", "--out", path(&d.join("alice"))]),
        "already exists",
    );

    let plain = d.join("synth.csv");
    let body: String = (0..20_000)
        .map(|i| format!("{i},{},Ideal\n", i as f64 * 0.5))
        .collect();
    std::fs::write(&plain, &body).unwrap();
    let sealed = d.join("synth.fsx");
    let o = fedsynth(&[
        "encrypt",
        path(&plain),
        "--recipient",
        path(&d.join("alice.pub")),
        "--recipient",
        path(&d.join("bob.pub")),
        "--out",
        path(&sealed),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sealed_bytes = std::fs::read(&sealed).unwrap();
    assert!(
        !sealed_bytes.windows(5).any(|w| w == b"Ideal"),
        "plaintext visible in the encrypted file"
    );

    for who in ["alice", "bob"] {
        let out = d.join(format!("{who}.csv"));
        let o = fedsynth(&[
            "decrypt",
            path(&sealed),
            "--key",
            path(&d.join(format!("{who}.key"))),
            "--out",
            path(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), body);
    }
    // A key that is not a recipient: one line, and no output file.
    let out = d.join("eve.csv");
    assert_one_line_error(
        &fedsynth(&[
            "decrypt",
            path(&sealed),
            "--key",
            path(&d.join("eve.key")),
            "--out",
            path(&out),
        ]),
        "not a recipient",
    );
    assert!(!out.exists());
    // Tampered file: one line, and no output file.
    let mut bad = sealed_bytes.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x01;
    let tampered = d.join("tampered.fsx");
    std::fs::write(&tampered, bad).unwrap();
    assert_one_line_error(
        &fedsynth(&[
            "decrypt",
            path(&tampered),
            "--key",
            path(&d.join("alice.key")),
            "--out",
            path(&out),
        ]),
        "tampered",
    );
    assert!(!out.exists());
    // A secret key others can read is refused.
    std::fs::set_permissions(d.join("bob.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_one_line_error(
        &fedsynth(&[
            "decrypt",
            path(&sealed),
            "--key",
            path(&d.join("bob.key")),
            "--out",
            path(&out),
        ]),
        "too open",
    );
    // Not an encrypted file.
    assert_one_line_error(
        &fedsynth(&[
            "decrypt",
            path(&plain),
            "--key",
            path(&d.join("alice.key")),
            "--out",
            path(&out),
        ]),
        "not a fedsynth encrypted file",
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.contains("partial").then_some(name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
