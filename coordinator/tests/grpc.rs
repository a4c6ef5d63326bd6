//! The coordinator's gRPC services in process, over an ephemeral loopback port: protocol
//! version, authentication, federation isolation, validation, idempotent submission and the
//! FedAvg arithmetic of a round and the coordinator's Adam steps, with scripted workers.

use std::time::Duration;

use fedsynth_coordinator::config::{CoordinatorConfig, FederationConfig};
use fedsynth_proto::client::{Token, connect};
use fedsynth_proto::v1::federation_client::FederationClient;
use fedsynth_proto::v1::jobs_client::JobsClient;
use fedsynth_proto::v1::{self as pb, poll_response::Task};
use fedsynth_proto::{JobSpec, PROTOCOL_VERSION, SecureAggregation};
use tonic::Code;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

const OWNER: &str = "owner-token-0123456789";
const CLINICS: &str = "clinics-token-0123456789";
const OTHER: &str = "other-token-0123456789";

type Fed = FederationClient<InterceptedService<Channel, Token>>;
type Jobs = JobsClient<InterceptedService<Channel, Token>>;

async fn start(dir: &std::path::Path) -> String {
    start_with(dir, 1024, 64).await
}

async fn start_with(
    dir: &std::path::Path,
    max_connections: usize,
    max_connections_per_peer: usize,
) -> String {
    let config = CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}", dir.join("c.db").display()),
        artifacts: dir.join("artifacts").display().to_string(),
        artifact_options: Default::default(),
        owner_token: OWNER.into(),
        tls: None,
        insecure_plaintext: true,
        poll_interval_ms: 50,
        federations: vec![
            FederationConfig {
                name: "clinics".into(),
                enrolment_token: CLINICS.into(),
            },
            FederationConfig {
                name: "other".into(),
                enrolment_token: OTHER.into(),
            },
        ],
        port_file: None,
        max_connections,
        max_connections_per_peer,
    };
    config.validate().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        fedsynth_coordinator::serve(
            config,
            move |addr| {
                let _ = tx.send(addr);
            },
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    format!("http://{}", rx.await.unwrap())
}

async fn fed(url: &str, token: &str) -> Fed {
    FederationClient::with_interceptor(
        connect(url, None).await.unwrap(),
        Token::new(token).unwrap(),
    )
}

async fn jobs(url: &str, token: &str) -> Jobs {
    JobsClient::with_interceptor(
        connect(url, None).await.unwrap(),
        Token::new(token).unwrap(),
    )
}

/// The model size of [`spec`]: several chunks' worth of parameters.
const ROUND_PARAMETERS: usize = fedsynth_proto::CHUNK_BYTES / 4 * 2 + 5;

fn spec() -> JobSpec {
    JobSpec {
        version: 1,
        name: "round test".into(),
        federation: "clinics".into(),
        model: fedsynth_proto::ModelSpec::default(),
        schema_toml: "version = 1\ncolumns = []\n".into(),
        statistics_share: None,
        epsilon: 3.0,
        delta: 1e-6,
        rounds: 1,
        local_steps: 1,
        batch_size: 10,
        learning_rate: 5e-3,
        server_optimizer: fedsynth_proto::ServerOptimizer::Adam,
        local_learning_rate: 1.0,
        clip_norm: 1.0,
        secure_aggregation: SecureAggregation::None,
        tolerated_workers: 0,
        spare_attempts: None,
        min_workers: 2,
        round_deadline_s: 30,
        enrol_deadline_s: 30,
        round_tries: 2,
        rows: 10,
        format: "csv".into(),
        recipients: vec!["pk".into()],
        init_seed: 1,
        parameters: ROUND_PARAMETERS as u64,
        max_worker_weight: 1e7,
        max_update_norm: None,
    }
}

async fn register(client: &mut Fed, federation: &str, name: &str) -> String {
    client
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            federation: federation.into(),
            worker_name: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id
}

async fn poll(client: &mut Fed, me: &str) -> Task {
    client
        .poll(pb::PollRequest {
            worker_id: me.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

/// Accepts an offered job.
async fn accept(client: &mut Fed, me: &str, job: &str) -> Result<(), tonic::Status> {
    client
        .answer(pb::AnswerRequest {
            worker_id: me.into(),
            job_id: job.into(),
            accept: true,
            reason: String::new(),
        })
        .await
        .map(|_| ())
}

async fn upload(
    client: &mut Fed,
    me: &str,
    job: &str,
    values: &[f32],
    weight: f64,
) -> Result<(), tonic::Status> {
    upload_round(client, me, job, 0, "", values, weight).await
}

async fn upload_round(
    client: &mut Fed,
    me: &str,
    job: &str,
    round: u32,
    base_digest: &str,
    values: &[f32],
    weight: f64,
) -> Result<(), tonic::Status> {
    let mut messages = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(pb::UpdateHeader {
            worker_id: me.into(),
            job_id: job.into(),
            round,
            parameters: values.len() as u64,
            weight,
            base_digest: base_digest.into(),
            ..Default::default()
        })),
    }];
    messages.extend(fedsynth_proto::f32_chunks(values).map(|c| pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Data(c)),
    }));
    client
        .upload_update(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}

/// Polls until the coordinator hands out round `round` (or, for `None`, the sampling
/// task), up to ~5 s.
async fn next_task(client: &mut Fed, me: &str, round: Option<u32>) -> Task {
    for _ in 0..100 {
        let task = poll(client, me).await;
        match (&task, round) {
            (Task::Train(t), Some(r)) if t.round == r => return task,
            (Task::Sample(_), None) => return task,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no round was opened")
}

async fn global_weights(client: &mut Fed, me: &str, job: &str) -> Vec<f32> {
    let mut stream = client
        .download_weights(pb::DownloadWeightsRequest {
            worker_id: me.into(),
            job_id: job.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(c) = stream.message().await.unwrap() {
        fedsynth_proto::extend_f32(&mut got, &c.data).unwrap();
    }
    got
}

#[tokio::test]
async fn a_flood_of_refused_calls_cannot_flood_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let mut bad = fed(&url, "not-a-token-at-all-000").await;
    let huge = "w".repeat(1 << 20);
    for _ in 0..(fedsynth_coordinator::server::DENIALS_PER_MINUTE + 30) {
        let e = bad
            .poll(pb::PollRequest {
                worker_id: huge.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let mut j = jobs(&url, OWNER).await;
    let trail = audit_trail(&mut j, "").await;
    let denied: Vec<_> = trail.iter().filter(|e| e.action == "denied").collect();
    assert_eq!(
        denied.len(),
        fedsynth_coordinator::server::DENIALS_PER_MINUTE as usize
    );
    // The raw id is never written: neither in full nor as the actor.
    assert!(
        trail
            .iter()
            .all(|e| e.actor.len() < 200 && e.detail.len() < 1200)
    );
    assert_eq!(fedsynth_proto::verify_audit(&trail, true), Ok(()));
}

#[tokio::test]
async fn refusals_carry_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;

    // Another protocol version: FAILED_PRECONDITION.
    let mut a = fed(&url, CLINICS).await;
    let e = a
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION + 1,
            federation: "clinics".into(),
            worker_name: "a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("protocol version"));

    // Unknown enrolment token, or another federation's: UNAUTHENTICATED / PERMISSION_DENIED.
    let mut bad = fed(&url, "not-a-token-at-all-000").await;
    let e = bad
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            federation: "clinics".into(),
            worker_name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut o = fed(&url, OTHER).await;
    let e = o
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            federation: "clinics".into(),
            worker_name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A worker id of another federation.
    let e = o
        .poll(pb::PollRequest {
            worker_id: "clinics/a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The job CLI without or with a wrong token.
    let mut j = jobs(&url, "wrong-owner-token-000").await;
    assert_eq!(
        j.list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut j = jobs(&url, OWNER).await;

    // Malformed specs: INVALID_ARGUMENT; an oversized message is refused and the server lives on.
    let e = j
        .submit(pb::SubmitRequest {
            client_request_id: "r0".into(),
            spec_toml: "rounds = -1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut s = spec();
    s.federation = "nowhere".into();
    let e = j
        .submit(pb::SubmitRequest {
            client_request_id: "r0".into(),
            spec_toml: s.to_toml(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let huge = "x".repeat(5 << 20);
    let e = j
        .submit(pb::SubmitRequest {
            client_request_id: "r0".into(),
            spec_toml: huge,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal | Code::Unknown
        ),
        "{e:?}"
    );
    assert!(
        j.list_jobs(pb::ListJobsRequest {}).await.is_ok(),
        "the coordinator must survive an oversized message"
    );

    // Same request id twice: one job.
    let first = j
        .submit(pb::SubmitRequest {
            client_request_id: "same".into(),
            spec_toml: spec().to_toml(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = j
        .submit(pb::SubmitRequest {
            client_request_id: "same".into(),
            spec_toml: spec().to_toml(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.job_id, second.job_id);
    assert_eq!(
        j.list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );

    // A worker of another federation neither sees nor joins the job.
    let other = register(&mut o, "other", "z").await;
    assert!(matches!(poll(&mut o, &other).await, Task::Idle(_)));
    let e = accept(&mut o, &other, &first.job_id).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Every refusal is in the audit trail.
    let trail = audit_trail(&mut j, "").await;
    assert_eq!(fedsynth_proto::verify_audit(&trail, true), Ok(()));
    assert!(
        trail.iter().filter(|e| e.action == "denied").count() >= 4,
        "{trail:?}"
    );
}

#[tokio::test]
async fn a_round_is_the_weighted_average_of_the_updates() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let mut j = jobs(&url, OWNER).await;
    let job = j
        .submit(pb::SubmitRequest {
            client_request_id: "r".into(),
            spec_toml: spec().to_toml(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;

    let (mut a, mut b) = (fed(&url, CLINICS).await, fed(&url, CLINICS).await);
    let (wa, wb) = (
        register(&mut a, "clinics", "a").await,
        register(&mut b, "clinics", "b").await,
    );
    for (client, me) in [(&mut a, &wa), (&mut b, &wb)] {
        let Task::Offer(offer) = poll(client, me).await else {
            panic!("expected an offer")
        };
        assert_eq!(JobSpec::from_toml(&offer.spec_toml).unwrap(), spec());
        accept(client, me, &job).await.unwrap();
    }
    // Both accepted: the driver opens round 0.
    let Task::Train(train) = next_task(&mut a, &wa, Some(0)).await else {
        panic!("expected a round")
    };
    assert_eq!(
        (
            train.round,
            train.stage.as_str(),
            train.base_digest.as_str()
        ),
        (0, "collect", "")
    );

    // Several chunks' worth of parameters, two workers with weights 1 and 3.
    let n = ROUND_PARAMETERS;
    let va: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let vb: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32).collect();
    // Bad updates first: wrong length, NaN, a second header.
    let e = upload(&mut a, &wa, &job, &[f32::NAN; 4], 1.0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // The first upload does not get to set the model's size: the spec does.
    let e = upload(&mut a, &wa, &job, &va[..n - 1], 1.0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A weight above the spec's bound, or a value beyond ±1e4, is refused.
    let e = upload(&mut a, &wa, &job, &va, 1e8).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut huge = va.clone();
    huge[n / 2] = 2e4;
    let e = upload(&mut a, &wa, &job, &huge, 1.0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = upload(&mut a, &wa, &job, &va, f64::INFINITY)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    upload(&mut a, &wa, &job, &va, 1.0).await.unwrap();
    let e = upload(&mut a, &wa, &job, &va, 1.0).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "a second update for one round is refused"
    );
    let e = upload(&mut b, &wb, &job, &vb[..n - 1], 3.0)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "the model size is fixed by the spec"
    );
    upload(&mut b, &wb, &job, &vb, 3.0).await.unwrap();

    // The round commits; the job moves to sampling with one of them designated.
    let mut state = String::new();
    for _ in 0..50 {
        let s = j
            .get_job(pb::GetJobRequest {
                job_id: job.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        state = s.state.clone();
        if s.state == "sampling" {
            assert_eq!(s.round, 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "sampling");
    let mut sampler = None;
    for _ in 0..50 {
        for (client, me) in [(&mut a, &wa), (&mut b, &wb)] {
            if let Task::Sample(s) = poll(client, me).await {
                sampler = Some((me.clone(), s));
            }
        }
        if sampler.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (me, sample) = sampler.expect("a sampler is designated");
    let mut client = fed(&url, CLINICS).await;
    let got = global_weights(&mut client, &me, &job).await;
    assert_eq!(got.len(), n);
    for i in 0..n {
        let want = (va[i] + 3.0 * vb[i]) / 4.0;
        assert!(
            (got[i] - want).abs() < 1e-5,
            "parameter {i}: {} vs {want}",
            got[i]
        );
    }
    assert_eq!(
        fedsynth_coordinator::artifacts::weights_digest(&got),
        sample.base_digest
    );

    // An artifact whose bytes do not match its header is refused; then a good one lands.
    let body = b"ciphertext".to_vec();
    let send = |sha: String| {
        vec![
            pb::ArtifactChunk {
                part: Some(pb::artifact_chunk::Part::Header(pb::ArtifactHeader {
                    worker_id: me.clone(),
                    job_id: job.clone(),
                    size: body.len() as u64,
                    sha256: sha,
                    signature: "{\"stored\": \"as sent\"}".into(),
                })),
            },
            pb::ArtifactChunk {
                part: Some(pb::artifact_chunk::Part::Data(body.clone())),
            },
        ]
    };
    let e = client
        .upload_artifact(tokio_stream::iter(send("0".repeat(64))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = j
        .fetch_artifact(pb::FetchArtifactRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    use sha2::Digest;
    client
        .upload_artifact(tokio_stream::iter(send(hex::encode(sha2::Sha256::digest(
            &body,
        )))))
        .await
        .unwrap();
    let mut stream = j
        .fetch_artifact(pb::FetchArtifactRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut fetched = Vec::new();
    while let Some(c) = stream.message().await.unwrap() {
        fetched.extend(c.data);
    }
    assert_eq!(fetched, body);
    // The worker's signature is kept beside it, as sent (the owner checks it).
    let sig = j
        .fetch_signature(pb::FetchArtifactRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .text;
    assert_eq!(sig, "{\"stored\": \"as sent\"}");
    let trail = audit_trail(&mut j, &job).await;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    for needed in [
        "submit", "accept", "start", "round", "sampler", "artifact", "fetch",
    ] {
        assert!(
            actions.contains(&needed),
            "audit lacks {needed}: {actions:?}"
        );
    }
}

/// The audit trail of `job` ("" for all), oldest first.
async fn audit_trail(j: &mut Jobs, job: &str) -> Vec<pb::AuditEntry> {
    j.list_audit(pb::ListAuditRequest {
        job_id: job.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .entries
}

/// Submits `spec` and has one worker, clinics/a, accept it: (job id, its client, its id).
async fn one_worker_job(
    j: &mut Jobs,
    url: &str,
    request_id: &str,
    spec: &JobSpec,
) -> (String, Fed, String) {
    let job = j
        .submit(pb::SubmitRequest {
            client_request_id: request_id.into(),
            spec_toml: spec.to_toml(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut a = fed(url, CLINICS).await;
    let wa = register(&mut a, "clinics", "a").await;
    let Task::Offer(_) = poll(&mut a, &wa).await else {
        panic!("expected an offer")
    };
    accept(&mut a, &wa, &job).await.unwrap();
    (job, a, wa)
}

#[tokio::test]
async fn with_server_adam_the_first_round_averages_and_later_rounds_take_adam_steps() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let mut j = jobs(&url, OWNER).await;
    let spec = JobSpec {
        rounds: 3,
        min_workers: 1,
        learning_rate: 0.01,
        parameters: 1000,
        ..spec()
    };
    let (job, mut a, wa) = one_worker_job(&mut j, &url, "adam", &spec).await;

    let n = 1000;
    // Round 0 has no global weights: its average is committed as they are.
    let Task::Train(t0) = next_task(&mut a, &wa, Some(0)).await else {
        panic!("expected round 0")
    };
    assert_eq!((t0.round, t0.base_digest.as_str()), (0, ""));
    let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    upload_round(&mut a, &wa, &job, 0, "", &w0, 2.0)
        .await
        .unwrap();
    let Task::Train(t1) = next_task(&mut a, &wa, Some(1)).await else {
        panic!("expected round 1")
    };
    assert_eq!(t1.round, 1);
    assert_eq!(global_weights(&mut a, &wa, &job).await, w0);

    // Round 1: the holder moved each parameter by ±(0.001..0.1); Adam's first step moves
    // the global weights by the learning rate in the direction of the move, whatever its size.
    let moved: Vec<f32> = (0..n)
        .map(|i| w0[i] + if i % 3 == 0 { -1.0 } else { 1.0 } * (0.001 + 0.0001 * i as f32))
        .collect();
    upload_round(&mut a, &wa, &job, 1, &t1.base_digest, &moved, 2.0)
        .await
        .unwrap();
    let Task::Train(t2) = next_task(&mut a, &wa, Some(2)).await else {
        panic!("expected round 2")
    };
    let w1 = global_weights(&mut a, &wa, &job).await;
    for i in 0..n {
        let want = w0[i] + 0.01 * (moved[i] - w0[i]).signum();
        assert!(
            (w1[i] - want).abs() < 1e-5,
            "parameter {i}: {} vs {want}",
            w1[i]
        );
    }

    // Round 2 continues from the stored moments: the same two steps of Adam, replayed here.
    let moved2: Vec<f32> = w1
        .iter()
        .enumerate()
        .map(|(i, w)| w + 0.02 * (i as f32 * 0.11).cos())
        .collect();
    upload_round(&mut a, &wa, &job, 2, &t2.base_digest, &moved2, 2.0)
        .await
        .unwrap();
    let Task::Sample(_) = next_task(&mut a, &wa, None).await else {
        panic!("expected sampling after the last round")
    };
    let w2 = global_weights(&mut a, &wa, &job).await;
    let mut adam = fedsynth_coordinator::optimizer::ServerAdam::new(n);
    let mut want = w0.clone();
    adam.step(&mut want, &moved, 0.01).unwrap();
    assert_eq!(want, w1);
    adam.step(&mut want, &moved2, 0.01).unwrap();
    assert_eq!(want, w2);
    assert_ne!(w2, moved2, "not the plain average");
    // The moments are stored beside the latest weights; superseded files are deleted.
    let mut files: Vec<String> =
        std::fs::read_dir(dir.path().join(format!("artifacts/jobs/{job}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    files.sort();
    assert_eq!(files, ["adam-000003.bin", "weights-000003.f32"]);
    let stored = std::fs::read(
        dir.path()
            .join(format!("artifacts/jobs/{job}/adam-000003.bin")),
    )
    .unwrap();
    assert_eq!(
        fedsynth_coordinator::optimizer::ServerAdam::from_bytes(&stored).unwrap(),
        adam
    );
}

#[tokio::test]
async fn a_move_longer_than_the_bound_is_scaled_back_before_it_is_averaged() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let mut j = jobs(&url, OWNER).await;
    let n = 1000;
    let spec = JobSpec {
        rounds: 2,
        min_workers: 1,
        parameters: n as u64,
        server_optimizer: fedsynth_proto::ServerOptimizer::Average,
        max_update_norm: Some(1.0),
        ..spec()
    };
    let (job, mut a, wa) = one_worker_job(&mut j, &url, "bounded", &spec).await;
    let Task::Train(_) = next_task(&mut a, &wa, Some(0)).await else {
        panic!("expected round 0")
    };
    let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    upload_round(&mut a, &wa, &job, 0, "", &w0, 2.0)
        .await
        .unwrap();
    let Task::Train(t1) = next_task(&mut a, &wa, Some(1)).await else {
        panic!("expected round 1")
    };
    // A move of length 10 (each of the 1,000 values by ±10/√1000) comes back as length 1.
    let step = 10.0 / (n as f32).sqrt();
    let moved: Vec<f32> = (0..n)
        .map(|i| w0[i] + if i % 2 == 0 { step } else { -step })
        .collect();
    upload_round(&mut a, &wa, &job, 1, &t1.base_digest, &moved, 2.0)
        .await
        .unwrap();
    let Task::Sample(_) = next_task(&mut a, &wa, None).await else {
        panic!("expected sampling")
    };
    let got = global_weights(&mut a, &wa, &job).await;
    let norm: f64 = got
        .iter()
        .zip(&w0)
        .map(|(g, w)| f64::from(g - w).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "moved by {norm}");
    for i in [0, 1, 500, 999] {
        let want = w0[i] + (moved[i] - w0[i]) / 10.0;
        assert!((got[i] - want).abs() < 1e-5, "{i}: {} vs {want}", got[i]);
    }
    let trail = audit_trail(&mut j, &job).await;
    assert!(trail.iter().any(|e| e.action == "clipped"), "{trail:?}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_with(dir.path(), 2, 2).await;
    let addr = url.trim_start_matches("http://").to_string();
    // Two idle connections that never speak hold both permits.
    let held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _held2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let call = || async {
        let mut j = jobs(&url, OWNER).await;
        j.list_jobs(pb::ListJobsRequest {}).await
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), call())
            .await
            .is_err(),
        "a third connection was served"
    );
    drop(held);
    let served = tokio::time::timeout(Duration::from_secs(10), call()).await;
    assert!(matches!(served, Ok(Ok(_))), "{served:?}");
}

#[tokio::test]
async fn one_peer_cannot_hold_every_connection() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let url = start_with(dir.path(), 100, 2).await;
    let addr = url.trim_start_matches("http://").to_string();
    // Two idle connections from this address take its two slots; a third from it is
    // closed at once (while the server has 98 permits left for other peers).
    let held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _held2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the third connection stayed open: {closed:?}"
    );
    // Once one closes, the peer is served again.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let served = tokio::time::timeout(Duration::from_secs(2), async {
            let channel = connect(&url, None).await.map_err(|e| e.to_string())?;
            let mut j = JobsClient::with_interceptor(channel, Token::new(OWNER).unwrap());
            j.list_jobs(pb::ListJobsRequest {})
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        if matches!(served, Ok(Ok(_))) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{served:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads ring words (secure aggregation) for `attempt`.
async fn upload_ring(
    client: &mut Fed,
    me: &str,
    job: &str,
    task: &pb::TrainRound,
    attempt: u32,
    words: &[u32],
) -> Result<(), tonic::Status> {
    let mut messages = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(pb::UpdateHeader {
            worker_id: me.into(),
            job_id: job.into(),
            round: task.round,
            parameters: words.len() as u64,
            weight: 1.0,
            base_digest: task.base_digest.clone(),
            attempt,
            encoding: "ring32".into(),
        })),
    }];
    messages.extend(
        words
            .chunks(fedsynth_proto::CHUNK_BYTES / 4)
            .map(|c| pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Data(
                    c.iter().flat_map(|w| w.to_le_bytes()).collect(),
                )),
            }),
    );
    client
        .upload_update(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}

/// Publishes a key advert (its text) for `me` in `job`.
async fn publish(
    c: &mut Fed,
    me: &str,
    job: &str,
    advert: &str,
) -> Result<tonic::Response<pb::UploadAck>, tonic::Status> {
    c.publish_key(pb::PublishKeyRequest {
        worker_id: me.into(),
        job_id: job.into(),
        advert: advert.into(),
    })
    .await
}

/// Polls until the worker is asked for `stage` (up to ~10 s).
async fn stage_task(client: &mut Fed, me: &str, stage: &str) -> pb::TrainRound {
    for _ in 0..200 {
        if let Task::Train(t) = poll(client, me).await
            && t.stage == stage
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{me} was never asked for {stage}")
}

/// Submits a secure-aggregation `spec` and has clinics/a, b and c each take the offer and
/// accept it (all offered before any accepts, so the job waits for the three).
async fn secure_job(
    url: &str,
    spec: &JobSpec,
    request: &str,
) -> (Jobs, String, Vec<(Fed, String)>) {
    let mut j = jobs(url, OWNER).await;
    let job = j
        .submit(pb::SubmitRequest {
            client_request_id: request.into(),
            spec_toml: spec.to_toml(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let mut c = fed(url, CLINICS).await;
        let me = register(&mut c, "clinics", name).await;
        let Task::Offer(_) = poll(&mut c, &me).await else {
            panic!("expected an offer")
        };
        clients.push((c, me));
    }
    for (c, me) in &mut clients {
        accept(c, me, &job).await.unwrap();
    }
    (j, job, clients)
}

/// Secure aggregation through the real services: keys published once (another key or
/// another worker's name refused), the seeded weights once, masked uploads only (plain
/// ones, a wrong attempt, a replay and a non-participant refused), the sum decoded only
/// when complete — and a worker that goes silent voids the attempt, which the survivors
/// retry under a new attempt number.
#[tokio::test]
async fn a_secure_round_takes_only_masked_updates_and_a_dropout_voids_the_attempt() {
    use fedsynth_privacy::secagg::{self, JobKey, KeyAdvert, Pairs};
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let spec = JobSpec {
        secure_aggregation: SecureAggregation::Secagg,
        rounds: 2,
        round_deadline_s: 2,
        round_tries: 8,
        ..spec()
    };
    let (mut j, job, joined) = secure_job(&url, &spec, "s").await;
    let mut clients: Vec<(Fed, String, JobKey)> = joined
        .into_iter()
        .map(|(c, me)| (c, me, JobKey::generate()))
        .collect();
    for (c, me, key) in &mut clients {
        stage_task(c, me, "advertise_keys").await;
        // An advert in another worker's name is refused.
        let other = KeyAdvert::new(&job, "clinics/zz", key, 1.0, None).unwrap();
        let e = publish(c, me, &job, &other.to_text()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let advert = KeyAdvert::new(&job, me, key, 1.0, None).unwrap();
        publish(c, me, &job, &advert.to_text()).await.unwrap();
        // The same advert again is fine; another key is refused.
        publish(c, me, &job, &advert.to_text()).await.unwrap();
        let swapped = KeyAdvert::new(&job, me, &JobKey::generate(), 1.0, None).unwrap();
        let e = publish(c, me, &job, &swapped.to_text()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    // The seeded initial weights, once.
    let n = ROUND_PARAMETERS;
    let me0 = clients[0].1.clone();
    let t = stage_task(&mut clients[0].0, &me0, "initial_weights").await;
    let e = upload_ring(&mut clients[0].0, &me0, &job, &t, 0, &vec![0; n])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    upload(&mut clients[0].0, &me0, &job, &vec![0.0; n], 1.0)
        .await
        .unwrap();
    let me1 = clients[1].1.clone();
    // A second copy is refused: the stage has moved on (or, if the driver has not yet
    // ticked, the job has its weights already).
    let e = upload(&mut clients[1].0, &me1, &job, &vec![0.0; n], 1.0)
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument),
        "{e:?}"
    );

    // Round 0 with all three: real masks over known sums.
    let adverts: Vec<KeyAdvert> = clients[0]
        .0
        .fetch_keys(pb::FetchKeysRequest {
            worker_id: me0.clone(),
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .adverts
        .iter()
        .map(|t| KeyAdvert::from_text(t).unwrap())
        .collect();
    assert_eq!(adverts.len(), 3);
    let pairs: Vec<Pairs> = clients
        .iter()
        .map(|(_, me, key)| Pairs::agree(&job, me, key, &adverts).unwrap())
        .collect();
    let scale = secagg::ring_scale(spec.clip_norm, f64::from(spec.batch_size), 3, 1.0);
    let sums: Vec<Vec<f32>> = (0..3)
        .map(|k| (0..n).map(|i| ((i * 7 + k) % 11) as f32 - 5.0).collect())
        .collect();
    let mut rng = fedsynth_privacy::rng::SecureRng::from_seed(3);
    let mut round0 = Vec::new();
    for (k, (c, me, _)) in clients.iter_mut().enumerate() {
        let t = stage_task(c, me, "collect").await;
        assert_eq!(t.participants.len(), 3);
        let mut words = secagg::discretise(&sums[k], scale, &mut rng);
        secagg::add_words(
            &mut words,
            &pairs[k]
                .net_mask(n, t.round, t.attempt, &t.participants)
                .unwrap(),
        );
        if k == 0 {
            // Plain weights and a wrong attempt are refused.
            let e = upload(c, me, &job, &vec![0.0; n], 1.0).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            let e = upload_ring(c, me, &job, &t, t.attempt + 1, &words)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        }
        round0.push((t, words));
    }
    for (k, (c, me, _)) in clients.iter_mut().enumerate() {
        let (t, words) = &round0[k];
        upload_ring(c, me, &job, t, t.attempt, words).await.unwrap();
    }
    // A replay of an accepted upload is refused.
    let (t0, w0) = &round0[0];
    let e = upload_ring(&mut clients[0].0, &me0, &job, t0, t0.attempt, w0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // The committed step: Adam's first step from zero moves each weight by the learning
    // rate against the sign of the mean gradient Σ sums / (batch · 3).
    let t1 = stage_task(&mut clients[0].0, &me0, "collect").await;
    assert_eq!(t1.round, 1);
    let weights = global_weights(&mut clients[0].0, &me0, &job).await;
    for i in 0..n {
        let g: f32 = sums.iter().map(|s| s[i]).sum();
        let lr = spec.learning_rate as f32;
        if g == 0.0 {
            // Only the rounding's residue (a few ring units) is left: a step of at most lr.
            assert!(weights[i].abs() <= lr * 1.001, "{i}: {}", weights[i]);
        } else {
            let want = -g.signum() * lr;
            assert!(
                (weights[i] - want).abs() < 1e-4,
                "{i}: {} vs {want}",
                weights[i]
            );
        }
    }

    // Round 1: c goes silent. a and b deliver; the attempt is void, never a partial sum.
    let first_attempt = t1.attempt;
    for k in 0..2 {
        let (c, me, _) = &mut clients[k];
        let t = stage_task(c, me, "collect").await;
        let mut words = vec![0u32; n];
        secagg::add_words(
            &mut words,
            &pairs[k]
                .net_mask(n, t.round, t.attempt, &t.participants)
                .unwrap(),
        );
        upload_ring(c, me, &job, &t, t.attempt, &words)
            .await
            .unwrap();
    }
    // The survivors are asked again: another attempt, without c.
    let mut retry = None;
    for _ in 0..300 {
        let t = stage_task(&mut clients[0].0, &me0, "collect").await;
        let _ = poll(&mut clients[1].0, &me1).await;
        if t.attempt != first_attempt && t.participants.len() == 2 {
            retry = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retry = retry.expect("a retry without the silent worker");
    assert_eq!(retry.round, 1);
    let audit = audit_trail(&mut j, &job).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "retry" && e.detail.contains("attempt void")),
        "{audit:?}"
    );
    // The silent worker is no participant of the retry.
    let mec = clients[2].1.clone();
    let e = upload_ring(
        &mut clients[2].0,
        &mec,
        &job,
        &retry,
        retry.attempt,
        &vec![0; n],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    for k in 0..2 {
        let (c, me, _) = &mut clients[k];
        let words = pairs[k]
            .net_mask(n, retry.round, retry.attempt, &retry.participants)
            .unwrap();
        upload_ring(c, me, &job, &retry, retry.attempt, &words)
            .await
            .unwrap();
    }
    for _ in 0..100 {
        let s = j
            .get_job(pb::GetJobRequest {
                job_id: job.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.round == 2 {
            assert!(s.aggregation.starts_with("secure aggregation"), "{s:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("round 1 never committed with the survivors");
}

/// The key stage closes at its deadline with the workers that published (a malformed advert
/// refused, the silent worker left out of the roster and of every round); with too few live
/// workers left, the job stops cleanly, saying why.
#[tokio::test]
async fn a_roster_forms_without_a_silent_worker_and_too_few_survivors_stop_the_job() {
    use fedsynth_privacy::secagg::{JobKey, KeyAdvert};
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let spec = JobSpec {
        secure_aggregation: SecureAggregation::Secagg,
        rounds: 3,
        round_deadline_s: 1,
        round_tries: 3,
        ..spec()
    };
    let (mut j, job, mut clients) = secure_job(&url, &spec, "k").await;
    // a and b publish; c polls but never publishes. A malformed advert is refused.
    for (c, me) in clients.iter_mut().take(2) {
        stage_task(c, me, "advertise_keys").await;
        let e = publish(c, me, &job, "{not json").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let advert = KeyAdvert::new(&job, me, &JobKey::generate(), 1.0, None).unwrap();
        publish(c, me, &job, &advert.to_text()).await.unwrap();
    }
    let (mut cc, mec) = (clients[2].0.clone(), clients[2].1.clone());
    stage_task(&mut cc, &mec, "advertise_keys").await;
    // At the deadline the roster is a and b: the initial weights are asked of them only.
    let me0 = clients[0].1.clone();
    stage_task(&mut clients[0].0, &me0, "initial_weights").await;
    let e = cc
        .fetch_keys(pb::FetchKeysRequest {
            worker_id: mec.clone(),
            job_id: job.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    upload(
        &mut clients[0].0,
        &me0,
        &job,
        &vec![0.0; ROUND_PARAMETERS],
        1.0,
    )
    .await
    .unwrap();
    let t = stage_task(&mut clients[0].0, &me0, "collect").await;
    assert_eq!(
        t.participants,
        vec![clients[0].1.clone(), clients[1].1.clone()]
    );
    let Task::Idle(_) = poll(&mut cc, &mec).await else {
        panic!("the worker outside the roster was asked for something")
    };
    // Only a keeps polling: fewer live workers than min_workers, every try void, the job
    // fails with the reason.
    for _ in 0..200 {
        let _ = poll(&mut clients[0].0, &me0).await;
        let s = j
            .get_job(pb::GetJobRequest {
                job_id: job.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.state == "failed" {
            assert!(s.reason.contains("giving up"), "{}", s.reason);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job did not stop with too few workers");
}

/// A job with a partial schema through the real services: every worker of the roster
/// uploads each statistics wave once (another upload refused, the same one acknowledged,
/// a closed wave refused); the wave's sum and union are published to the roster only; the
/// schema the workers all completed is stored, shown by status and sizes the model.
#[tokio::test]
async fn a_partial_schema_is_completed_in_waves_and_the_agreed_schema_sizes_the_model() {
    use fedsynth_privacy::secagg::{JobKey, KeyAdvert};
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path()).await;
    let spec = JobSpec {
        secure_aggregation: SecureAggregation::Secagg,
        schema_toml: "version = 1\n[[columns]]\nname = \"x\"\nkind = \"integer\"\n".into(),
        parameters: 0,
        rows: 0,
        rounds: 1,
        round_deadline_s: 5,
        round_tries: 8,
        ..spec()
    };
    spec.validate().unwrap();
    let (mut j, job, mut clients) = secure_job(&url, &spec, "partial").await;
    for (c, me) in &mut clients {
        stage_task(c, me, "advertise_keys").await;
        let advert = KeyAdvert::new(&job, me, &JobKey::generate(), 1.0, None).unwrap();
        publish(c, me, &job, &advert.to_text()).await.unwrap();
    }
    let words = |w: &[u32]| -> Vec<u8> { w.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let stats =
        |me: &str, wave: u32, w: &[u32], names: &[&str], schema: &str| pb::StatisticsUpload {
            worker_id: me.into(),
            job_id: job.clone(),
            wave,
            words: words(w),
            released: names.iter().map(|s| s.to_string()).collect(),
            schema_toml: schema.into(),
            parameters: if schema.is_empty() { 0 } else { 100 },
        };
    // Wave 0.
    for (k, (c, me)) in clients.iter_mut().enumerate() {
        let t = stage_task(c, me, "statistics").await;
        assert_eq!(t.round, 0);
        assert_eq!(t.participants.len(), 3);
        let base = 10 * k as u32;
        let name = format!("1:x{k}");
        c.upload_statistics(stats(me, 0, &[base, u32::MAX], &[&name, "1:xs"], ""))
            .await
            .unwrap();
        // Before the wave closes (the last upload closes it): the same upload again is
        // acknowledged; another one, or another wave, refused.
        if k < 2 {
            c.upload_statistics(stats(me, 0, &[base, u32::MAX], &[&name, "1:xs"], ""))
                .await
                .unwrap();
            let e = c
                .upload_statistics(stats(me, 0, &[base + 1, 0], &[], ""))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            let e = c
                .upload_statistics(stats(me, 1, &[base, 0], &[], ""))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        }
    }
    // A worker outside the job's roster reads nothing.
    let mut outsider = fed(&url, CLINICS).await;
    let stranger = register(&mut outsider, "clinics", "d").await;
    let e = outsider
        .fetch_statistics(pb::FetchStatisticsRequest {
            worker_id: stranger.clone(),
            job_id: job.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Wave 1 opens with wave 0's ring sum and union published.
    let (c0, me0) = &mut clients[0];
    let t = stage_task(c0, me0, "statistics").await;
    assert_eq!(t.round, 1);
    let transcript = c0
        .fetch_statistics(pb::FetchStatisticsRequest {
            worker_id: me0.clone(),
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(transcript.waves.len(), 1);
    assert_eq!(transcript.waves[0].sums, words(&[30, u32::MAX - 2]));
    assert_eq!(
        transcript.waves[0].released,
        vec!["1:x0", "1:x1", "1:x2", "1:xs"]
    );
    // Every worker sends the same completed schema: it is stored and sizes the model.
    let schema = "version = 1\n# completed\n";
    for (c, me) in clients.iter_mut() {
        stage_task(c, me, "statistics").await;
        c.upload_statistics(stats(me, 1, &[], &[], schema))
            .await
            .unwrap();
    }
    let (c0, me0) = &mut clients[0];
    stage_task(c0, me0, "initial_weights").await;
    let status = j
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.schema_toml, schema);
    // Weights of another size than the completed schema's model are refused.
    let e = upload(c0, me0, &job, &vec![0.0; 99], 1.0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    upload(c0, me0, &job, &vec![0.0; 100], 1.0).await.unwrap();
    let actions: Vec<String> = audit_trail(&mut j, &job)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.iter().any(|a| a == "statistics"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "schema"), "{actions:?}");
}
