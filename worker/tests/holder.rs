//! The holder's side of a job without networking: a job is charged once and only if it fits
//! the cap; a round is trained at most once (cached, re-sent as is, refused from other
//! weights); the sampled output opens only for the job's recipient.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use fedsynth_privacy::envelope::SecretKey;
use fedsynth_privacy::ledger::Ledger;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_proto::{JobSpec, SecureAggregation};
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::model::TvaeConfig;
use fedsynth_synth::schema::Schema;
use fedsynth_worker::holder::{JobPlan, weights_digest};
use fedsynth_worker::{Holder, WorkerConfig};

fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
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
        ledger: Some(dir.join("state/ledger.db")),
        cap_epsilon: cap,
        cap_delta: 1e-5,
        device: "cpu".into(),
        tls: None,
        insecure_plaintext: true,
        seed: Some(5),
        // Most of these tests run plain-aggregation jobs.
        policy: fedsynth_worker::config::Policy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
    }
}

/// The model size the wage schema gives, as `fedsynth submit` computes it.
fn wage_parameters() -> u64 {
    let text = std::fs::read_to_string(repo().join("configs/wage.schema.toml")).unwrap();
    let schema = Schema::from_toml(&text).unwrap().nullable_by_default();
    TvaeConfig::new(Encoder::width_for(&schema).unwrap()).parameters() as u64
}

fn spec(recipient: &SecretKey) -> JobSpec {
    JobSpec {
        version: 1,
        name: "t".into(),
        federation: "clinics".into(),
        model: fedsynth_proto::ModelSpec::default(),
        schema_toml: std::fs::read_to_string(repo().join("configs/wage.schema.toml")).unwrap(),
        statistics_share: None,
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
        tolerated_workers: 0,
        spare_attempts: None,
        min_workers: 1,
        round_deadline_s: 10,
        enrol_deadline_s: 10,
        round_tries: 1,
        rows: 40,
        format: "csv".into(),
        recipients: vec![recipient.public().to_text()],
        init_seed: 3,
        parameters: wage_parameters(),
        max_worker_weight: 1e7,
        max_update_norm: None,
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
        .statement(fedsynth_privacy::ledger::HOST, "wage")
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
    let notes: Vec<String> = Ledger::open(dir.path().join("state/ledger.db"))
        .unwrap()
        .statement(fedsynth_privacy::ledger::HOST, "wage")
        .unwrap()
        .spends
        .into_iter()
        .map(|s| s.note)
        .collect();
    assert_eq!(notes, ["job job-1: row count", "job job-1"]);
    // q and σ follow the noisy count, never the exact one.
    assert!((plan.sampling_rate - 100.0 / plan.noisy_rows).abs() < 1e-12);
    assert_eq!(plan.noisy_rows.fract(), 0.0);
    // Offered again (a restart): the same plan, no new charge; a reopened holder too.
    assert_same_plan(&holder.accept("job-1", &spec).unwrap(), &plan);
    let init = holder.initial_weights(&spec).unwrap();
    // A second worker on the same state directory is refused while this one runs.
    let e = Holder::open(&config(dir.path(), 10.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use"), "{e}");
    drop(holder);
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    assert_same_plan(&holder.accept("job-1", &spec).unwrap(), &plan);
    assert_eq!(spends(dir.path()), 2);

    // Round 0 from the seeded weights, then round 1 from "global" weights.
    assert_eq!(
        init,
        holder.initial_weights(&spec).unwrap(),
        "every holder starts from the same model"
    );
    let r0 = holder.train_round("job-1", &spec, 0, &init, "").unwrap();
    assert_eq!(r0.len(), init.len());
    assert_ne!(r0, init, "training moved the weights");
    assert!(r0.iter().all(|v| v.is_finite()));
    // Asked again after a restart: the cached bytes, not a second noisy update.
    drop(holder);
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    assert_eq!(
        holder.train_round("job-1", &spec, 0, &init, "").unwrap(),
        r0
    );
    assert_eq!(
        holder.cached_round("job-1", 0, "").unwrap(),
        Some(r0.clone())
    );
    // Asked to redo round 0 from other weights: refused.
    let other = weights_digest(&r0);
    assert!(holder.train_round("job-1", &spec, 0, &r0, &other).is_err());
    // Global weights that are not finite or out of range are refused before any step, and
    // nothing is cached for the round.
    for poison in [f32::NAN, f32::INFINITY, 1e30] {
        let mut bad = r0.clone();
        bad[7] = poison;
        let e = holder
            .train_round("job-1", &spec, 1, &bad, &weights_digest(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight 7"), "{e}");
        assert_eq!(
            holder
                .cached_round("job-1", 1, &weights_digest(&bad))
                .unwrap(),
            None
        );
    }
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
    let (path, size, sha256) = holder.sample("job-1", &spec, &r1).unwrap();
    let sealed = std::fs::read(&path).unwrap();
    assert_eq!(size, sealed.len() as u64);
    assert_eq!(sha256, weights_digest_bytes(&sealed));
    assert!(
        !path.with_file_name("artifact.partial").exists(),
        "a partial file left behind"
    );
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
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    // Past the policy's default (half the cap per job), and past the cap itself.
    let holder = Holder::open(&config(dir.path(), 3.0)).unwrap();
    let e = holder.accept("job-1", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("policy") && e.contains("at most 1.5"), "{e}");
    drop(holder);
    let mut cfg = config(dir.path(), 1.0);
    cfg.policy.max_job_epsilon = Some(5.0);
    let holder = Holder::open(&cfg).unwrap();
    let e = holder.accept("job-1", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("cap"), "{e}");
    assert_eq!(spends(dir.path()), 0, "not even the row count is charged");
    assert!(holder.plan("job-1").unwrap().is_none());

    drop(holder);
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let mut s = spec(&key);
    s.schema_toml = "version = 1\n[[columns]]\nname = \"age\"\nkind = \"integer\"\n".into();
    let e = holder.accept("job-2", &s).unwrap_err().to_string();
    assert!(e.contains("public bin edges"), "{e}");
    s.schema_toml = "version = 1\n[[columns]]\nname = \"no_such_column\"\nkind = \"integer\"\nedges = [0.0, 1.0]\n".into();
    assert!(holder.accept("job-2", &s).is_err());
    assert_eq!(spends(dir.path()), 0);

    // Settings out of range or unknown: refused with the reason, before anything is charged.
    for (model, needle) in [
        ("kind = \"ctgan\"\npac = 0", "pac"),
        ("kind = \"tvae\"\nhidden = 0", "hidden"),
        ("kind = \"tvae\"\nlayers = 3", "layers"),
    ] {
        let mut s = spec(&key);
        s.model = fedsynth_proto::ModelSpec::Table(toml::from_str(model).unwrap());
        let e = holder.accept("job-m", &s).unwrap_err().to_string();
        assert!(e.contains(needle), "{model}: {e}");
    }
    assert_eq!(spends(dir.path()), 0);
}

#[test]
fn a_partial_schema_is_planned_and_charged_with_the_job_and_a_missing_column_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let mut s = spec(&key);
    s.secure_aggregation = SecureAggregation::Secagg;
    s.local_steps = 1;
    s.min_workers = 2;
    s.parameters = 0;
    s.rows = 0;
    // A column this holder's table lacks: refused, naming it (for the holder's log only:
    // the coordinator gets the one generic refusal), and nothing charged.
    s.schema_toml = "version = 1\n[[columns]]\nname = \"age\"\nkind = \"integer\"\n\n[[columns]]\nname = \"blood_type\"\nkind = \"categorical\"\n".into();
    let e = holder.accept("job-3", &s).unwrap_err().to_string();
    assert!(e.contains("blood_type"), "{e}");
    assert_eq!(spends(dir.path()), 0);
    // Names and kinds of columns it has: accepted; the count, the statistics and the
    // training are charged before anything is released, within the job's ε.
    s.schema_toml =
        std::fs::read_to_string(repo().join("configs/wage.partial.schema.toml")).unwrap();
    let plan = holder.accept("job-4", &s).unwrap();
    let noise = plan.statistics.expect("the statistics are planned");
    assert!(noise.sigma > 0.0 && noise.sigma_categories > 0.0);
    assert!(plan.epsilon <= 2.0 + 1e-9, "{}", plan.epsilon);
    let ledger = Ledger::open(dir.path().join("state/ledger.db")).unwrap();
    let st = ledger
        .statement(fedsynth_privacy::ledger::HOST, "wage")
        .unwrap();
    let mut notes: Vec<String> = st.spends.iter().map(|s| s.note.clone()).collect();
    notes.dedup();
    assert_eq!(
        notes,
        vec!["job job-4: row count", "job job-4: statistics", "job job-4"]
    );
    assert!(st.spent <= 2.0 + 1e-9, "{}", st.spent);
    // Until the statistics are complete, the spec trains by nothing: no model size yet.
    assert_eq!(holder.spec("job-4").unwrap().parameters, 0);
    assert!(holder.completed_schema("job-4").unwrap().is_none());
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

#[test]
fn the_policy_limits_each_job_and_its_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let other = SecretKey::generate(&mut SecureRng::from_seed(2));
    let mut cfg = config(dir.path(), 10.0);
    cfg.policy.max_job_delta = Some(1e-6);
    let holder = Holder::open(&cfg).unwrap();
    let e = holder.accept("job-d", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("δ"), "{e}");
    drop(holder);
    let mut cfg = config(dir.path(), 10.0);
    cfg.policy.allowed_recipients = vec![key.public().to_text()];
    let holder = Holder::open(&cfg).unwrap();
    let e = holder
        .accept("job-r", &spec(&other))
        .unwrap_err()
        .to_string();
    assert!(e.contains("recipient 1"), "{e}");
    drop(holder);
    let mut cfg = config(dir.path(), 10.0);
    cfg.policy.max_output_rows = Some(39);
    let holder = Holder::open(&cfg).unwrap();
    let e = holder.accept("job-n", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("output rows"), "{e}");
    drop(holder);
    let mut cfg = config(dir.path(), 10.0);
    cfg.policy.allow_plain_aggregation = false;
    let holder = Holder::open(&cfg).unwrap();
    let e = holder.accept("job-x", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("without secure aggregation"), "{e}");
    drop(holder);
    let mut cfg = config(dir.path(), 10.0);
    cfg.policy.max_parameters = Some(1000);
    let holder = Holder::open(&cfg).unwrap();
    let e = holder.accept("job-p", &spec(&key)).unwrap_err().to_string();
    assert!(e.contains("parameters"), "{e}");
    // A spec whose model size disagrees with its schema is refused too.
    drop(holder);
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let mut wrong = spec(&key);
    wrong.parameters += 1;
    let e = holder.accept("job-w", &wrong).unwrap_err().to_string();
    assert!(e.contains("parameters"), "{e}");
    assert_eq!(spends(dir.path()), 0);
    holder.accept("job-ok", &spec(&key)).unwrap();
    assert_eq!(spends(dir.path()), 2);
}

#[test]
fn workers_and_the_coordinator_bound_weights_alike() {
    assert_eq!(
        fedsynth_proto::MAX_ABS_WEIGHT,
        fedsynth_synth::model::MAX_ABS_WEIGHT
    );
}

#[test]
fn plaintext_only_reaches_a_coordinator_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 10.0);
    cfg.validate().unwrap();
    for far in [
        "http://10.0.0.7:7443",
        "http://coordinator.example:7443",
        "http://0.0.0.0:1",
    ] {
        cfg.coordinator = far.into();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
    }
}

fn weights_digest_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Secure aggregation at the holder: an attempt is answered once (the same words again for
/// the same participant set and base, a refusal for another set, so no two updates are ever
/// masked alike); every attempt is counted against those charged, and a holder whose charged
/// attempts are spent sends nothing more; a roster that swaps this worker's key, or a set
/// below the job's minimum, is refused.
#[test]
fn a_secure_attempt_is_answered_once_and_attempts_are_charged_in_advance() {
    use fedsynth_privacy::secagg::{JobKey, KeyAdvert};
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::open(&config(dir.path(), 10.0)).unwrap();
    let recipient = SecretKey::generate(&mut SecureRng::from_os());
    let mut spec = spec(&recipient);
    spec.secure_aggregation = SecureAggregation::Secagg;
    spec.local_steps = 1;
    spec.rounds = 3;
    spec.spare_attempts = Some(1);
    spec.min_workers = 2;
    spec.validate().unwrap();
    let plan = holder.accept("job-s", &spec).unwrap();
    // The charge is the Skellam mechanism over every attempt (3 rounds + 1 spare).
    let ledger = Ledger::open(dir.path().join("state/ledger.db")).unwrap();
    let st = ledger.statement("host", "wage").unwrap();
    assert!(
        st.spends
            .iter()
            .any(|s| s.event.describe().contains("Skellam")
                && s.event.describe().contains("4 steps")),
        "{:?}",
        st.spends
            .iter()
            .map(|s| s.event.describe())
            .collect::<Vec<_>>()
    );
    assert!(st.spent <= spec.epsilon + 1e-9);
    let me = "clinics/a";
    let mine = holder.advert("job-s", &spec, me, None).unwrap();
    assert!((mine.noise_multiplier - plan.noise_multiplier).abs() < 1e-12);
    let other_key = JobKey::generate();
    let other = KeyAdvert::new("job-s", "clinics/b", &other_key, 1.3, None).unwrap();
    let roster = vec![mine.clone(), other.clone()];
    let set: Vec<String> = vec![me.into(), "clinics/b".into()];
    let base = holder.initial_weights(&spec).unwrap();
    let digest = weights_digest(&base);
    let update = |round: u32, attempt: u32, set: &[String], roster: &[KeyAdvert]| {
        holder.secure_update(
            "job-s", &spec, me, round, attempt, set, roster, None, &base, &digest,
        )
    };
    let first = update(0, 7, &set, &roster).unwrap();
    assert_eq!(first.len(), base.len());
    // Asked again (a restart): the very same words.
    assert_eq!(update(0, 7, &set, &roster).unwrap(), first);
    // The same attempt for another set: refused.
    let grown = vec![me.to_string(), "clinics/b".into(), "clinics/c".into()];
    let third = KeyAdvert::new("job-s", "clinics/c", &JobKey::generate(), 1.0, None).unwrap();
    let wider = vec![mine.clone(), other.clone(), third];
    assert!(update(0, 7, &grown, &wider).is_err());
    // A roster that puts another key under this worker's name: refused.
    let mut swapped = mine.clone();
    swapped.public_key = other.public_key.clone();
    assert!(update(0, 8, &set, &[swapped, other.clone()]).is_err());
    // Too few participants: refused.
    assert!(update(0, 9, &[me.to_string()], &roster).is_err());
    // Fresh attempts: each a new update (new batch, new noise, new masks).
    let second = update(0, 10, &set, &roster).unwrap();
    assert_ne!(second, first);
    update(1, 0, &set, &roster).unwrap();
    update(2, 0, &set, &roster).unwrap();
    // Four attempts were charged (3 rounds + 1 spare) and four sent: no fifth.
    let e = update(2, 1, &set, &roster).unwrap_err().to_string();
    assert!(e.contains("spent"), "{e}");
    // A round beyond the job's is refused.
    assert!(update(3, 0, &set, &roster).is_err());
}

/// The rows of a sampled artifact, decrypted.
fn opened_rows(path: &std::path::Path, key: &SecretKey) -> Vec<String> {
    let mut plain = Vec::new();
    fedsynth_privacy::envelope::decrypt(
        std::io::Cursor::new(std::fs::read(path).unwrap()),
        &mut plain,
        key,
    )
    .unwrap();
    String::from_utf8(plain)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_holder_configured_for_wgpu_trains_and_samples_as_the_cpu_does() {
    let dir = tempfile::tempdir().unwrap();
    // A misspelt device stops the worker at start, naming the spellings.
    let mut bad = config(&dir.path().join("bad"), 10.0);
    bad.device = "gpu".into();
    let e = Holder::open(&bad).unwrap_err().to_string();
    assert!(
        e.contains("unknown device 'gpu'") && e.contains("wgpu:software"),
        "{e}"
    );

    let mut on_gpu = config(&dir.path().join("gpu"), 10.0);
    on_gpu.device = "wgpu".into();
    let gpu = match Holder::open(&on_gpu) {
        Ok(holder) => holder,
        Err(e) if std::env::var("FEDSYNTH_TEST_WGPU").as_deref() == Ok("required") => {
            panic!("FEDSYNTH_TEST_WGPU=required but: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e} (install mesa-vulkan-drivers for a software adapter)");
            return;
        }
    };
    assert!(gpu.device().starts_with("wgpu: "), "{}", gpu.device());
    eprintln!("worker device: {}", gpu.device());
    let cpu = Holder::open(&config(&dir.path().join("cpu"), 10.0)).unwrap();
    assert!(cpu.device().starts_with("cpu"), "{}", cpu.device());

    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let spec = spec(&key);
    gpu.accept("job-1", &spec).unwrap();
    cpu.accept("job-1", &spec).unwrap();
    let init = gpu.initial_weights(&spec).unwrap();
    assert_eq!(init, cpu.initial_weights(&spec).unwrap());
    // A DP round on the GPU (its noise and batches come from the operating system, so it is
    // compared with the CPU through the sampler below, not value by value).
    let r0 = gpu.train_round("job-1", &spec, 0, &init, "").unwrap();
    assert_eq!(r0.len(), init.len());
    assert!(r0.iter().all(|v| v.is_finite()));
    assert!(
        largest_move(&r0, &init) > 1e-3,
        "training moved the weights"
    );
    // The CPU holder trains its round too, so that both holders' seeded generators are at
    // the same point when they sample.
    cpu.train_round("job-1", &spec, 0, &init, "").unwrap();

    // The same weights and seed sample the same table on both devices, up to f32 rounding:
    // every field equal as text, or as numbers within 1e-3 relative (a category decoded on
    // the other side of a tie may differ; at most 1% of fields do).
    let (gpu_path, ..) = gpu.sample("job-1", &spec, &r0).unwrap();
    let (cpu_path, ..) = cpu.sample("job-1", &spec, &r0).unwrap();
    let (g, c) = (opened_rows(&gpu_path, &key), opened_rows(&cpu_path, &key));
    assert_eq!(g.len(), c.len());
    assert_eq!(g[0], c[0], "the same header");
    let (mut fields, mut differ) = (0usize, 0usize);
    for (gr, cr) in g.iter().zip(&c).skip(1) {
        for (gf, cf) in gr.split(',').zip(cr.split(',')) {
            fields += 1;
            let same = gf == cf
                || matches!((gf.parse::<f64>(), cf.parse::<f64>()),
                    (Ok(a), Ok(b)) if (a - b).abs() <= 1e-3 * b.abs().max(1.0));
            differ += usize::from(!same);
        }
    }
    eprintln!("{differ} of {fields} sampled fields differ between wgpu and cpu");
    assert!(
        fields > 100 && differ * 100 <= fields,
        "{differ} of {fields} fields differ"
    );
}

#[test]
fn a_parquet_artifact_writes_timestamps_as_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    // The holder's table: a UTC timestamp, a count and a category (the schema's columns).
    let data = dir.path().join("events.csv");
    let mut text = String::from("t,x,c\n");
    for i in 0..400u32 {
        text.push_str(&format!(
            "2024-0{}-{:02}T{:02}:{:02}:00Z,{},{}\n",
            1 + i % 9,
            1 + i % 28,
            i % 24,
            (7 * i) % 60,
            (13 * i) % 101,
            ["a", "b"][(i % 2) as usize]
        ));
    }
    std::fs::write(&data, text).unwrap();
    let mut cfg = config(dir.path(), 10.0);
    cfg.data = data;
    cfg.dataset = Some("events".into());
    let holder = Holder::open(&cfg).unwrap();
    let key = SecretKey::generate(&mut SecureRng::from_seed(1));
    let mut spec = spec(&key);
    spec.schema_toml =
        std::fs::read_to_string(repo().join("worker/tests/data/events.schema.toml")).unwrap();
    let schema = Schema::from_toml(&spec.schema_toml)
        .unwrap()
        .nullable_by_default();
    spec.parameters = TvaeConfig::new(Encoder::width_for(&schema).unwrap()).parameters() as u64;
    spec.format = "parquet".into();
    holder.accept("job-1", &spec).unwrap();
    let init = holder.initial_weights(&spec).unwrap();
    let (path, ..) = holder.sample("job-1", &spec, &init).unwrap();
    let mut plain = Vec::new();
    fedsynth_privacy::envelope::decrypt(
        std::io::Cursor::new(std::fs::read(&path).unwrap()),
        &mut plain,
        &key,
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    std::fs::write(&out, plain).unwrap();
    // The file declares the column a UTC timestamp, as `fedsynth synth` writes it.
    let declared = fedsynth_synth::table::declared_temporal(&out).unwrap();
    assert_eq!(declared.len(), 1, "{declared:?}");
    assert_eq!(declared[0].0, "t");
    let dtype = format!("{:?}", declared[0].1);
    assert!(
        dtype.contains("Datetime") && dtype.contains("UTC"),
        "{dtype}"
    );
}
