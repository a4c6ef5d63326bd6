//! The job store's test suite, run against SQLite always and against PostgreSQL when
//! `FEDSYNTH_TEST_DATABASE_URL` is set (`.ci/run` starts one on loopback).

use fedsynth_coordinator::store::{JobState, Store};
use fedsynth_proto::v1 as pb;
use fedsynth_proto::{JobSpec, SecureAggregation};

fn spec(name: &str) -> JobSpec {
    JobSpec {
        version: 1,
        name: name.into(),
        federation: "clinics".into(),
        model: fedsynth_proto::ModelSpec::default(),
        schema_toml: "version = 1\ncolumns = []\n".into(),
        statistics_share: None,
        epsilon: 3.0,
        delta: 1e-6,
        rounds: 3,
        local_steps: 5,
        batch_size: 100,
        learning_rate: 5e-3,
        server_optimizer: fedsynth_proto::ServerOptimizer::Adam,
        local_learning_rate: 1.0,
        clip_norm: 1.0,
        secure_aggregation: SecureAggregation::None,
        tolerated_workers: 0,
        spare_attempts: None,
        min_workers: 2,
        round_deadline_s: 10,
        enrol_deadline_s: 10,
        round_tries: 3,
        rows: 100,
        format: "csv".into(),
        recipients: vec!["pk".into()],
        init_seed: 7,
        parameters: 1000,
        max_worker_weight: 1e7,
        max_update_norm: None,
    }
}

/// A unique prefix so that runs against one PostgreSQL database never collide.
fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn suite(store: &Store) {
    // Submitting twice with one request id gives one job.
    let request = unique("req");
    let id = unique("job");
    let (job, created) = store.submit(&id, &request, &spec("a")).await.unwrap();
    assert!(created);
    assert_eq!(job.state, JobState::Enrolling);
    let (again, created_again) = store
        .submit(&unique("job"), &request, &spec("a"))
        .await
        .unwrap();
    assert!(!created_again);
    assert_eq!(
        again.id, id,
        "a repeated request id must return the first job"
    );
    assert_eq!(store.job(&id).await.unwrap().unwrap().spec, spec("a"));

    // Answers: the first one stands.
    let (wa, wb) = (unique("clinics/a"), unique("clinics/b"));
    assert!(store.answer(&id, &wa, true, "").await.unwrap());
    assert!(
        !store
            .answer(&id, &wa, false, "changed my mind")
            .await
            .unwrap()
    );
    assert!(store.answer(&id, &wb, false, "budget").await.unwrap());
    let parts = store.participants(&id).await.unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().any(|p| p.worker_id == wa && p.accepted));
    assert!(
        parts
            .iter()
            .any(|p| p.worker_id == wb && !p.accepted && p.reason == "budget")
    );

    // A round commits once, and only while the job is running at that round.
    assert!(
        !store
            .commit_round(&id, 0, &[wa.clone()], 1.0, "k0", "d0")
            .await
            .unwrap()
    );
    store.set_state(&id, JobState::Running, "").await.unwrap();
    assert!(
        store
            .commit_round(&id, 0, &[wa.clone()], 10.0, "k1", "d1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .commit_round(&id, 0, &[wa.clone()], 10.0, "k1", "d1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .commit_round(&id, 2, &[wa.clone()], 10.0, "k1", "d1")
            .await
            .unwrap()
    );
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.round, job.weights_digest.as_str()), (1, "d1"));
    assert_eq!(store.committed_rounds(&id).await.unwrap().len(), 1);
    assert!(
        store
            .active_jobs()
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == id)
    );

    // Finishing needs the sampling state.
    assert!(!store.finish(&id, "art", 10).await.unwrap());
    store.set_state(&id, JobState::Sampling, "").await.unwrap();
    assert!(store.finish(&id, "art", 10).await.unwrap());
    let done = store.job(&id).await.unwrap().unwrap();
    assert_eq!((done.state, done.artifact_bytes), (JobState::Done, 10));
    assert!(
        !store
            .active_jobs()
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == id)
    );

    // Workers are bound to the certificate they enrolled with.
    let w = unique("clinics/w");
    assert!(
        store
            .register_worker(&w, "clinics", "cert-1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .register_worker(&w, "clinics", "cert-1")
            .await
            .unwrap()
    );
    assert!(
        store
            .register_worker(&w, "clinics", "cert-2")
            .await
            .is_err()
    );
    assert!(store.register_worker(&w, "other", "cert-1").await.is_err());
    assert_eq!(
        store.worker_cert(&w).await.unwrap().as_deref(),
        Some("cert-1")
    );

    // The audit trail is append-only, in order.
    store.audit("owner", "submit", &id, "first").await.unwrap();
    store.audit("owner", "fetch", &id, "second").await.unwrap();
    let trail = store.audit_trail(Some(&id), 0, 1000).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["round", "submit", "fetch"]);
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
    // Hash-chained: the whole trail verifies, paged or not, and each job's entries alone.
    let whole = store.audit_trail(None, 0, 1000).await.unwrap();
    let entries = |t: &[fedsynth_coordinator::store::AuditRecord]| -> Vec<pb::AuditEntry> {
        t.iter()
            .map(|a| pb::AuditEntry {
                seq: a.seq,
                at_ms: a.at_ms,
                actor: a.actor.clone(),
                action: a.action.clone(),
                job_id: a.job_id.clone(),
                detail: a.detail.clone(),
                prev_hash: a.prev_hash.clone(),
                hash: a.hash.clone(),
            })
            .collect()
    };
    assert_eq!(fedsynth_proto::verify_audit(&entries(&whole), true), Ok(()));
    assert_eq!(
        fedsynth_proto::verify_audit(&entries(&trail), false),
        Ok(())
    );
    let mut paged = store.audit_trail(None, 0, 2).await.unwrap();
    paged.extend(store.audit_trail(None, paged[1].seq, 1000).await.unwrap());
    assert_eq!(paged, whole);
    // A peer's text is bounded and cannot forge lines.
    store
        .audit(&"x".repeat(1 << 20), "denied", "", "line one\nforged line")
        .await
        .unwrap();
    let last = store
        .audit_trail(None, 0, 1000)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        last.actor.len() < 200 && last.actor.ends_with("[cut]"),
        "{}",
        last.actor.len()
    );
    assert!(!last.detail.contains('\n'));
    assert!(
        store
            .execute_raw("UPDATE audit SET detail = 'forged'")
            .await
            .is_err()
    );
    assert!(store.execute_raw("DELETE FROM audit").await.is_err());
    assert_eq!(store.audit_trail(Some(&id), 0, 1000).await.unwrap(), trail);
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = Store::open(&url).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("c.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    suite(&store).await;
    // It survives a reopen.
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.jobs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let Ok(url) = std::env::var("FEDSYNTH_TEST_DATABASE_URL") else {
        eprintln!(
            "FEDSYNTH_TEST_DATABASE_URL is not set: the PostgreSQL run of the store suite is skipped"
        );
        return;
    };
    let store = Store::open(&url).await.unwrap();
    suite(&store).await;
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error() {
    let e = Store::open("mysql://x").await.unwrap_err().to_string();
    assert!(e.contains("database_url"), "{e}");
}
