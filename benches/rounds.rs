//! Round overhead of the coordinator and its transport, without training: N scripted workers
//! on loopback each upload a 1 M-parameter model (4 MB, streamed in 256 KiB chunks) per round;
//! the figure is the time from the first upload starting to the round's commit (aggregation;
//! from the second round on, the coordinator's Adam step with its moments streamed from and
//! to the artifact store; weights stored; round recorded in the store), for N = 3, 10 and 50,
//! and the coordinator's peak memory against the model size times the number of concurrent
//! upload streams.
//!
//! Each figure is measured twice: with `secure_aggregation = "none"` (plain f32 weights) and
//! with `"secagg"` (masked 32-bit ring words, after the once-per-job key stage and initial
//! weights; each simulated worker's upload is its real net mask over a zero update, computed
//! before the clock starts — a worker expands its masks while it trains; the criterion
//! benchmark `secagg` times that expansion — so the committed sum must decode to zero).
//!
//!   cargo bench --workspace --profile dev --bench rounds
//!
//! The coordinator is the `fedsynth` binary of the same build, run as its own process (so its
//! peak RSS is its own), on loopback over plaintext HTTP/2: TLS costs a handshake per
//! connection, not per round.

use std::time::{Duration, Instant};

use fedsynth_privacy::secagg::{JobKey, KeyAdvert, Pairs};
use fedsynth_proto::client::{Token, connect};
use fedsynth_proto::v1::federation_client::FederationClient;
use fedsynth_proto::v1::jobs_client::JobsClient;
use fedsynth_proto::v1::{self as pb, poll_response::Task};
use fedsynth_proto::{CHUNK_BYTES, JobSpec, PROTOCOL_VERSION, SecureAggregation};

const PARAMETERS: usize = 1_000_000;
const ROUNDS: u32 = 6;
const OWNER: &str = "owner-token-0123456789";
const TOKEN: &str = "bench-token-0123456789";

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn spec(workers: u32, secure: bool) -> JobSpec {
    JobSpec {
        version: 1,
        name: format!("bench {workers}"),
        federation: "bench".into(),
        model: fedsynth_proto::ModelSpec::default(),
        schema_toml: "version = 1\ncolumns = []\n".into(),
        statistics_share: None,
        epsilon: 3.0,
        delta: 1e-6,
        rounds: ROUNDS,
        local_steps: 1,
        batch_size: 10,
        learning_rate: 5e-3,
        server_optimizer: fedsynth_proto::ServerOptimizer::Adam,
        local_learning_rate: 1.0,
        clip_norm: 1.0,
        secure_aggregation: if secure {
            SecureAggregation::Secagg
        } else {
            SecureAggregation::None
        },
        tolerated_workers: 0,
        spare_attempts: None,
        min_workers: workers,
        round_deadline_s: 600,
        enrol_deadline_s: 600,
        round_tries: 1,
        rows: 10,
        format: "csv".into(),
        recipients: vec!["pk".into()],
        init_seed: 1,
        parameters: PARAMETERS as u64,
        max_worker_weight: 1e7,
        max_update_norm: None,
    }
}

/// The `fedsynth` binary beside this benchmark's executable.
fn fedsynth() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("fedsynth")
}

async fn bench(workers: u32, secure: bool) -> (Duration, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every simulated worker connects from 127.0.0.1: lift the per-address cap.
    std::fs::write(
        dir.path().join("coordinator.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nport_file = \"port\"\nowner_token = \"{OWNER}\"\n\
             insecure_plaintext = true\npoll_interval_ms = 20\n\
             max_connections_per_peer = 1024\n\
             [[federation]]\nname = \"bench\"\nenrolment_token = \"{TOKEN}\"\n"
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(fedsynth())
        .args(["coordinator", "--config", "coordinator.toml"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run `cargo test --workspace --no-run` first: the fedsynth binary is needed");
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(dir.path().join("port")) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!("http://127.0.0.1:{}", port.trim());
    let channel = connect(&url, None).await.expect("connect");
    let mut jobs = JobsClient::with_interceptor(channel.clone(), Token::new(OWNER).expect("token"));
    let job = jobs
        .submit(pb::SubmitRequest {
            client_request_id: "b".into(),
            spec_toml: spec(workers, secure).to_toml(),
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
    let pairs = if secure {
        Some(secure_setup(&job, &mut clients).await)
    } else {
        None
    };
    let mut times = Vec::new();
    let mut digest = String::new();
    for round in 0..ROUNDS {
        // Every worker waits for the round to open.
        let mut task = pb::TrainRound::default();
        for (c, me) in &mut clients {
            task = wait_for(c, me, "collect").await;
            assert_eq!(task.round, round);
            digest = task.base_digest.clone();
        }
        // The simulated workers keep polling while their masks are expanded, as real ones
        // do while they train (a worker silent for the live window voids the attempt).
        let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let heartbeat = {
            let beating = beating.clone();
            let clients: Vec<Worker> = clients.clone();
            tokio::spawn(async move {
                while beating.load(std::sync::atomic::Ordering::Relaxed) {
                    for (c, me) in &clients {
                        let _ = c
                            .clone()
                            .poll(pb::PollRequest {
                                worker_id: me.clone(),
                            })
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let masks: Option<Vec<Vec<u8>>> = pairs.as_ref().map(|pairs| {
            pairs
                .iter()
                .map(|p| {
                    let words = p
                        .net_mask(PARAMETERS, round, task.attempt, &task.participants)
                        .expect("mask");
                    words.iter().flat_map(|w| w.to_le_bytes()).collect()
                })
                .collect()
        });
        beating.store(false, std::sync::atomic::Ordering::Relaxed);
        heartbeat.await.expect("heartbeat");
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
                attempt: task.attempt,
                encoding: if secure { "ring32" } else { "f32" }.into(),
            };
            let per_chunk = CHUNK_BYTES / 4;
            let chunks = PARAMETERS.div_ceil(per_chunk);
            let mask = masks.as_ref().map(|m| m[k].clone());
            let body = (0..chunks).map(move |i| {
                let n = per_chunk.min(PARAMETERS - i * per_chunk);
                let bytes = match &mask {
                    Some(m) => m[i * per_chunk * 4..(i * per_chunk + n) * 4].to_vec(),
                    None => {
                        let mut bytes = Vec::with_capacity(n * 4);
                        for j in 0..n {
                            bytes.extend_from_slice(
                                &(((i * per_chunk + j + k) % 97) as f32 * 0.01).to_le_bytes(),
                            );
                        }
                        bytes
                    }
                };
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
    let rss = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    times.sort();
    (times[times.len() / 2], rss)
}

type Worker = (
    FederationClient<tonic::codegen::InterceptedService<tonic::transport::Channel, Token>>,
    String,
);

/// Polls until the worker is asked for `stage`.
async fn wait_for(
    c: &mut FederationClient<tonic::codegen::InterceptedService<tonic::transport::Channel, Token>>,
    me: &str,
    stage: &str,
) -> pb::TrainRound {
    loop {
        let task = c
            .poll(pb::PollRequest {
                worker_id: me.to_string(),
            })
            .await
            .expect("poll")
            .into_inner()
            .task;
        if let Some(Task::Train(t)) = task
            && t.stage == stage
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The once-per-job stages of secure aggregation: every worker publishes a key, one uploads
/// the initial weights. Returns each worker's pairwise keys.
async fn secure_setup(job: &str, clients: &mut [Worker]) -> Vec<Pairs> {
    let keys: Vec<JobKey> = clients.iter().map(|_| JobKey::generate()).collect();
    for ((c, me), key) in clients.iter_mut().zip(&keys) {
        wait_for(c, me, "advertise_keys").await;
        let advert = KeyAdvert::new(job, me, key, 1.0, None).expect("advert");
        c.publish_key(pb::PublishKeyRequest {
            worker_id: me.clone(),
            job_id: job.to_string(),
            advert: advert.to_text(),
        })
        .await
        .expect("publish");
    }
    let (c, me) = &mut clients[0];
    wait_for(c, me, "initial_weights").await;
    let header = pb::UpdateHeader {
        worker_id: me.clone(),
        job_id: job.to_string(),
        parameters: PARAMETERS as u64,
        weight: 1.0,
        encoding: "f32".into(),
        ..Default::default()
    };
    let zeros = vec![0.0f32; PARAMETERS];
    let messages: Vec<pb::UpdateChunk> = std::iter::once(pb::update_chunk::Part::Header(header))
        .chain(fedsynth_proto::f32_chunks(&zeros).map(pb::update_chunk::Part::Data))
        .map(|p| pb::UpdateChunk { part: Some(p) })
        .collect();
    c.upload_update(tokio_stream::iter(messages))
        .await
        .expect("initial weights");
    let adverts: Vec<KeyAdvert> = c
        .fetch_keys(pb::FetchKeysRequest {
            worker_id: me.clone(),
            job_id: job.to_string(),
        })
        .await
        .expect("keys")
        .into_inner()
        .adverts
        .iter()
        .map(|t| KeyAdvert::from_text(t).expect("advert"))
        .collect();
    clients
        .iter()
        .zip(&keys)
        .map(|((_, me), key)| Pairs::agree(job, me, key, &adverts).expect("pairs"))
        .collect()
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
        for secure in [false, true] {
            let (median, rss) = rt.block_on(bench(workers, secure));
            println!(
                "  {workers:>2} workers, {:<6}: {:>7.1} ms per round; coordinator peak RSS {rss:.0} MiB ({:.2}x the model per upload stream)",
                if secure { "secagg" } else { "none" },
                median.as_secs_f64() * 1e3,
                rss / (model_mib * f64::from(workers))
            );
        }
    }
}
