//! Round overhead of the coordinator and its transport, without training: N scripted workers
//! on loopback each upload a 1 M-parameter model (4 MB, streamed in 1 MiB chunks) per round;
//! the figure is the time from the first upload starting to the round's commit (aggregation,
//! weights stored, round recorded in the store), for N = 3, 10 and 50. Uploads are generated
//! chunk by chunk, so the process's peak memory is essentially the coordinator's.
//!
//!   cargo bench -p fedsynth-benches --bench rounds
//!
//! The coordinator runs in this process on an ephemeral port over plaintext HTTP/2 (TLS
//! costs a handshake per connection, not per round).

use std::time::{Duration, Instant};

use fedsynth_coordinator::config::{CoordinatorConfig, FederationConfig};
use fedsynth_proto::client::{Token, connect};
use fedsynth_proto::v1::federation_client::FederationClient;
use fedsynth_proto::v1::jobs_client::JobsClient;
use fedsynth_proto::v1::{self as pb, poll_response::Task};
use fedsynth_proto::{CHUNK_BYTES, JobSpec, PROTOCOL_VERSION, SecureAggregation};

const PARAMETERS: usize = 1_000_000;
const ROUNDS: u32 = 6;
const OWNER: &str = "owner-token-0123456789";
const TOKEN: &str = "bench-token-0123456789";

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn spec(workers: u32) -> JobSpec {
    JobSpec {
        version: 1,
        name: format!("bench {workers}"),
        federation: "bench".into(),
        model: "tvae".into(),
        schema_toml: "version = 1\ncolumns = []\n".into(),
        epsilon: 3.0,
        delta: 1e-6,
        rounds: ROUNDS,
        local_steps: 1,
        batch_size: 10,
        learning_rate: 5e-3,
        clip_norm: 1.0,
        secure_aggregation: SecureAggregation::None,
        min_workers: workers,
        round_deadline_s: 600,
        enrol_deadline_s: 600,
        round_tries: 1,
        rows: 10,
        format: "csv".into(),
        recipients: vec!["pk".into()],
        init_seed: 1,
    }
}

async fn bench(workers: u32) -> (Duration, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}", dir.path().join("c.db").display()),
        artifacts: dir.path().join("artifacts"),
        owner_token: OWNER.into(),
        tls: None,
        insecure_plaintext: true,
        poll_interval_ms: 20,
        federations: vec![FederationConfig {
            name: "bench".into(),
            enrolment_token: TOKEN.into(),
        }],
        port_file: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(fedsynth_coordinator::serve(
        config,
        move |a| drop(tx.send(a)),
        std::future::pending(),
    ));
    let url = format!("http://{}", rx.await.expect("listening"));
    let channel = connect(&url, None).await.expect("connect");
    let mut jobs = JobsClient::with_interceptor(channel.clone(), Token::new(OWNER).expect("token"));
    let job = jobs
        .submit(pb::SubmitRequest {
            client_request_id: "b".into(),
            spec_toml: spec(workers).to_toml(),
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id;
    let mut clients = Vec::new();
    for k in 0..workers {
        let mut c = FederationClient::with_interceptor(
            connect(&url, None).await.expect("connect"),
            Token::new(TOKEN).expect("token"),
        );
        let me = c
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                federation: "bench".into(),
                worker_name: format!("w{k}"),
            })
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        c.answer(pb::AnswerRequest {
            worker_id: me.clone(),
            job_id: job.clone(),
            accept: true,
            reason: String::new(),
        })
        .await
        .expect("answer");
        clients.push((c, me));
    }
    let mut times = Vec::new();
    let mut digest = String::new();
    for round in 0..ROUNDS {
        // Every worker waits for the round to open.
        for (c, me) in &mut clients {
            loop {
                let task = c
                    .poll(pb::PollRequest {
                        worker_id: me.clone(),
                    })
                    .await
                    .expect("poll")
                    .into_inner()
                    .task;
                if let Some(Task::Train(t)) = task {
                    assert_eq!(t.round, round);
                    digest = t.base_digest;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let started = Instant::now();
        let uploads = clients.iter().enumerate().map(|(k, (c, me))| {
            let mut c = c.clone();
            let header = pb::UpdateHeader {
                worker_id: me.clone(),
                job_id: job.clone(),
                round,
                parameters: PARAMETERS as u64,
                weight: 1.0 + k as f64,
                base_digest: digest.clone(),
            };
            let per_chunk = CHUNK_BYTES / 4;
            let chunks = PARAMETERS.div_ceil(per_chunk);
            let body = (0..chunks).map(move |i| {
                let n = per_chunk.min(PARAMETERS - i * per_chunk);
                let mut bytes = Vec::with_capacity(n * 4);
                for j in 0..n {
                    bytes.extend_from_slice(
                        &(((i * per_chunk + j + k) % 97) as f32 * 0.01).to_le_bytes(),
                    );
                }
                pb::UpdateChunk {
                    part: Some(pb::update_chunk::Part::Data(bytes)),
                }
            });
            let messages = std::iter::once(pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Header(header)),
            })
            .chain(body);
            async move {
                c.upload_update(tokio_stream::iter(messages))
                    .await
                    .expect("upload")
            }
        });
        futures_join(uploads.collect()).await;
        loop {
            let s = jobs
                .get_job(pb::GetJobRequest {
                    job_id: job.clone(),
                })
                .await
                .expect("status")
                .into_inner();
            if s.round > round {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed());
    }
    server.abort();
    times.sort();
    (times[times.len() / 2], peak_rss_mib())
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>)
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("upload task");
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let model_mib = (PARAMETERS * 4) as f64 / (1 << 20) as f64;
    println!(
        "round overhead: {PARAMETERS} parameters ({model_mib:.1} MiB), median of {ROUNDS} rounds, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for workers in [3u32, 10, 50] {
        let (median, rss) = rt.block_on(bench(workers));
        println!(
            "  {workers:>2} workers: {:>7.1} ms per round; process peak RSS {rss:.0} MiB ({:.2}x the model per upload stream)",
            median.as_secs_f64() * 1e3,
            rss / (model_mib * f64::from(workers))
        );
    }
}
