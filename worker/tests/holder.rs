//! The holder's side of a job without networking: a job is charged once and only if it fits
//! the cap; a round is trained at most once (cached, re-sent as is, refused from other
//! weights); the sampled output opens only for the job's recipient.

use std::path::PathBuf;

use fedsynth_privacy::envelope::SecretKey;
use fedsynth_privacy::ledger::Ledger;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_proto::{JobSpec, SecureAggregation};
use fedsynth_worker::holder::{JobPlan, weights_digest};
use fedsynth_worker::{Holder, WorkerConfig};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(dir: &std::path::Path, cap: f64) -> WorkerConfig {
    WorkerConfig {
        coordinator: "http://127.0.0.1:1".into(),
        federation: "clinics".into(),
        name: "a".into(),
        enrolment_token: "token-0123456789abcdef".into(),
        data: repo().join("cli/tests/data/wage.csv"),
        dataset: Some("wage".into()),
        state_dir: dir.join("state"),
        cap_epsilon: cap,
        cap_delta: 1e-5,
        device: "cpu".into(),
        tls: None,
        insecure_plaintext: true,
        seed: Some(5),
    }
}

fn spec(recipient: &SecretKey) -> JobSpec {
    JobSpec {
        version: 1,
        name: "t".into(),
        federation: "clinics".into(),
        model: "tvae".into(),
        schema_toml: std::fs::read_to_string(repo().join("configs/wage.schema.toml")).unwrap(),
        epsilon: 2.0,
        delta: 1e-5,
        rounds: 2,
        local_steps: 3,
        batch_size: 100,
        learning_rate: 5e-3,
        server_optimizer: fedsynth_proto::ServerOptimizer::Adam,
        local_learning_rate: 1.0,
        clip_norm: 1.0,
        secure_aggregation: SecureAggregation::None,
        min_workers: 1,
        round_deadline_s: 10,
        enrol_deadline_s: 10,
        round_tries: 1,
        rows: 40,
        format: "csv".into(),
        recipients: vec![recipient.public().to_text()],
        init_seed: 3,
    }
}

/// Plans read back from disk may differ in the last bit of a float.
fn assert_same_plan(a: &JobPlan, b: &JobPlan) {
    assert_eq!((&a.job_id, &a.spec_digest), (&b.job_id, &b.spec_digest));
    for (x, y) in [
        (a.sampling_rate, b.sampling_rate),
        (a.noise_multiplier, b.noise_multiplier),
        (a.noisy_rows, b.noisy_rows),
        (a.epsilon, b.epsilon),
    ] {
        assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

fn spends(dir: &std::path::Path) -> usize {
    Ledger::open(dir.join("state/ledger.db"))
        .unwrap()
        .statement("clinics/a", "wage")
        .unwrap()
        .spends
        .len()
}

#[test]
fn a_job_is_charged_once_and_each_round_trained_once() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let spec = spec(&key);

    let plan = holder.accept("job-1", &spec).unwrap();
    assert!(
        plan.epsilon <= spec.epsilon + 1e-9,
        "charged {} for a job of ε {}",
        plan.epsilon,
        spec.epsilon
    );
    assert!(
        (plan.noisy_rows - 3000.0).abs() < 200.0,
        "noisy count {}",
        plan.noisy_rows
    );
    assert_eq!(spends(dir.path()), 2, "count release + DP-SGD steps");
    // Offered again (a restart): the same plan, no new charge; a reopened holder too.
    assert_same_plan(&holder.accept("job-1", &spec).unwrap(), &plan);
    let reopened = Holder::open(&config(dir.path(), 10.0)).unwrap();
    assert_same_plan(&reopened.accept("job-1", &spec).unwrap(), &plan);
    assert_eq!(spends(dir.path()), 2);

    // Round 0 from the seeded weights, then round 1 from "global" weights.
    let init = holder.initial_weights(&spec).unwrap();
    assert_eq!(
        init,
        reopened.initial_weights(&spec).unwrap(),
        "every holder starts from the same model"
    );
    let r0 = holder.train_round("job-1", &spec, 0, &init, "").unwrap();
    assert_eq!(r0.len(), init.len());
    assert_ne!(r0, init, "training moved the weights");
    assert!(r0.iter().all(|v| v.is_finite()));
    // Asked again: the cached bytes, not a second noisy update.
    assert_eq!(
        reopened.train_round("job-1", &spec, 0, &init, "").unwrap(),
        r0
    );
    assert_eq!(
        holder.cached_round("job-1", 0, "").unwrap(),
        Some(r0.clone())
    );
    // Asked to redo round 0 from other weights: refused.
    let other = weights_digest(&r0);
    assert!(holder.train_round("job-1", &spec, 0, &r0, &other).is_err());
    let r1 = holder.train_round("job-1", &spec, 1, &r0, &other).unwrap();
    // Past the last round: refused.
    assert!(
        holder
            .train_round("job-1", &spec, 2, &r1, &weights_digest(&r1))
            .is_err()
    );
    // A job never accepted here is not trained.
    assert!(holder.train_round("job-2", &spec, 0, &init, "").is_err());
    assert_eq!(spends(dir.path()), 2);

    // Sampling: ciphertext that only the recipient opens, with the table's columns.
    let sealed = holder.sample("job-1", &spec, &r1).unwrap();
    let mut plain = Vec::new();
    fedsynth_privacy::envelope::decrypt(std::io::Cursor::new(&sealed), &mut plain, &key).unwrap();
    let text = String::from_utf8(plain).unwrap();
    assert_eq!(text.lines().count(), 41);
    let other_key = SecretKey::generate(&mut SecureRng::from_seed(2));
    assert!(
        fedsynth_privacy::envelope::decrypt(
            std::io::Cursor::new(&sealed),
            &mut Vec::new(),
            &other_key
        )
        .is_err()
    );
}

#[test]
fn a_job_past_the_cap_or_with_an_incomplete_schema_is_refused_and_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::open(&config(dir.path(), 0.5)).unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let e = holder.accept("job-1", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("cap"), "{e}");
    assert_eq!(spends(dir.path()), 0);
    assert!(holder.plan("job-1").unwrap().is_none());

    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let mut s = spec(&key);
    s.schema_toml = "version = 1\n[[columns]]\nname = \"age\"\nkind = \"integer\"\n".into();
    let e = holder.accept("job-2", &s).unwrap_err().to_string();
    assert!(e.contains("public bin edges"), "{e}");
    s.schema_toml = "version = 1\n[[columns]]\nname = \"no_such_column\"\nkind = \"integer\"\nedges = [0.0, 1.0]\n".into();
    assert!(holder.accept("job-2", &s).is_err());
    assert_eq!(spends(dir.path()), 0);
}

/// Largest change of any parameter.
fn largest_move(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn holders_take_plain_sgd_steps_under_server_adam_and_adam_steps_under_fedavg() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let base = spec(&key);
    let init = holder.initial_weights(&base).unwrap();
    let moves = |name: &str, spec: JobSpec| {
        holder.accept(name, &spec).unwrap();
        let out = holder.train_round(name, &spec, 0, &init, "").unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        largest_move(&out, &init)
    };
    // Plain SGD moves by the local learning rate times a (clipped, noised) gradient: a tiny
    // rate gives a tiny move, a larger one a proportionally larger move.
    let tiny = moves(
        "sgd-tiny",
        JobSpec {
            local_learning_rate: 1e-4,
            ..base.clone()
        },
    );
    let larger = moves(
        "sgd-larger",
        JobSpec {
            local_learning_rate: 1e-2,
            ..base.clone()
        },
    );
    assert!(tiny > 0.0 && tiny < 1e-3, "{tiny}");
    assert!(larger > 20.0 * tiny, "{larger} vs {tiny}");
    // FedAvg: local Adam, whose first step moves every parameter by about its rate.
    let adam = moves(
        "fedavg",
        JobSpec {
            server_optimizer: fedsynth_proto::ServerOptimizer::Average,
            local_learning_rate: 1e-4,
            ..base.clone()
        },
    );
    let lr = base.learning_rate as f32;
    assert!(adam > 0.5 * lr && adam < 10.0 * lr, "{adam}");
    assert!(adam > 10.0 * tiny, "{adam} vs {tiny}");
}
