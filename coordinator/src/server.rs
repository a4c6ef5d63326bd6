//! The coordinator at run time: the `Jobs` and `Federation` gRPC services, the live state of
//! every active job, and the driver that opens, closes, retries and commits rounds.
//!
//! The coordinator never sees a row of data: it stores specs, averages the weights workers
//! upload (weighted by their DP-noised row counts), takes the job's server step on that
//! average ([`crate::optimizer`] for FedAdam; none for FedAvg), and stores the ciphertext the
//! designated sampler uploads. Each round moves through [`Stage`]s so that secure
//! aggregation can wrap it; with `secure_aggregation = "none"` only `Collect` runs.

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
            record,
        }
    }

    fn secure(&self) -> bool {
        self.record.spec.secure_aggregation == fedsynth_proto::SecureAggregation::Secagg
    }

    /// The roster's parsed adverts, in worker order.
    fn roster_adverts(&self) -> Vec<fedsynth_privacy::secagg::KeyAdvert> {
        self.roster
            .iter()
            .flatten()
            .filter_map(|w| self.adverts.get(w))
            .filter_map(|t| fedsynth_privacy::secagg::KeyAdvert::from_text(t).ok())
            .collect()
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
        } else if self.record.weights_key.is_empty() {
            Stage::InitialWeights
        } else {
            Stage::Collect
        };
        let participants = match (&self.roster, stage) {
            (Some(roster), Stage::Collect) => crate::secure::participants(roster, live),
            _ => Vec::new(),
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

    /// Records a refused call in the audit trail, at most [`DENIALS_PER_MINUTE`] a minute:
    /// beyond that, refusals (a flood of bad tokens, say) are only counted, and the count is
    /// recorded with the next one that is written.
    async fn deny(&self, actor: &str, detail: &str) -> Result<()> {
        let note = {
            let mut d = self
                .denials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if now.duration_since(d.window) >= Duration::from_secs(60) {
                d.window = now;
                d.written = 0;
            }
            if d.written >= DENIALS_PER_MINUTE {
                d.suppressed += 1;
                return Ok(());
            }
            d.written += 1;
            std::mem::take(&mut d.suppressed)
        };
        let detail = if note > 0 {
            format!("{detail} ({note} earlier refusals were over the rate limit and not recorded)")
        } else {
            detail.to_string()
        };
        self.store.audit(actor, "denied", "", &detail).await
    }

    /// The job store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs the round driver until the process ends.
    pub async fn drive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
            if let Err(e) = self.step().await {
                eprintln!("coordinator: {e}");
            }
        }
    }

    /// One pass of the driver over every active job.
    pub async fn step(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let window = live_window(&self.config);
        let live: HashSet<String> = state
            .seen
            .iter()
            .filter(|(_, t)| now.duration_since(**t) < window)
            .map(|(w, _)| w.clone())
            .collect();
        let federation_of = state.federation_of.clone();
        let ids: Vec<String> = state.jobs.keys().cloned().collect();
        for id in ids {
            let Some(job) = state.jobs.get_mut(&id) else {
                continue;
            };
            match job.record.state {
                JobState::Enrolling => self.step_enrolling(job, &live, &federation_of, now).await?,
                JobState::Running => self.step_running(job, &live, now).await?,
                JobState::Sampling => self.step_sampling(job, &live, now).await?,
                JobState::Done | JobState::Failed => {}
            }
            if !job.record.state.is_active() {
                state.jobs.remove(&id);
            }
        }
        Ok(())
    }

    async fn fail(&self, job: &mut LiveJob, reason: String) -> Result<()> {
        self.store
            .set_state(&job.record.id, JobState::Failed, &reason)
            .await?;
        self.store
            .audit("coordinator", "failed", &job.record.id, &reason)
            .await?;
        job.record.state = JobState::Failed;
        job.record.reason = reason;
        Ok(())
    }

    async fn step_enrolling(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        federation_of: &HashMap<String, String>,
        now: Instant,
    ) -> Result<()> {
        let spec = &job.record.spec;
        let min = spec.min_workers as usize;
        let all_answered = live
            .iter()
            .filter(|w| federation_of.get(*w) == Some(&spec.federation))
            .all(|w| job.answered.contains(w));
        if job.accepted.len() >= min && (all_answered || now >= job.enrol_deadline) {
            self.store
                .set_state(&job.record.id, JobState::Running, "")
                .await?;
            self.store
                .audit(
                    "coordinator",
                    "start",
                    &job.record.id,
                    &format!("training with {}", job.accepted.join(", ")),
                )
                .await?;
            job.record.state = JobState::Running;
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
        } else if now >= job.enrol_deadline {
            let reason = format!(
                "enrolment closed with {} of the {} workers needed accepting",
                job.accepted.len(),
                min
            );
            self.fail(job, reason).await?;
        }
        Ok(())
    }

    async fn step_running(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        if job.secure() {
            return self.step_secure(job, live, now).await;
        }
        let spec = job.record.spec.clone();
        let min = spec.min_workers as usize;
        let Some(round) = job.round.as_mut() else {
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
            return Ok(());
        };
        let everyone_live_delivered = job
            .accepted
            .iter()
            .filter(|w| live.contains(*w))
            .all(|w| round.uploaded.contains(w));
        let enough = round.uploaded.len() >= min;
        if enough && (everyone_live_delivered || now >= round.deadline) {
            if let Some(round) = job.round.take() {
                return self.commit(job, round, live).await;
            }
            return Ok(());
        }
        if now < round.deadline {
            return Ok(());
        }
        let r = round.round;
        let delivered = round.uploaded.len();
        let detail = format!("round {r}: {delivered} of {min} updates by the deadline");
        self.retry(job, live, detail).await
    }

    /// A stage that missed its deadline: tried again (a fresh attempt) or, after the job's
    /// `round_tries`, the job fails saying why.
    async fn retry(&self, job: &mut LiveJob, live: &HashSet<String>, detail: String) -> Result<()> {
        let spec = job.record.spec.clone();
        let r = job
            .round
            .as_ref()
            .map_or(job.record.round, |round| round.round);
        let tries = job.record.tries + 1;
        self.store.set_tries(&job.record.id, tries).await?;
        job.record.tries = tries;
        if tries >= spec.round_tries {
            let reason = format!("{detail}; {tries} tries, giving up");
            return self.fail(job, reason).await;
        }
        self.store
            .audit(
                "coordinator",
                "retry",
                &job.record.id,
                &format!("{detail}; try {} of {}", tries + 1, spec.round_tries),
            )
            .await?;
        job.open_round(r, live, self.epoch);
        Ok(())
    }

    /// One tick of a job under secure aggregation (see [`crate::secure`]).
    async fn step_secure(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        use crate::secure::{Decision, decide};
        use std::collections::BTreeSet;
        let min = job.record.spec.min_workers as usize;
        let Some(round) = job.round.as_ref() else {
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
            return Ok(());
        };
        let r = round.round;
        match round.stage {
            Stage::AdvertiseKeys => {
                // Every accepted worker's key completes the stage at once; at the deadline,
                // those published make the roster if they are enough.
                let expected: BTreeSet<String> = job.accepted.iter().cloned().collect();
                let published: BTreeSet<String> = job.adverts.keys().cloned().collect();
                let enough = published.len() >= min;
                let decision = decide(&expected, &published, enough, round.deadline, now);
                match decision {
                    Decision::Complete if enough => {
                        let roster: Vec<String> = published.into_iter().collect();
                        self.store
                            .audit(
                                "coordinator",
                                "keys",
                                &job.record.id,
                                &format!(
                                    "secure aggregation: signed keys of {} relayed",
                                    roster.join(", ")
                                ),
                            )
                            .await?;
                        job.roster = Some(roster);
                        job.open_round(r, live, self.epoch);
                        Ok(())
                    }
                    Decision::Complete | Decision::Wait => Ok(()),
                    Decision::Void(missing) => {
                        let detail = format!(
                            "secure aggregation: {} of the {min} keys needed by the deadline (none from {})",
                            job.adverts.len(),
                            missing.join(", ")
                        );
                        self.retry(job, live, detail).await
                    }
                }
            }
            Stage::InitialWeights => {
                if !job.record.weights_key.is_empty() {
                    job.open_round(r, live, self.epoch);
                    return Ok(());
                }
                if now >= round.deadline {
                    let detail = "no worker uploaded the job's initial weights by the deadline";
                    return self.retry(job, live, detail.into()).await;
                }
                Ok(())
            }
            Stage::Collect => {
                let expected: BTreeSet<String> = round.participants.iter().cloned().collect();
                let delivered: BTreeSet<String> = round.uploaded.iter().cloned().collect();
                if expected.len() < min && now < round.deadline {
                    // Too few live workers to start: wait for more until the deadline.
                    return Ok(());
                }
                // A participant that stopped polling will not deliver: the attempt is void
                // now rather than at the deadline.
                let gone = expected
                    .iter()
                    .any(|w| !delivered.contains(w) && !live.contains(w));
                let deadline = if gone { now } else { round.deadline };
                match decide(&expected, &delivered, false, deadline, now) {
                    Decision::Complete if expected.len() >= min => match job.round.take() {
                        Some(round) => self.commit(job, round, live).await,
                        None => Ok(()),
                    },
                    Decision::Complete | Decision::Wait => Ok(()),
                    Decision::Void(missing) => {
                        let detail = if expected.len() < min {
                            format!(
                                "round {r}: {} live workers of the roster, {min} needed",
                                expected.len()
                            )
                        } else {
                            format!(
                                "round {r}: attempt void, no masked update from {} by the deadline ({} received stay masked and are dropped); the survivors retry with fresh updates",
                                missing.join(", "),
                                delivered.len()
                            )
                        };
                        self.retry(job, live, detail).await
                    }
                }
            }
        }
    }

    async fn commit(
        &self,
        job: &mut LiveJob,
        mut round: LiveRound,
        live: &HashSet<String>,
    ) -> Result<()> {
        let r = round.round;
        let mut weights = if job.secure() {
            // The sum over the participants, decoded: the noisy sum of their clipped
            // gradients, over the rows they sampled in expectation (batch_size each).
            let spec = &job.record.spec;
            let scale = crate::secure::roster_scale(
                &job.roster_adverts(),
                spec.clip_norm,
                f64::from(spec.batch_size),
            );
            let rows = f64::from(spec.batch_size) * round.participants.len() as f64;
            let base = self.artifacts.read_weights(&job.record.weights_key).await?;
            if base.len() != round.ring.len() {
                let reason = format!(
                    "round {r}: the stored weights have {} values, the sum {}",
                    base.len(),
                    round.ring.len()
                );
                return self.fail(job, reason).await;
            }
            round.weight = rows;
            crate::secure::apply_sum(&base, &round.ring, scale, rows)
        } else {
            let inv = (1.0 / round.weight) as f32;
            let mut weights = std::mem::take(&mut round.sum);
            for v in &mut weights {
                *v *= inv;
            }
            weights
        };
        // FedAdam steps from the second round on: the first has no global weights here
        // (under secure aggregation it has: the seeded ones).
        let server_step =
            job.record.spec.server_optimizer == ServerOptimizer::Adam && (r > 0 || job.secure());
        if server_step {
            let stepped = optimizer::step_stored(
                &self.artifacts,
                &job.record.id,
                r,
                &job.record.weights_key,
                &job.record.weights_digest,
                &mut weights,
                job.record.spec.learning_rate,
            )
            .await;
            match stepped {
                Ok(()) => {}
                // Lost or altered state cannot heal by retrying: the job fails, saying why.
                Err(CoordinatorError::Corrupt(reason)) => return self.fail(job, reason).await,
                Err(e) => return Err(e),
            }
        }
        // Every update was bounded, so their average is; the server step keeps it so. Should
        // a value still be out of range, every worker would refuse the weights: the job fails
        // here, saying why, rather than sending them out.
        if let Some(at) = weights
            .iter()
            .position(|v| !(v.is_finite() && v.abs() <= fedsynth_proto::MAX_ABS_WEIGHT))
        {
            let reason = format!(
                "round {r}: the aggregate's value {at} is {} (not finite or beyond ±{:e})",
                weights[at],
                fedsynth_proto::MAX_ABS_WEIGHT
            );
            return self.fail(job, reason).await;
        }
        let (key, digest) = self
            .artifacts
            .put_weights(&job.record.id, r + 1, &weights)
            .await?;
        drop(weights);
        let committed = self
            .store
            .commit_round(
                &job.record.id,
                r,
                &round.uploaded,
                round.weight,
                &key,
                &digest,
            )
            .await?;
        if !committed {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {}: round {r} was already committed",
                job.record.id
            )));
        }
        // The old weights and the moments that went with them are superseded (a job keeps
        // one model's worth, not one per round); a crash before this leaves stale files,
        // nothing worse. A worker still downloading the old weights is training a round
        // that has closed, whose upload would be refused anyway.
        let mut superseded = vec![job.record.weights_key.clone()];
        if server_step {
            superseded.push(crate::artifacts::optimizer_key(&job.record.id, r));
        }
        for old in superseded.iter().filter(|k| !k.is_empty()) {
            if let Err(e) = self.artifacts.delete(old).await {
                eprintln!("coordinator: could not delete {old}: {e}");
            }
        }
        let dropped: Vec<&String> = job
            .accepted
            .iter()
            .filter(|w| !round.uploaded.contains(w))
            .collect();
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().map(|s| s.as_str()).collect();
            self.store
                .audit(
                    "coordinator",
                    "dropped",
                    &job.record.id,
                    &format!("round {r}: no update from {}", names.join(", ")),
                )
                .await?;
        }
        job.record.round = r + 1;
        job.record.tries = 0;
        job.record.weights_key = key;
        job.record.weights_digest = digest;
        if job.record.round >= job.record.spec.rounds {
            self.store
                .set_state(&job.record.id, JobState::Sampling, "")
                .await?;
            job.record.state = JobState::Sampling;
            job.sampling_since = Instant::now();
        } else {
            job.open_round(r + 1, live, self.epoch);
        }
        Ok(())
    }

    async fn step_sampling(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        let sampler_live = job.sampler.as_ref().is_some_and(|s| live.contains(s));
        if !sampler_live {
            if let Some(next) = job.accepted.iter().find(|w| live.contains(*w)).cloned() {
                self.store
                    .audit(
                        "coordinator",
                        "sampler",
                        &job.record.id,
                        &format!("{next} samples the final generator"),
                    )
                    .await?;
                job.sampler = Some(next);
                job.sampling_since = now;
            } else if now.duration_since(job.sampling_since)
                > Duration::from_secs(
                    job.record.spec.round_deadline_s * u64::from(job.record.spec.round_tries),
                )
            {
                return self
                    .fail(
                        job,
                        "no participating worker was reachable to sample the final generator"
                            .into(),
                    )
                    .await;
            }
        }
        Ok(())
    }

    // ---- authentication -------------------------------------------------------------------
    // Credentials are read from the request synchronously, so that no future holds a borrow
    // of a (non-`Sync`) streaming request across an await.

    async fn owner(&self, token: Option<String>, what: &str) -> Result<()> {
        match token {
            Some(t) if same_secret(&t, &self.config.owner_token) => Ok(()),
            other => {
                let why = if other.is_none() {
                    "no token"
                } else {
                    "a wrong token"
                };
                self.deny("unknown", &format!("{what} with {why}")).await?;
                Err(CoordinatorError::Unauthenticated(format!(
                    "{what}: the job owner's token is missing or wrong"
                )))
            }
        }
    }

    fn credentials<T>(&self, req: &Request<T>) -> Credentials {
        let (digest, names) = if self.config.tls.is_none() {
            (Some(String::new()), None)
        } else {
            let leaf = req.peer_certs().filter(|c| !c.is_empty());
            (
                leaf.as_ref()
                    .map(|c| hex::encode(Sha256::digest(c[0].as_ref()))),
                Some(leaf.map_or_else(Vec::new, |c| {
                    fedsynth_privacy::signature::certificate_names(c[0].as_ref())
                })),
            )
        };
        Credentials {
            token: bearer(req),
            digest,
            names,
        }
    }

    /// Checks a worker's credentials; returns its federation and, when `worker` is given,
    /// its checked id. Every refusal goes to the audit trail.
    async fn worker(
        &self,
        creds: &Credentials,
        worker: Option<&str>,
        what: &str,
    ) -> Result<(String, String)> {
        let result = self.check_worker(creds, worker).await;
        if let Err(e) = &result {
            // Only a well-formed id is named; anything else a caller sent is not echoed.
            let actor = worker
                .and_then(|w| WorkerId::new(w).ok())
                .map_or_else(|| "unknown".to_string(), |id| id.to_string());
            self.deny(&actor, &format!("{what}: {e}")).await?;
        }
        result
    }

    async fn check_worker(
        &self,
        creds: &Credentials,
        worker: Option<&str>,
    ) -> Result<(String, String)> {
        let token = creds.token.as_deref().ok_or_else(|| {
            CoordinatorError::Unauthenticated("no enrolment token (authorization: Bearer …)".into())
        })?;
        let federation = self
            .config
            .federations
            .iter()
            .find(|f| same_secret(token, &f.enrolment_token))
            .map(|f| f.name.clone())
            .ok_or_else(|| CoordinatorError::Unauthenticated("unknown enrolment token".into()))?;
        let digest = creds.digest.as_deref().ok_or_else(|| {
            CoordinatorError::Unauthenticated(
                "workers must present a client certificate (mutual TLS)".into(),
            )
        })?;
        let Some(worker) = worker else {
            return Ok((federation, String::new()));
        };
        let id = WorkerId::new(worker).map_err(CoordinatorError::Invalid)?;
        if !id.as_str().starts_with(&format!("{federation}/")) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "worker '{id}' is not enrolled in federation '{federation}'"
            )));
        }
        let name = id.as_str().split_once('/').map_or("", |(_, n)| n);
        if !creds.issued_for(name) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "the client certificate is not issued for worker '{name}'"
            )));
        }
        match self.store.worker_cert(id.as_str()).await? {
            None => Err(CoordinatorError::Unauthenticated(format!(
                "worker '{id}' has not registered"
            ))),
            Some(d) if d != digest => Err(CoordinatorError::PermissionDenied(format!(
                "worker '{id}' registered with another certificate"
            ))),
            Some(_) => Ok((federation, id.to_string())),
        }
    }

    fn status_of(
        &self,
        record: &JobRecord,
        participants: &[crate::store::Participant],
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

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "submit").await?;
        let body = req.into_inner();
        let request_id = body.client_request_id.trim();
        if request_id.is_empty() || request_id.len() > 128 {
            return Err(CoordinatorError::Invalid(
                "client_request_id must be 1-128 characters".into(),
            )
            .into());
        }
        let spec = JobSpec::from_toml(&body.spec_toml).map_err(CoordinatorError::Invalid)?;
        if !c
            .config
            .federations
            .iter()
            .any(|f| f.name == spec.federation)
        {
            return Err(CoordinatorError::Invalid(format!(
                "job spec: federation '{}' is not known to this coordinator",
                spec.federation
            ))
            .into());
        }
        let mut state = c.state.lock().await;
        let (record, created) = c.store.submit(&new_job_id(), request_id, &spec).await?;
        if created {
            c.store
                .audit(
                    "owner",
                    "submit",
                    &record.id,
                    &format!(
                        "'{}' for federation {}: ε = {} per holder, {} rounds × {} steps, min {} workers, {}",
                        spec.name, spec.federation, spec.epsilon, spec.rounds, spec.local_steps, spec.min_workers,
                        aggregation_text(spec.secure_aggregation)
                    ),
                )
                .await?;
            state.jobs.insert(
                record.id.clone(),
                LiveJob::new(record.clone(), vec![], HashSet::new()),
            );
        } else {
            c.store
                .audit(
                    "owner",
                    "submit",
                    &record.id,
                    &format!("repeated request id {request_id}: same job"),
                )
                .await?;
        }
        Ok(Response::new(pb::SubmitResponse {
            job_id: record.id,
            created,
        }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "status").await?;
        let id = req.into_inner().job_id;
        let record = c
            .store
            .job(&id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no job '{id}'")))?;
        let participants = c.store.participants(&id).await?;
        Ok(Response::new(c.status_of(&record, &participants)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "status").await?;
        let mut jobs = Vec::new();
        for record in c.store.jobs().await? {
            let participants = c.store.participants(&record.id).await?;
            jobs.push(c.status_of(&record, &participants));
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type FetchArtifactStream = ChunkStream;

    async fn fetch_artifact(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "fetch").await?;
        let id = req.into_inner().job_id;
        let record = c.done_job(&id).await?;
        c.store
            .audit(
                "owner",
                "fetch",
                &id,
                &format!("artifact of {} bytes", record.artifact_bytes),
            )
            .await?;
        Ok(Response::new(c.stream_object(&record.artifact_key).await?))
    }

    async fn fetch_signature(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<pb::ArtifactSignatureText>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "fetch").await?;
        let id = req.into_inner().job_id;
        let record = c.done_job(&id).await?;
        let mut text = Vec::new();
        match c
            .artifacts
            .stream(&format!("{}.sig", record.artifact_key))
            .await
        {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                while let Some(piece) = stream.next().await {
                    text.extend_from_slice(&piece?);
                    if text.len() > fedsynth_proto::MAX_SIGNATURE_BYTES {
                        break;
                    }
                }
            }
            // An unsigned artifact (its worker had no certificate) has no signature object.
            Err(CoordinatorError::Artifacts(object_store::Error::NotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Response::new(pb::ArtifactSignatureText {
            text: String::from_utf8_lossy(&text).into_owned(),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "audit").await?;
        let body = req.into_inner();
        let job = body.job_id;
        let limit = match body.limit {
            0 => fedsynth_proto::AUDIT_PAGE,
            n => n.min(fedsynth_proto::AUDIT_PAGE),
        };
        let entries = c
            .store
            .audit_trail(
                (!job.is_empty()).then_some(job.as_str()),
                body.after_seq,
                limit,
            )
            .await?
            .into_iter()
            .map(|a| pb::AuditEntry {
                seq: a.seq,
                at_ms: a.at_ms,
                actor: a.actor,
                action: a.action,
                job_id: a.job_id,
                detail: a.detail,
                prev_hash: a.prev_hash,
                hash: a.hash,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}

#[tonic::async_trait]
impl Federation for FederationService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        let federation = c.worker(&creds, None, "register").await?.0;
        let digest = creds.digest.clone().unwrap_or_default();
        let body = req.get_ref();
        if body.protocol_version != PROTOCOL_VERSION {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "protocol version {} is not supported: this coordinator speaks {PROTOCOL_VERSION}; upgrade the worker",
                body.protocol_version
            ))
            .into());
        }
        if body.federation != federation {
            c.deny(
                "unknown",
                &format!(
                    "register: token of {federation}, claimed another federation ({})",
                    crate::store::bounded(&body.federation, 64)
                ),
            )
            .await?;
            return Err(CoordinatorError::PermissionDenied(format!(
                "the enrolment token is not the one of federation '{}'",
                body.federation
            ))
            .into());
        }
        let id = WorkerId::new(format!("{federation}/{}", body.worker_name))
            .map_err(CoordinatorError::Invalid)?;
        // One certificate per worker: a member cannot enrol extra workers (and meet
        // min_workers alone) with its own certificate.
        if !creds.issued_for(&body.worker_name) {
            c.deny(
                id.as_str(),
                "register: the client certificate is not issued for this worker",
            )
            .await?;
            return Err(CoordinatorError::PermissionDenied(format!(
                "the client certificate is not issued for worker '{}' (fedsynth certs issues one per worker)",
                body.worker_name
            ))
            .into());
        }
        let first = match c
            .store
            .register_worker(id.as_str(), &federation, &digest)
            .await
        {
            Ok(first) => first,
            Err(e) => {
                c.deny(id.as_str(), &format!("register: {e}")).await?;
                return Err(e.into());
            }
        };
        c.store
            .audit(
                id.as_str(),
                "enrol",
                "",
                if first { "enrolled" } else { "reconnected" },
            )
            .await?;
        let mut state = c.state.lock().await;
        state.seen.insert(id.to_string(), Instant::now());
        state.federation_of.insert(id.to_string(), federation);
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id.to_string(),
            poll_interval_ms: c.config.poll_interval_ms,
        }))
    }

    async fn poll(
        &self,
        req: Request<pb::PollRequest>,
    ) -> Result<Response<pb::PollResponse>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (federation, worker) = c.worker(&creds, Some(&worker), "poll").await?;
        let mut state = c.state.lock().await;
        state.seen.insert(worker.clone(), Instant::now());
        state
            .federation_of
            .insert(worker.clone(), federation.clone());
        let mut jobs: Vec<&LiveJob> = state
            .jobs
            .values()
            .filter(|j| j.record.spec.federation == federation)
            .collect();
        jobs.sort_by_key(|j| (j.record.created_ms, j.record.id.clone()));
        let mut task = Task::Idle(pb::Idle {});
        for job in jobs {
            let id = job.record.id.clone();
            match job.record.state {
                JobState::Enrolling if !job.answered.contains(&worker) => {
                    task = Task::Offer(pb::JobOffer {
                        job_id: id,
                        spec_toml: job.record.spec.to_toml(),
                    });
                }
                JobState::Running if job.accepted.contains(&worker) => match &job.round {
                    Some(r) if wanted_from(job, r, &worker) => {
                        task = Task::Train(pb::TrainRound {
                            job_id: id,
                            round: r.round,
                            base_digest: job.record.weights_digest.clone(),
                            stage: r.stage.as_str().into(),
                            attempt: r.attempt,
                            participants: r.participants.clone(),
                        });
                    }
                    _ => continue,
                },
                JobState::Sampling if job.sampler.as_deref() == Some(worker.as_str()) => {
                    task = Task::Sample(pb::SampleJob {
                        job_id: id,
                        base_digest: job.record.weights_digest.clone(),
                    });
                }
                _ => continue,
            }
            break;
        }
        Ok(Response::new(pb::PollResponse { task: Some(task) }))
    }

    async fn answer(
        &self,
        req: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerResponse>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (federation, worker) = c.worker(&creds, Some(&worker), "answer").await?;
        let body = req.into_inner();
        let mut state = c.state.lock().await;
        let job = state
            .jobs
            .get_mut(&body.job_id)
            .filter(|j| j.record.spec.federation == federation)
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "job '{}' is not open to federation '{federation}'",
                    body.job_id
                ))
            })?;
        if job.record.state != JobState::Enrolling {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {} is no longer enrolling",
                body.job_id
            ))
            .into());
        }
        let reason: String = body.reason.chars().take(500).collect();
        if c.store
            .answer(&body.job_id, &worker, body.accept, &reason)
            .await?
        {
            job.answered.insert(worker.clone());
            if body.accept {
                job.accepted.push(worker.clone());
                c.store
                    .audit(&worker, "accept", &body.job_id, "accepted the job")
                    .await?;
            } else {
                c.store
                    .audit(&worker, "refuse", &body.job_id, &reason)
                    .await?;
            }
            c.wake.notify_one();
        }
        Ok(Response::new(pb::AnswerResponse {}))
    }

    type DownloadWeightsStream = ChunkStream;

    async fn download_weights(
        &self,
        req: Request<pb::DownloadWeightsRequest>,
    ) -> Result<Response<Self::DownloadWeightsStream>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "download").await?;
        let job_id = req.into_inner().job_id;
        let key = {
            let state = c.state.lock().await;
            let job = state
                .jobs
                .get(&job_id)
                .filter(|j| j.accepted.contains(&worker))
                .ok_or_else(|| {
                    CoordinatorError::PermissionDenied(format!(
                        "{worker} takes no part in job '{job_id}'"
                    ))
                })?;
            if job.record.weights_key.is_empty() {
                return Err(CoordinatorError::FailedPrecondition(
                    "no global weights yet: round 0 starts from the job's seed".into(),
                )
                .into());
            }
            job.record.weights_key.clone()
        };
        Ok(Response::new(c.stream_object(&key).await?))
    }

    async fn publish_key(
        &self,
        req: Request<pb::PublishKeyRequest>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "publish key").await?;
        let body = req.into_inner();
        let advert = fedsynth_privacy::secagg::KeyAdvert::from_text(&body.advert)
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        // The coordinator checks the fields only: the signature is for the other workers,
        // who hold the federation's CA, to check.
        advert
            .verify(&body.job_id, &worker, None)
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        let mut state = c.state.lock().await;
        let job = state
            .jobs
            .get_mut(&body.job_id)
            .filter(|j| j.accepted.contains(&worker) && j.secure())
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "{worker} takes no part in a secure aggregation job '{}'",
                    body.job_id
                ))
            })?;
        if let Some(known) = job.adverts.get(&worker) {
            if *known == body.advert {
                return Ok(Response::new(pb::UploadAck {
                    accepted: true,
                    message: "key already published".into(),
                }));
            }
            return Err(CoordinatorError::FailedPrecondition(format!(
                "{worker} published another key for this job already"
            ))
            .into());
        }
        let open = job
            .round
            .as_ref()
            .is_some_and(|r| r.stage == Stage::AdvertiseKeys);
        if !open || job.record.state != JobState::Running {
            return Err(CoordinatorError::FailedPrecondition(
                "the job is not collecting keys".into(),
            )
            .into());
        }
        job.adverts.insert(worker, body.advert);
        drop(state);
        c.wake.notify_one();
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: "key published".into(),
        }))
    }

    async fn fetch_keys(
        &self,
        req: Request<pb::FetchKeysRequest>,
    ) -> Result<Response<pb::KeyList>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "fetch keys").await?;
        let job_id = req.into_inner().job_id;
        let state = c.state.lock().await;
        let job = state
            .jobs
            .get(&job_id)
            .filter(|j| j.roster.iter().flatten().any(|w| *w == worker))
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "{worker} is not in the key roster of job '{job_id}'"
                ))
            })?;
        let adverts = job
            .roster
            .iter()
            .flatten()
            .filter_map(|w| job.adverts.get(w).cloned())
            .collect();
        Ok(Response::new(pb::KeyList { adverts }))
    }

    async fn upload_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        c.worker(&creds, None, "upload").await?;
        let mut stream = req.into_inner();
        let header = match first(&mut stream, "an update").await?.part {
            Some(pb::update_chunk::Part::Header(h)) => h,
            _ => {
                return Err(
                    CoordinatorError::Invalid("an update starts with its header".into()).into(),
                );
            }
        };
        let (_, worker) = c.worker(&creds, Some(&header.worker_id), "upload").await?;
        if header.parameters == 0 || header.parameters > MAX_PARAMETERS {
            return Err(CoordinatorError::Invalid(format!(
                "an update has 1 to {MAX_PARAMETERS} parameters, not {}",
                header.parameters
            ))
            .into());
        }
        // Check the round before receiving anything large.
        let kind = {
            let state = c.state.lock().await;
            check_round(&state, &header, &worker)?
        };
        if kind == UploadKind::Plain
            && !(header.weight.is_finite() && header.weight > 0.0 && header.weight <= 1e12)
        {
            return Err(CoordinatorError::Invalid(
                "an update's weight must be in (0, 1e12]".into(),
            )
            .into());
        }
        // The update is spooled to an unlinked temporary file as it arrives, so a stream
        // costs the coordinator about one chunk of memory, whatever the model's size; it is
        // added to the round's sum only once whole and valid.
        let n = header.parameters as usize;
        let mut spool = std::io::BufWriter::new(tempfile::tempfile()?);
        let mut received = 0usize;
        let mut decoded = Vec::with_capacity(CHUNK_BYTES / 4);
        while let Some(chunk) = stream.next().await {
            let Some(pb::update_chunk::Part::Data(bytes)) = chunk?.part else {
                return Err(
                    CoordinatorError::Invalid("a second header in one update".into()).into(),
                );
            };
            if bytes.len() % 4 != 0 {
                return Err(CoordinatorError::Invalid(
                    "an update chunk is not whole 32-bit values".into(),
                )
                .into());
            }
            decoded.clear();
            if kind != UploadKind::Ring {
                fedsynth_proto::extend_f32(&mut decoded, &bytes).ok_or_else(|| {
                    CoordinatorError::Invalid("an update chunk is not whole f32 values".into())
                })?;
            }
            received += bytes.len() / 4;
            if received > n {
                return Err(CoordinatorError::Invalid(
                    "the update is longer than its header says".into(),
                )
                .into());
            }
            if decoded
                .iter()
                .any(|v| !(v.is_finite() && v.abs() <= fedsynth_proto::MAX_ABS_WEIGHT))
            {
                return Err(CoordinatorError::Invalid(format!(
                    "the update holds NaN, infinite or out-of-range values (beyond ±{:e})",
                    fedsynth_proto::MAX_ABS_WEIGHT
                ))
                .into());
            }
            std::io::Write::write_all(&mut spool, &bytes)?;
        }
        if received != n {
            return Err(CoordinatorError::Invalid(format!(
                "the update ended after {received} of {n} values"
            ))
            .into());
        }
        let mut spool = spool
            .into_inner()
            .map_err(|e| CoordinatorError::Io(e.into_error()))?;
        std::io::Seek::rewind(&mut spool)?;
        match kind {
            UploadKind::Plain => {}
            UploadKind::Initial => return initial_weights(c, &header, &worker, spool, n).await,
            UploadKind::Ring => return add_ring(c, &header, &worker, spool, n).await,
        }
        // A bounded move (the spec's max_update_norm): measured against the round's global
        // weights, and scaled back to the bound before it is averaged.
        let bound = {
            let state = c.state.lock().await;
            state.jobs.get(&header.job_id).and_then(|j| {
                let b = j.record.spec.max_update_norm?;
                (!j.record.weights_key.is_empty() && j.record.weights_digest == header.base_digest)
                    .then(|| (b, j.record.weights_key.clone()))
            })
        };
        if let Some((b, base_key)) = bound {
            let norm = move_norm(&c.artifacts, &base_key, &mut spool, n).await?;
            if norm > b {
                spool = scale_move(&c.artifacts, &base_key, spool, n, b / norm).await?;
                c.store
                    .audit(
                        &worker,
                        "clipped",
                        &header.job_id,
                        &format!(
                            "round {}: the update moved the weights by {norm:.4}, scaled back to {b}",
                            header.round
                        ),
                    )
                    .await?;
            }
        }
        let mut state = c.state.lock().await;
        check_round(&state, &header, &worker)?;
        let job = state
            .jobs
            .get_mut(&header.job_id)
            .ok_or_else(|| CoordinatorError::NotFound("job gone".into()))?;
        let Some(round) = job.round.as_mut() else {
            return Err(CoordinatorError::FailedPrecondition("the round closed".into()).into());
        };
        if round.sum.is_empty() {
            round.sum = vec![0.0; n];
        }
        let w = header.weight as f32;
        let sum = &mut round.sum;
        spool_blocks(&mut spool, n, |at, bytes| {
            for (s, b) in sum[at..].iter_mut().zip(bytes.chunks_exact(4)) {
                *s += w * f32_at(b);
            }
        })?;
        round.weight += header.weight;
        round.uploaded.push(worker.clone());
        let r = round.round;
        drop(state);
        c.wake.notify_one();
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: format!("round {r} update received"),
        }))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        c.worker(&creds, None, "artifact").await?;
        let mut stream = req.into_inner();
        let header = match first(&mut stream, "an artifact").await?.part {
            Some(pb::artifact_chunk::Part::Header(h)) => h,
            _ => {
                return Err(
                    CoordinatorError::Invalid("an artifact starts with its header".into()).into(),
                );
            }
        };
        let (_, worker) = c
            .worker(&creds, Some(&header.worker_id), "artifact")
            .await?;
        if header.size > MAX_ARTIFACT_BYTES
            || header.sha256.len() != 64
            || header.signature.len() > fedsynth_proto::MAX_SIGNATURE_BYTES
        {
            return Err(CoordinatorError::Invalid(
                "artifact header: bad size, SHA-256 or signature".into(),
            )
            .into());
        }
        let format = {
            let state = c.state.lock().await;
            let job = state
                .jobs
                .get(&header.job_id)
                .filter(|j| {
                    j.record.state == JobState::Sampling
                        && j.sampler.as_deref() == Some(worker.as_str())
                })
                .ok_or_else(|| {
                    CoordinatorError::PermissionDenied(format!(
                        "{worker} is not the sampler of job '{}'",
                        header.job_id
                    ))
                })?;
            job.record.spec.format.clone()
        };
        let key = format!("jobs/{}/synthetic.{format}.fsx", header.job_id);
        let mut upload = c.artifacts.upload(&key).await?;
        while let Some(chunk) = stream.next().await {
            let part = match chunk {
                Ok(pb::ArtifactChunk {
                    part: Some(pb::artifact_chunk::Part::Data(bytes)),
                }) => bytes,
                Ok(_) => {
                    upload.abort().await;
                    return Err(CoordinatorError::Invalid(
                        "a second header in one artifact".into(),
                    )
                    .into());
                }
                Err(e) => {
                    upload.abort().await;
                    return Err(e);
                }
            };
            if upload.bytes() + part.len() as u64 > header.size {
                upload.abort().await;
                return Err(CoordinatorError::Invalid(
                    "the artifact is longer than its header says".into(),
                )
                .into());
            }
            upload.put(part.into()).await?;
        }
        upload.finish(header.size, &header.sha256).await?;
        // The signature goes beside the artifact (the owner, not the coordinator, checks it),
        // stored before the job is marked done.
        if !header.signature.is_empty() {
            let mut sig = c.artifacts.upload(&format!("{key}.sig")).await?;
            sig.put(header.signature.clone().into_bytes().into())
                .await?;
            sig.finish_own().await?;
        }
        let mut state = c.state.lock().await;
        if c.store.finish(&header.job_id, &key, header.size).await? {
            c.store
                .audit(
                    &worker,
                    "artifact",
                    &header.job_id,
                    &format!("encrypted synthetic dataset, {} bytes", header.size),
                )
                .await?;
            if let Some(job) = state.jobs.get_mut(&header.job_id) {
                job.record.state = JobState::Done;
            }
            state.jobs.remove(&header.job_id);
        }
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: "artifact stored".into(),
        }))
    }
}

/// Stores a worker's upload of the job's seeded initial weights as the job's first weights.
async fn initial_weights(
    c: &Coordinator,
    header: &pb::UpdateHeader,
    worker: &str,
    mut spool: std::fs::File,
    n: usize,
) -> Result<Response<pb::UploadAck>, Status> {
    let mut bytes = vec![0u8; n * 4];
    std::io::Read::read_exact(&mut spool, &mut bytes)?;
    let values: Vec<f32> = bytes.chunks_exact(4).map(f32_at).collect();
    drop(bytes);
    let (key, digest) = c.artifacts.put_weights(&header.job_id, 0, &values).await?;
    let mut state = c.state.lock().await;
    check_round(&state, header, worker)?;
    if !c
        .store
        .set_initial_weights(&header.job_id, &key, &digest)
        .await?
    {
        return Err(CoordinatorError::FailedPrecondition(
            "the job has its initial weights already".into(),
        )
        .into());
    }
    if let Some(job) = state.jobs.get_mut(&header.job_id) {
        job.record.weights_key = key;
        job.record.weights_digest = digest.clone();
    }
    drop(state);
    c.store
        .audit(
            worker,
            "initial",
            &header.job_id,
            &format!("the job's seeded initial weights, digest {digest}"),
        )
        .await?;
    c.wake.notify_one();
    Ok(Response::new(pb::UploadAck {
        accepted: true,
        message: "initial weights stored".into(),
    }))
}

/// Adds a worker's masked ring words into the attempt's sum (wrapping).
async fn add_ring(
    c: &Coordinator,
    header: &pb::UpdateHeader,
    worker: &str,
    mut spool: std::fs::File,
    n: usize,
) -> Result<Response<pb::UploadAck>, Status> {
    let mut state = c.state.lock().await;
    check_round(&state, header, worker)?;
    let job = state
        .jobs
        .get_mut(&header.job_id)
        .ok_or_else(|| CoordinatorError::NotFound("job gone".into()))?;
    let Some(round) = job.round.as_mut() else {
        return Err(CoordinatorError::FailedPrecondition("the round closed".into()).into());
    };
    if round.ring.is_empty() {
        round.ring = vec![0; n];
    }
    let ring = &mut round.ring;
    spool_blocks(&mut spool, n, |at, bytes| {
        for (s, b) in ring[at..].iter_mut().zip(bytes.chunks_exact(4)) {
            *s = s.wrapping_add(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
    })?;
    round.uploaded.push(worker.to_string());
    let (r, a) = (round.round, round.attempt);
    drop(state);
    c.wake.notify_one();
    Ok(Response::new(pb::UploadAck {
        accepted: true,
        message: format!("round {r} attempt {a}: masked update received"),
    }))
}

/// Reads a spool of `n` 32-bit values a chunk at a time, handing each chunk's bytes and the
/// index of its first value to `f`.
fn spool_blocks(
    spool: &mut std::fs::File,
    n: usize,
    mut f: impl FnMut(usize, &[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut at = 0;
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(spool, &mut buf[..len * 4])?;
        f(at, &buf[..len * 4]);
        at += len;
    }
    Ok(())
}

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// L2 distance between a spooled update of `n` values and the stored weights `base_key`,
/// read block by block; the spool is rewound.
async fn move_norm(
    artifacts: &crate::artifacts::Artifacts,
    base_key: &str,
    spool: &mut std::fs::File,
    n: usize,
) -> Result<f64> {
    let mut base = artifacts.reader(base_key).await?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let (mut at, mut sum) = (0, 0.0f64);
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(spool, &mut buf[..len * 4])?;
        let g = base.read_exact(len * 4).await?.ok_or_else(|| {
            CoordinatorError::Corrupt("the global weights end before the update".into())
        })?;
        for (u, g) in buf[..len * 4].chunks_exact(4).zip(g.chunks_exact(4)) {
            let d = f64::from(f32_at(u)) - f64::from(f32_at(g));
            sum += d * d;
        }
        at += len;
    }
    std::io::Seek::rewind(spool)?;
    Ok(sum.sqrt())
}

/// A new spool holding base + factor·(update − base), rewound.
async fn scale_move(
    artifacts: &crate::artifacts::Artifacts,
    base_key: &str,
    mut spool: std::fs::File,
    n: usize,
    factor: f64,
) -> Result<std::fs::File> {
    let mut base = artifacts.reader(base_key).await?;
    let mut out = std::io::BufWriter::new(tempfile::tempfile()?);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut at = 0;
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(&mut spool, &mut buf[..len * 4])?;
        let g = base.read_exact(len * 4).await?.ok_or_else(|| {
            CoordinatorError::Corrupt("the global weights end before the update".into())
        })?;
        for (u, g) in buf[..len * 4].chunks_exact(4).zip(g.chunks_exact(4)) {
            let (u, g) = (f64::from(f32_at(u)), f64::from(f32_at(g)));
            std::io::Write::write_all(&mut out, &((g + factor * (u - g)) as f32).to_le_bytes())?;
        }
        at += len;
    }
    let mut file = out
        .into_inner()
        .map_err(|e| CoordinatorError::Io(e.into_error()))?;
    std::io::Seek::rewind(&mut file)?;
    Ok(file)
}

/// The first message of a client stream.
async fn first<T>(stream: &mut Streaming<T>, what: &str) -> Result<T, Status> {
    match stream.next().await {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e),
        None => Err(CoordinatorError::Invalid(format!("{what} arrived empty")).into()),
    }
}

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

/// Whether the open stage `r` of `job` waits for something from `worker`.
fn wanted_from(job: &LiveJob, r: &LiveRound, worker: &str) -> bool {
    let in_roster = || job.roster.iter().flatten().any(|w| w == worker);
    match r.stage {
        Stage::AdvertiseKeys => !job.adverts.contains_key(worker),
        Stage::InitialWeights => in_roster() && job.record.weights_key.is_empty(),
        Stage::Collect if job.secure() => {
            r.participants.iter().any(|w| w == worker) && !r.uploaded.iter().any(|w| w == worker)
        }
        Stage::Collect => !r.uploaded.iter().any(|w| w == worker),
    }
}

/// What an upload is, by the job's mode and the round's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadKind {
    /// Plain aggregation: a worker's f32 weights, averaged by its weight.
    Plain,
    /// Secure aggregation: the job's seeded initial weights (f32, no data).
    Initial,
    /// Secure aggregation: masked ring words.
    Ring,
}

fn check_round(state: &State, header: &pb::UpdateHeader, worker: &str) -> Result<UploadKind> {
    let job = state
        .jobs
        .get(&header.job_id)
        .filter(|j| j.accepted.iter().any(|w| w == worker))
        .ok_or_else(|| {
            CoordinatorError::PermissionDenied(format!(
                "{worker} takes no part in job '{}'",
                header.job_id
            ))
        })?;
    let round = job
        .round
        .as_ref()
        .filter(|r| job.record.state == JobState::Running && r.round == header.round)
        .ok_or_else(|| {
            CoordinatorError::FailedPrecondition(format!(
                "job {}: round {} is not open (the job is {} at round {})",
                header.job_id,
                header.round,
                job.record.state.as_str(),
                job.record.round
            ))
        })?;
    let encoding = match header.encoding.as_str() {
        "" | "f32" => "f32",
        "ring32" => "ring32",
        other => {
            return Err(CoordinatorError::Invalid(format!(
                "unknown update encoding '{}'",
                other.escape_debug()
            )));
        }
    };
    let kind = match (job.secure(), round.stage, encoding) {
        (false, Stage::Collect, "f32") => UploadKind::Plain,
        (true, Stage::InitialWeights, "f32") => UploadKind::Initial,
        (true, Stage::Collect, "ring32") => UploadKind::Ring,
        (true, Stage::Collect, _) => {
            return Err(CoordinatorError::Invalid(
                "this job uses secure aggregation: updates must be masked ring words".into(),
            ));
        }
        _ => {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "the round is at stage {}, not taking {encoding} uploads",
                round.stage.as_str()
            )));
        }
    };
    if kind == UploadKind::Initial {
        if !job.roster.iter().flatten().any(|w| w == worker) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "{worker} is not in the job's roster"
            )));
        }
        if !(job.record.weights_key.is_empty() && header.base_digest.is_empty()) {
            return Err(CoordinatorError::FailedPrecondition(
                "the job has its initial weights already".into(),
            ));
        }
    }
    if kind == UploadKind::Ring {
        if !round.participants.iter().any(|w| w == worker) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "{worker} is not a participant of this attempt"
            )));
        }
        if header.attempt != round.attempt {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "the update is for attempt {}, the round is at attempt {}",
                header.attempt, round.attempt
            )));
        }
    }
    if round.uploaded.iter().any(|w| w == worker) {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "{worker} already delivered round {}",
            header.round
        )));
    }
    if header.base_digest != job.record.weights_digest {
        return Err(CoordinatorError::FailedPrecondition(
            "the update starts from other weights than this round's".into(),
        ));
    }
    // The model's size comes from the spec, never from the first upload: one worker cannot
    // lock the others out by uploading first with another size.
    if header.parameters != job.record.spec.parameters {
        return Err(CoordinatorError::Invalid(format!(
            "the update has {} parameters, the job's model {}",
            header.parameters, job.record.spec.parameters
        )));
    }
    if kind == UploadKind::Plain && header.weight > job.record.spec.max_worker_weight {
        return Err(CoordinatorError::Invalid(format!(
            "the update's weight {} is above the job's max_worker_weight {}",
            header.weight, job.record.spec.max_worker_weight
        )));
    }
    Ok(kind)
}
