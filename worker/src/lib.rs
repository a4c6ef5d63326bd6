//! fedsynth's worker: runs beside a data holder's table, connects out to the coordinator
//! (no inbound port), and takes part in the jobs of its federation — accepting only those
//! its own ledger can pay for, training each round locally with DP-SGD, and sampling the
//! final generator into a file encrypted for the job's recipients when designated.
//!
//! - [`config`]: the config file;
//! - [`holder`]: the holder's decisions, training and sampling (no networking);
//! - [`run`]: the connection loop.

pub mod config;
pub mod error;
pub mod holder;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fedsynth_proto::client::{Token, connect};
use fedsynth_proto::v1::federation_client::FederationClient;
use fedsynth_proto::v1::{self as pb, poll_response::Task};
use fedsynth_proto::{JobSpec, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tonic::Code;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

pub use config::WorkerConfig;
pub use error::{Result, WorkerError};
pub use holder::Holder;

type Client = FederationClient<InterceptedService<Channel, Token>>;

/// Logs one line to stderr, prefixed with the worker's name.
fn log(name: &str, message: impl std::fmt::Display) {
    eprintln!("worker {name}: {message}");
}

/// Runs the worker until `shutdown` resolves or the coordinator refuses it for good.
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let holder = Arc::new(Holder::open(&config)?);
    log(
        &config.name,
        format!(
            "holding {} rows; ledger {}; device {}",
            holder.rows(),
            holder.ledger_path().display(),
            holder.device()
        ),
    );
    tokio::select! {
        r = serve(&config, holder) => r,
        () = shutdown => Ok(()),
    }
}

async fn serve(config: &WorkerConfig, holder: Arc<Holder>) -> Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(config, &holder).await {
            Err(WorkerError::Transport(m)) => {
                log(
                    &config.name,
                    format!("{m}; retrying in {:.1} s", backoff.as_secs_f64()),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(WorkerError::Status(s))
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) =>
            {
                log(
                    &config.name,
                    format!("connection lost ({}); reconnecting", s.message()),
                );
                tokio::time::sleep(backoff).await;
            }
            other => return other,
        }
    }
}

async fn client(config: &WorkerConfig) -> Result<Client> {
    let tls = if config.insecure_plaintext {
        None
    } else {
        config.tls.as_ref()
    };
    let channel = connect(&config.coordinator, tls)
        .await
        .map_err(WorkerError::Transport)?;
    let token = Token::new(&config.enrolment_token).map_err(WorkerError::Config)?;
    Ok(FederationClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

async fn session(config: &WorkerConfig, holder: &Arc<Holder>) -> Result<()> {
    let mut client = client(config).await?;
    let registered = client
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            federation: config.federation.clone(),
            worker_name: config.name.clone(),
        })
        .await
        .map_err(|s| match s.code() {
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::InvalidArgument => WorkerError::Refused(s.message().to_string()),
            _ => WorkerError::Status(s),
        })?
        .into_inner();
    let me = registered.worker_id;
    let interval = Duration::from_millis(u64::from(registered.poll_interval_ms.clamp(10, 60_000)));
    log(&config.name, format!("enrolled as {me}"));
    loop {
        let task = client
            .poll(pb::PollRequest {
                worker_id: me.clone(),
            })
            .await?
            .into_inner()
            .task;
        let work = async {
            match task {
                Some(Task::Offer(offer)) => answer(&mut client.clone(), holder, &me, offer).await,
                Some(Task::Train(train)) => match train.stage.as_str() {
                    "advertise_keys" => {
                        publish_key(&mut client.clone(), config, holder, &me, train).await
                    }
                    "statistics" => {
                        statistics_wave(&mut client.clone(), config, holder, &me, train).await
                    }
                    "initial_weights" => {
                        upload_initial(&mut client.clone(), holder, &me, train).await
                    }
                    _ if holder.spec(&train.job_id)?.secure_aggregation
                        == fedsynth_proto::SecureAggregation::Secagg =>
                    {
                        secure_round(&mut client.clone(), config, holder, &me, train).await
                    }
                    _ => train_round(&mut client.clone(), holder, &me, train).await,
                },
                Some(Task::Sample(sample)) => {
                    sample_job(&mut client.clone(), config, holder, &me, sample).await
                }
                Some(Task::Idle(_)) | None => {
                    tokio::time::sleep(interval).await;
                    Ok(())
                }
            }
        };
        // Long work keeps polling so that the coordinator knows this worker is alive.
        let result = with_heartbeat(work, client.clone(), &me, interval).await;
        match result {
            Ok(()) => {}
            Err(WorkerError::Status(s))
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) =>
            {
                return Err(WorkerError::Status(s));
            }
            Err(WorkerError::Transport(m)) => return Err(WorkerError::Transport(m)),
            Err(e) => log(&config.name, e),
        }
    }
}

async fn with_heartbeat(
    work: impl Future<Output = Result<()>>,
    mut client: Client,
    me: &str,
    interval: Duration,
) -> Result<()> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep(interval) => {
                let _ = client.poll(pb::PollRequest { worker_id: me.to_string() }).await;
            }
        }
    }
}

fn spec_of(text: &str) -> Result<JobSpec> {
    JobSpec::from_toml(text).map_err(WorkerError::Invalid)
}

async fn answer(
    client: &mut Client,
    holder: &Arc<Holder>,
    me: &str,
    offer: pb::JobOffer,
) -> Result<()> {
    let job = offer.job_id.clone();
    let decision = match spec_of(&offer.spec_toml) {
        Ok(spec) => {
            let h = holder.clone();
            let j = job.clone();
            tokio::task::spawn_blocking(move || {
                let decision = h.accept(&j, &spec);
                let non_numbers = h.non_numbers(&spec);
                (decision, non_numbers)
            })
            .await
            .map_err(|e| WorkerError::Invalid(e.to_string()))
            .map(|(decision, non_numbers)| {
                if decision.is_ok() && !non_numbers.is_empty() {
                    log(
                        me,
                        format!(
                            "job {job}: cells that are not numbers are read as missing in: {}",
                            non_numbers.join(", ")
                        ),
                    );
                }
                decision
            })?
        }
        Err(e) => Err(e),
    };
    let (accept, reason) = match &decision {
        Ok(plan) => (
            true,
            format!(
                "ε = {:.3} charged, σ = {:.3}",
                plan.epsilon, plan.noise_multiplier
            ),
        ),
        Err(e) => (false, e.to_string()),
    };
    log(
        me,
        format!(
            "job {job}: {} ({reason})",
            if accept { "accepted" } else { "refused" }
        ),
    );
    client
        .answer(pb::AnswerRequest {
            worker_id: me.into(),
            job_id: job,
            accept,
            reason: if accept {
                String::new()
            } else {
                REFUSAL_ON_THE_WIRE.into()
            },
        })
        .await?;
    Ok(())
}

/// The one reason a worker gives the coordinator for refusing a job. The real reason (a
/// column the table lacks, the budget, the policy) stays in the holder's own log: spelled
/// out to the job's owner, refusals would answer questions about the holder's data for free.
pub const REFUSAL_ON_THE_WIRE: &str = "declined by the holder (its policy, budget or data do not fit this job; the reason is in the holder's log)";

/// Downloads the job's current global weights and checks their digest.
async fn download(client: &mut Client, me: &str, job: &str, digest: &str) -> Result<Vec<f32>> {
    let mut stream = client
        .download_weights(pb::DownloadWeightsRequest {
            worker_id: me.into(),
            job_id: job.into(),
        })
        .await?
        .into_inner();
    let mut values = Vec::new();
    while let Some(chunk) = stream.message().await? {
        fedsynth_proto::extend_f32(&mut values, &chunk.data)
            .ok_or_else(|| WorkerError::Invalid("weights arrived cut mid-value".into()))?;
        if values.len() as u64 > fedsynth_proto::MAX_PARAMETERS {
            return Err(WorkerError::Invalid(
                "the weights are larger than any model".into(),
            ));
        }
    }
    let got = holder::weights_digest(&values);
    if got != digest {
        return Err(WorkerError::Invalid(format!(
            "job {job}: the weights' digest is {got}, the round announced {digest}"
        )));
    }
    Ok(values)
}

async fn train_round(
    client: &mut Client,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::TrainRound,
) -> Result<()> {
    let job = task.job_id.clone();
    let Some(plan) = holder.plan(&job)? else {
        return Err(WorkerError::Invalid(format!(
            "job {job}: asked to train a job this worker never accepted"
        )));
    };
    let spec = holder.spec(&job)?;
    let values = match holder.cached_round(&job, task.round, &task.base_digest)? {
        Some(v) => {
            log(
                me,
                format!(
                    "job {job}: round {} already trained, sending it again",
                    task.round
                ),
            );
            v
        }
        None => {
            let base = if task.round == 0 && task.base_digest.is_empty() {
                let h = holder.clone();
                let s = spec.clone();
                tokio::task::spawn_blocking(move || h.initial_weights(&s))
                    .await
                    .map_err(|e| WorkerError::Invalid(e.to_string()))??
            } else {
                download(client, me, &job, &task.base_digest).await?
            };
            let h = holder.clone();
            let (j, s, d, r) = (
                job.clone(),
                spec.clone(),
                task.base_digest.clone(),
                task.round,
            );
            let started = std::time::Instant::now();
            let out = tokio::task::spawn_blocking(move || h.train_round(&j, &s, r, &base, &d))
                .await
                .map_err(|e| WorkerError::Invalid(e.to_string()))??;
            log(
                me,
                format!(
                    "job {job}: round {} trained ({} steps, {:.1} s)",
                    task.round,
                    spec.local_steps,
                    started.elapsed().as_secs_f64()
                ),
            );
            out
        }
    };
    let header = pb::UpdateHeader {
        worker_id: me.into(),
        job_id: job.clone(),
        round: task.round,
        parameters: values.len() as u64,
        weight: plan.noisy_rows,
        base_digest: task.base_digest.clone(),
        attempt: 0,
        encoding: "f32".into(),
    };
    let mut messages = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(header)),
    }];
    messages.extend(
        fedsynth_proto::f32_chunks(&values).map(|c| pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Data(c)),
        }),
    );
    match client.upload_update(tokio_stream::iter(messages)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::FailedPrecondition => {
            log(
                me,
                format!(
                    "job {job}: round {} update not taken: {}",
                    task.round,
                    s.message()
                ),
            );
            Ok(())
        }
        Err(s) => Err(s.into()),
    }
}

/// This worker's enrolled identity (certificate key and certificate, PEM) and the
/// federation's CA, when it has them (not on a plaintext loopback federation).
#[allow(clippy::type_complexity)]
fn identity(
    config: &WorkerConfig,
) -> Result<Option<(zeroize::Zeroizing<Vec<u8>>, String, Vec<u8>)>> {
    let Some(tls) = config.tls.as_ref().filter(|_| !config.insecure_plaintext) else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (tls.cert.as_ref(), tls.key.as_ref()) else {
        return Ok(None);
    };
    Ok(Some((
        zeroize::Zeroizing::new(std::fs::read(key)?),
        std::fs::read_to_string(cert)?,
        std::fs::read(&tls.ca)?,
    )))
}

/// Secure aggregation, once per job: publishes this worker's signed key advert.
async fn publish_key(
    client: &mut Client,
    config: &WorkerConfig,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::TrainRound,
) -> Result<()> {
    let job = task.job_id.clone();
    let spec = holder.spec(&job)?;
    let id = identity(config)?;
    if id.is_none() {
        log(
            me,
            format!(
                "job {job}: no certificate: the key advert is unsigned (a plaintext federation trusts its coordinator to relay keys unchanged)"
            ),
        );
    }
    let advert = holder.advert(
        &job,
        &spec,
        me,
        id.as_ref().map(|(k, c, _)| (k.as_slice(), c.as_str())),
    )?;
    client
        .publish_key(pb::PublishKeyRequest {
            worker_id: me.into(),
            job_id: job.clone(),
            advert: advert.to_text(),
        })
        .await?;
    log(me, format!("job {job}: key-agreement key published"));
    Ok(())
}

/// Secure aggregation, once per job: uploads the model the job's seed gives (no data).
async fn upload_initial(
    client: &mut Client,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::TrainRound,
) -> Result<()> {
    let job = task.job_id.clone();
    let spec = holder.spec(&job)?;
    let h = holder.clone();
    let values = tokio::task::spawn_blocking(move || h.initial_weights(&spec))
        .await
        .map_err(|e| WorkerError::Invalid(e.to_string()))??;
    let header = pb::UpdateHeader {
        worker_id: me.into(),
        job_id: job.clone(),
        round: 0,
        parameters: values.len() as u64,
        weight: 1.0,
        base_digest: String::new(),
        attempt: 0,
        encoding: "f32".into(),
    };
    let chunks = fedsynth_proto::f32_chunks(&values).map(pb::update_chunk::Part::Data);
    send_update(client, me, &job, 0, header, chunks.collect()).await
}

/// Streams an update (header, then chunks); an upload the round no longer takes is logged.
async fn send_update(
    client: &mut Client,
    me: &str,
    job: &str,
    round: u32,
    header: pb::UpdateHeader,
    chunks: Vec<pb::update_chunk::Part>,
) -> Result<()> {
    let mut messages = vec![pb::UpdateChunk {
        part: Some(pb::update_chunk::Part::Header(header)),
    }];
    messages.extend(
        chunks
            .into_iter()
            .map(|p| pb::UpdateChunk { part: Some(p) }),
    );
    match client.upload_update(tokio_stream::iter(messages)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::FailedPrecondition => {
            log(
                me,
                format!("job {job}: round {round} upload not taken: {}", s.message()),
            );
            Ok(())
        }
        Err(s) => Err(s.into()),
    }
}

/// Secure aggregation: one attempt of a round — the masked, discretised, noised clipped sum.
/// The key adverts of a job's roster, as the coordinator relays them.
async fn fetch_adverts(
    client: &mut Client,
    me: &str,
    job: &str,
) -> Result<Vec<fedsynth_privacy::secagg::KeyAdvert>> {
    Ok(client
        .fetch_keys(pb::FetchKeysRequest {
            worker_id: me.into(),
            job_id: job.into(),
        })
        .await?
        .into_inner()
        .adverts
        .iter()
        .map(|t| fedsynth_privacy::secagg::KeyAdvert::from_text(t))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// A statistics wave of a job with a partial schema: the transcript so far, this holder's
/// next masked sums (or its completed schema), uploaded.
async fn statistics_wave(
    client: &mut Client,
    config: &WorkerConfig,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::TrainRound,
) -> Result<()> {
    let job = task.job_id.clone();
    let adverts = fetch_adverts(client, me, &job).await?;
    let transcript: Vec<(Vec<u32>, Vec<String>)> = client
        .fetch_statistics(pb::FetchStatisticsRequest {
            worker_id: me.into(),
            job_id: job.clone(),
        })
        .await?
        .into_inner()
        .waves
        .into_iter()
        .map(|w| {
            let words = fedsynth_proto::u32_words(&w.sums).ok_or_else(|| {
                WorkerError::Invalid(format!("job {job}: a statistics sum cut mid-word"))
            })?;
            Ok((words, w.released))
        })
        .collect::<Result<_>>()?;
    let ca = identity(config)?.map(|(_, _, ca)| ca);
    let h = holder.clone();
    let (j, m, t) = (job.clone(), me.to_string(), task.clone());
    let upload = tokio::task::spawn_blocking(move || {
        h.statistics(
            &j,
            &m,
            t.round,
            &t.participants,
            &transcript,
            &adverts,
            ca.as_deref(),
        )
    })
    .await
    .map_err(|e| WorkerError::Invalid(e.to_string()))??;
    let (schema_toml, parameters) = upload.schema.clone().unwrap_or_default();
    log(
        me,
        if schema_toml.is_empty() {
            format!(
                "job {job}: statistics wave {}: {} masked sums, {} released names",
                task.round,
                upload.words.len(),
                upload.released.len()
            )
        } else {
            format!(
                "job {job}: statistics complete after {} waves: the schema sizes the model at {parameters} parameters",
                task.round
            )
        },
    );
    let ack = client
        .upload_statistics(pb::StatisticsUpload {
            worker_id: me.into(),
            job_id: job.clone(),
            wave: task.round,
            words: fedsynth_proto::u32_bytes(&upload.words),
            released: upload.released,
            schema_toml,
            parameters,
        })
        .await?
        .into_inner();
    if !ack.accepted {
        return Err(WorkerError::Invalid(format!(
            "job {job}: statistics refused: {}",
            ack.message
        )));
    }
    Ok(())
}

async fn secure_round(
    client: &mut Client,
    config: &WorkerConfig,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::TrainRound,
) -> Result<()> {
    let job = task.job_id.clone();
    let spec = holder.spec(&job)?;
    let adverts = fetch_adverts(client, me, &job).await?;
    let base = download(client, me, &job, &task.base_digest).await?;
    if task.round == 0 {
        // The first weights came from one worker: they must be the job's seeded model.
        let h = holder.clone();
        let s = spec.clone();
        let own = tokio::task::spawn_blocking(move || h.initial_weights(&s))
            .await
            .map_err(|e| WorkerError::Invalid(e.to_string()))??;
        if holder::weights_digest(&own) != task.base_digest {
            return Err(WorkerError::Invalid(format!(
                "job {job}: the initial weights are not the model the job's seed gives"
            )));
        }
    }
    let ca = identity(config)?.map(|(_, _, ca)| ca);
    let h = holder.clone();
    let (j, m, t) = (job.clone(), me.to_string(), task.clone());
    let started = std::time::Instant::now();
    let words = tokio::task::spawn_blocking(move || {
        h.secure_update(
            &j,
            &spec,
            &m,
            t.round,
            t.attempt,
            &t.participants,
            &adverts,
            ca.as_deref(),
            &base,
            &t.base_digest,
        )
    })
    .await
    .map_err(|e| WorkerError::Invalid(e.to_string()))??;
    log(
        me,
        format!(
            "job {job}: round {} attempt {} masked for {} participants ({:.1} s)",
            task.round,
            task.attempt & 0xffff,
            task.participants.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    let header = pb::UpdateHeader {
        worker_id: me.into(),
        job_id: job.clone(),
        round: task.round,
        parameters: words.len() as u64,
        weight: 1.0,
        base_digest: task.base_digest.clone(),
        attempt: task.attempt,
        encoding: "ring32".into(),
    };
    let chunks = words
        .chunks(fedsynth_proto::CHUNK_BYTES / 4)
        .map(|c| pb::update_chunk::Part::Data(c.iter().flat_map(|w| w.to_le_bytes()).collect()))
        .collect();
    send_update(client, me, &job, task.round, header, chunks).await
}

/// Signs an artifact with this worker's certificate key (its enrolled identity), so the
/// job's owner can tell that an enrolled worker made it; empty without a certificate (a
/// plaintext loopback federation).
fn sign_artifact(config: &WorkerConfig, job: &str, sha256: &str) -> Result<String> {
    let Some((cert, key)) = config
        .tls
        .as_ref()
        .filter(|_| !config.insecure_plaintext)
        .and_then(|t| Some((t.cert.as_ref()?, t.key.as_ref()?)))
    else {
        return Ok(String::new());
    };
    let cert_pem = std::fs::read_to_string(cert)?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key)?);
    let signature =
        fedsynth_privacy::signature::ArtifactSignature::sign(job, sha256, &key_pem, &cert_pem)
            .map_err(|e| WorkerError::Config(format!("{}: {e}", key.display())))?;
    Ok(signature.to_text())
}

async fn sample_job(
    client: &mut Client,
    config: &WorkerConfig,
    holder: &Arc<Holder>,
    me: &str,
    task: pb::SampleJob,
) -> Result<()> {
    let job = task.job_id.clone();
    let spec = holder.spec(&job)?;
    let weights = download(client, me, &job, &task.base_digest).await?;
    let h = holder.clone();
    let (j, s) = (job.clone(), spec.clone());
    let (path, size, sha256) = tokio::task::spawn_blocking(move || h.sample(&j, &s, &weights))
        .await
        .map_err(|e| WorkerError::Invalid(e.to_string()))??;
    let header = pb::ArtifactHeader {
        worker_id: me.into(),
        job_id: job.clone(),
        size,
        signature: sign_artifact(config, &job, &sha256)?,
        sha256,
    };
    // The envelope streams from its file, a few chunks in flight: memory stays bounded
    // whatever the output's size.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ArtifactChunk>(4);
    let reading = tokio::task::spawn_blocking(move || -> Result<()> {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let header = pb::ArtifactChunk {
            part: Some(pb::artifact_chunk::Part::Header(header)),
        };
        if tx.blocking_send(header).is_err() {
            return Ok(());
        }
        loop {
            let mut chunk = Vec::with_capacity(fedsynth_proto::CHUNK_BYTES);
            (&mut file)
                .take(fedsynth_proto::CHUNK_BYTES as u64)
                .read_to_end(&mut chunk)?;
            if chunk.is_empty() {
                return Ok(());
            }
            let data = pb::ArtifactChunk {
                part: Some(pb::artifact_chunk::Part::Data(chunk)),
            };
            if tx.blocking_send(data).is_err() {
                return Ok(());
            }
        }
    });
    let uploaded = client
        .upload_artifact(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reading
        .await
        .map_err(|e| WorkerError::Invalid(e.to_string()))??;
    uploaded?;
    log(
        me,
        format!(
            "job {job}: sampled {} rows, encrypted for {} recipient(s)",
            spec.rows,
            spec.recipients.len()
        ),
    );
    Ok(())
}
