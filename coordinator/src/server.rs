//! The coordinator at run time: the live state of every active job, shared by the two gRPC
//! services and the round driver, each in its own module:
//!
//! - `auth`: who is calling (tokens, certificates, worker ids; refusals audited);
//! - `driver`: the round driver — enrolment, rounds, retries, commits, sampling — over the
//!   pure stage logic of [`crate::secure`];
//! - `jobs`: the owner's `Jobs` service;
//! - `federation`: the workers' `Federation` service and the checks an upload must pass.
//!
//! The coordinator never sees a row of data: it stores specs; under secure aggregation (the
//! default) it adds masked ring words and decodes only a complete sum; under `none` it
//! averages the weights workers upload (weighted by their DP-noised row counts); it takes the
//! job's server step ([`crate::optimizer`] for FedAdam; none for FedAvg) and stores the
//! ciphertext the designated sampler uploads.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsynth_proto::v1::federation_server::Federation;
use fedsynth_proto::v1::jobs_server::Jobs;
use fedsynth_proto::v1::{self as pb, poll_response::Task};
use fedsynth_proto::{
    CHUNK_BYTES, JobSpec, MAX_PARAMETERS, PROTOCOL_VERSION, ServerOptimizer, WorkerId,
};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::artifacts::Artifacts;
use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::optimizer;
use crate::store::{JobRecord, JobState, Store};

/// Largest artifact accepted: 16 GiB.
const MAX_ARTIFACT_BYTES: u64 = 16 << 30;

pub use crate::secure::Stage;

mod auth;
mod driver;
mod federation;
mod jobs;

/// One open round.
#[derive(Debug)]
struct LiveRound {
    round: u32,
    stage: Stage,
    deadline: Instant,
    /// Σ wᵢ·θᵢ over the uploads so far (plain aggregation).
    sum: Vec<f32>,
    /// Σ wᵢ.
    weight: f64,
    uploaded: Vec<String>,
    /// Secure aggregation: the attempt (never repeated for the job by this process: a
    /// random epoch in the high bits), its participant set (sorted) and the ring sum of
    /// the masked uploads so far.
    attempt: u32,
    participants: Vec<String>,
    ring: Vec<u32>,
}

/// An active job as the coordinator tracks it between store writes.
#[derive(Debug)]
struct LiveJob {
    record: JobRecord,
    accepted: Vec<String>,
    answered: HashSet<String>,
    enrol_deadline: Instant,
    round: Option<LiveRound>,
    sampler: Option<String>,
    sampling_since: Instant,
    /// Secure aggregation: the key adverts received (worker → JSON, as published) and the
    /// roster, fixed when the key stage completes. In memory only: after a restart the key
    /// stage runs again and the workers publish the same keys.
    adverts: std::collections::BTreeMap<String, String>,
    roster: Option<Vec<String>>,
    /// The ring scale of the roster (public, from its adverts), fixed with the roster.
    ring_scale: f64,
    /// A partial schema's statistics: the waves published (stored), this wave's uploads (in
    /// memory; a worker re-sends its kept upload after a restart) and the completed schema
    /// with its model's size (stored).
    transcript: Vec<pb::StatisticsWave>,
    statistics: std::collections::BTreeMap<String, crate::secure::StatisticsUpload>,
    schema: Option<(String, u64)>,
}

impl LiveJob {
    fn new(record: JobRecord, accepted: Vec<String>, answered: HashSet<String>) -> Self {
        let now = Instant::now();
        Self {
            enrol_deadline: now + Duration::from_secs(record.spec.enrol_deadline_s),
            accepted,
            answered,
            round: None,
            sampler: None,
            sampling_since: now,
            adverts: std::collections::BTreeMap::new(),
            roster: None,
            ring_scale: 0.0,
            transcript: Vec::new(),
            statistics: std::collections::BTreeMap::new(),
            schema: None,
            record,
        }
    }

    /// Whether `worker` is in the job's key roster (secure aggregation).
    fn in_roster(&self, worker: &str) -> bool {
        self.roster.iter().flatten().any(|w| w == worker)
    }

    /// The model's size: the spec's, or the completed schema's.
    fn parameters(&self) -> u64 {
        match (&self.schema, self.record.spec.parameters) {
            (Some((_, p)), 0) => *p,
            (_, p) => p,
        }
    }

    fn secure(&self) -> bool {
        self.record.spec.secure_aggregation == fedsynth_proto::SecureAggregation::Secagg
    }

    /// Opens `round`'s next stage: under secure aggregation the key stage until the roster
    /// is fixed, then the initial weights until the job has weights, then a collect attempt
    /// over the roster's live workers.
    fn open_round(&mut self, round: u32, live: &HashSet<String>, epoch: u32) {
        let spec = &self.record.spec;
        let stage = if !self.secure() {
            Stage::Collect
        } else if self.roster.is_none() {
            Stage::AdvertiseKeys
        } else if self.record.spec.needs_statistics() && self.schema.is_none() {
            Stage::Statistics
        } else if self.record.weights_key.is_empty() {
            Stage::InitialWeights
        } else {
            Stage::Collect
        };
        let participants = match (&self.roster, stage) {
            (Some(roster), Stage::Collect) => crate::secure::participants(roster, live),
            (Some(roster), Stage::Statistics) => {
                let mut all = roster.clone();
                all.sort();
                all
            }
            _ => Vec::new(),
        };
        let round = if stage == Stage::Statistics {
            self.transcript.len() as u32
        } else {
            round
        };
        self.round = Some(LiveRound {
            round,
            stage,
            deadline: Instant::now() + Duration::from_secs(spec.round_deadline_s),
            sum: Vec::new(),
            weight: 0.0,
            uploaded: Vec::new(),
            attempt: (epoch << 16) | (self.record.tries & 0xffff),
            participants,
            ring: Vec::new(),
        });
    }
}

#[derive(Debug, Default)]
struct State {
    /// Worker id → last time it was heard from.
    seen: HashMap<String, Instant>,
    /// Worker id → federation, for workers heard from since start.
    federation_of: HashMap<String, String>,
    jobs: HashMap<String, LiveJob>,
}

/// The coordinator: shared by both services and the round driver.
#[derive(Debug)]
pub struct Coordinator {
    store: Store,
    artifacts: Artifacts,
    config: CoordinatorConfig,
    state: Mutex<State>,
    /// Wakes the driver as soon as an update or an answer arrives.
    wake: tokio::sync::Notify,
    /// The rate limit of refusals written to the audit trail.
    denials: std::sync::Mutex<Denials>,
    /// This process's attempt epoch (1–65535, random): the high bits of every secure
    /// aggregation attempt, so that a restarted coordinator never asks for an attempt it
    /// asked for before with another participant set (a worker would refuse it).
    epoch: u32,
}

/// Most refused calls the audit trail records in a minute.
pub const DENIALS_PER_MINUTE: u32 = 120;

/// Refusals written in the current minute, and those counted but not written.
#[derive(Debug)]
struct Denials {
    window: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for Denials {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }
}

fn live_window(config: &CoordinatorConfig) -> Duration {
    Duration::from_millis(u64::from(config.poll_interval_ms) * 10).max(Duration::from_secs(3))
}

fn bearer<T>(req: &Request<T>) -> Option<String> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn new_job_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("job-{}", hex::encode(bytes))
}

/// What a request says about its sender.
struct Credentials {
    token: Option<String>,
    /// SHA-256 of the client certificate ("" without TLS); `None` when TLS is on and the
    /// client showed no certificate.
    digest: Option<String>,
    /// The names the client certificate was issued for (its DNS subject alternative names);
    /// `None` without TLS.
    names: Option<Vec<String>>,
}

impl Credentials {
    /// Whether the certificate was issued for the worker `name` (always, without TLS).
    fn issued_for(&self, name: &str) -> bool {
        self.names
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send + 'static>>;

impl Coordinator {
    /// Opens the store and the artifact directory and reloads every active job.
    pub async fn open(config: CoordinatorConfig) -> Result<Arc<Self>> {
        let store = Store::open(&config.database_url).await?;
        let artifacts = Artifacts::open(&config.artifacts, &config.artifact_options)?;
        let mut state = State::default();
        let epoch = 1 + rand::random::<u32>() % 0xffff;
        for record in store.active_jobs().await? {
            let participants = store.participants(&record.id).await?;
            let mut live = LiveJob::new(
                record,
                participants
                    .iter()
                    .filter(|p| p.accepted)
                    .map(|p| p.worker_id.clone())
                    .collect(),
                participants.iter().map(|p| p.worker_id.clone()).collect(),
            );
            live.schema = store.schema(&live.record.id).await?;
            live.transcript = store
                .statistics(&live.record.id)
                .await?
                .into_iter()
                .map(|(sums, released)| pb::StatisticsWave { sums, released })
                .collect();
            if live.record.state == JobState::Running {
                let r = live.record.round;
                live.open_round(r, &HashSet::new(), epoch);
                store
                    .audit(
                        "coordinator",
                        "resume",
                        &live.record.id,
                        &format!("resumed at round {} after a restart", live.record.round),
                    )
                    .await?;
            }
            state.jobs.insert(live.record.id.clone(), live);
        }
        Ok(Arc::new(Self {
            store,
            artifacts,
            config,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
            denials: std::sync::Mutex::new(Denials::default()),
            epoch,
        }))
    }

    /// A finished job's record, for fetching its output.
    async fn done_job(&self, id: &str) -> Result<JobRecord> {
        let record = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no job '{id}'")))?;
        if record.state != JobState::Done {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {id} is {}, not done: nothing to fetch yet",
                record.state.as_str()
            )));
        }
        Ok(record)
    }

    /// The job store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn status_of(
        &self,
        record: &JobRecord,
        participants: &[crate::store::Participant],
        schema: Option<(String, u64)>,
    ) -> pb::JobStatus {
        pb::JobStatus {
            job_id: record.id.clone(),
            name: record.spec.name.clone(),
            federation: record.spec.federation.clone(),
            state: record.state.as_str().into(),
            round: record.round,
            rounds: record.spec.rounds,
            workers: participants
                .iter()
                .filter(|p| p.accepted)
                .map(|p| p.worker_id.clone())
                .collect(),
            reason: record.reason.clone(),
            created_at_ms: record.created_ms,
            updated_at_ms: record.updated_ms,
            artifact_bytes: record.artifact_bytes,
            refusals: participants
                .iter()
                .filter(|p| !p.accepted)
                .map(|p| format!("{}: {}", p.worker_id, p.reason))
                .collect(),
            aggregation: aggregation_text(record.spec.secure_aggregation).into(),
            schema_toml: schema.map(|(text, _)| text).unwrap_or_default(),
        }
    }

    async fn stream_object(&self, key: &str) -> Result<ChunkStream> {
        let inner = self.artifacts.stream(key).await?;
        let out = futures_util::StreamExt::flat_map(inner, |r| {
            let items: Vec<Result<pb::Chunk, Status>> = match r {
                Ok(bytes) => bytes
                    .chunks(CHUNK_BYTES)
                    .map(|c| Ok(pb::Chunk { data: c.to_vec() }))
                    .collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            tokio_stream::iter(items)
        });
        Ok(Box::pin(out))
    }
}

/// The `Jobs` service over a shared [`Coordinator`].
#[derive(Debug, Clone)]
pub struct JobsService(pub Arc<Coordinator>);

/// The `Federation` service over a shared [`Coordinator`].
#[derive(Debug, Clone)]
pub struct FederationService(pub Arc<Coordinator>);

/// How a job aggregates, in words for `status` and the audit trail.
pub fn aggregation_text(mode: fedsynth_proto::SecureAggregation) -> &'static str {
    match mode {
        fedsynth_proto::SecureAggregation::Secagg => {
            "secure aggregation (secagg: the coordinator sees only the noisy sum)"
        }
        fedsynth_proto::SecureAggregation::He => "homomorphic encryption (he)",
        fedsynth_proto::SecureAggregation::None => {
            "NO secure aggregation (none: the coordinator sees every holder's update; trusted set-ups only)"
        }
    }
}
