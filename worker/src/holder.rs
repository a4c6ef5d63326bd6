//! The data holder's side of a job, with no networking: deciding whether a job fits the
//! holder's budget (and charging it once), training a round from given weights, and
//! sampling the final generator into an encrypted file.
//!
//! Promises kept here:
//! - a job is charged to the holder's ledger once, before anything is released, and covers
//!   the noisy row count and every DP-SGD step of every round: the count is charged (key
//!   `job J: row count`) before it is drawn, and the training (key `job J`), whose sampling
//!   rate and noise follow from the noisy count, never from the exact one;
//! - a job outside the holder's policy (largest ε and δ per job, allowed recipients) is
//!   refused before anything is charged;
//! - DP noise and batch sampling always come from the operating system's generator; a
//!   configured `seed` fixes the model's randomness only;
//! - each round is trained at most once: its result is cached in the state directory and
//!   re-sent as is when asked again (after a coordinator or worker restart), so a retry
//!   never releases a second, differently-noised update that the charge did not cover.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedsynth_privacy::envelope::{self, PublicKey};
use fedsynth_privacy::ledger::{Budget, Ledger};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::secagg::{self, JobKey, KeyAdvert, Pairs};
use fedsynth_privacy::signature;
use fedsynth_privacy::{
    AccountantKind, Delta, DpEvent, Epsilon, SamplingRate, Steps, calibrate_noise, calibrate_with,
};
use fedsynth_proto::{JobSpec, SecureAggregation, ServerOptimizer};
use fedsynth_synth::ctgan::GanTrainer;
use fedsynth_synth::device::{self, DeviceChoice};
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::fedstats::{self, Memo, Step, Wave};
use fedsynth_synth::models::{Model, ModelSettings};
use fedsynth_synth::plan::{ROW_COUNT_NOISE, noisy_row_count};
use fedsynth_synth::schema::Schema;
use fedsynth_synth::stats::{Noise, Plan};
use fedsynth_synth::table::{
    Format, RawTable, Table, declared_temporal, output_temporal, read_raw,
};
use fedsynth_synth::train::{Adam, Stepper, TrainConfig};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};

/// What the holder decided for a job, stored before the answer is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlan {
    /// The job.
    pub job_id: String,
    /// SHA-256 of the accepted spec: later tasks must be for this very spec.
    pub spec_digest: String,
    /// Poisson sampling rate of local steps.
    pub sampling_rate: f64,
    /// Noise multiplier of local steps.
    pub noise_multiplier: f64,
    /// The DP-noised row count (the FedAvg weight, and what the sampling rate is set from).
    pub noisy_rows: f64,
    /// ε charged for the job (count + statistics + training, composed).
    pub epsilon: f64,
    /// A partial schema's statistics: the noise they are released with (planned once, the
    /// same at every holder: a function of the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Noise>,
}

/// What the holders completed from a partial schema's statistics, kept in the job's
/// directory: the schema, its model's size and the summed DP row count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedSchema {
    /// The completed schema (TOML).
    pub schema_toml: String,
    /// The model's size for it.
    pub parameters: u64,
    /// The holders' summed noisy row count.
    pub rows: f64,
}

/// One statistics wave's upload, kept so that a retry re-sends it unchanged (a second,
/// differently-noised release would not be covered by the charge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticsUpload {
    /// SHA-256 of the participant set it was masked for.
    pub participants: String,
    /// The masked words.
    pub words: Vec<u32>,
    /// The released names.
    pub released: Vec<String>,
    /// Once complete: the schema and its model's size.
    pub schema: Option<(String, u64)>,
}

/// SHA-256 of little-endian f32 values, hex (the same digest the coordinator computes).
pub fn weights_digest(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The holder: its table, its ledger, its state directory.
pub struct Holder {
    holder: String,
    dataset: String,
    table: Arc<RawTable>,
    /// The holder's table file (a Parquet file's declared date and timestamp types shape the
    /// output's).
    data: PathBuf,
    /// The rows typed for the last schema asked for (every round of a job asks again).
    typed_cache: std::sync::Mutex<Option<(String, Arc<Table>)>>,
    /// The encoder and encoded rows for the last schema (every round of a job needs them;
    /// encoding the whole table each round was the round's largest fixed cost).
    encoded_cache: std::sync::Mutex<Option<EncodedRows>>,
    /// Each secure job's verified roster (its adverts' digest) and the pairwise keys agreed
    /// with it: verified and agreed once, not every attempt.
    pairs_cache: std::sync::Mutex<std::collections::HashMap<String, (String, Arc<Pairs>)>>,
    ledger_path: PathBuf,
    state_dir: PathBuf,
    device: DeviceChoice,
    /// The device in words (the adapter, for wgpu).
    device_description: String,
    policy: crate::config::Policy,
    cap_epsilon: f64,
    /// The model's randomness (initialisation, latent noise, output sampling): seeded by the
    /// config's `seed` when given. Never used for DP noise or batch sampling.
    rng: std::sync::Mutex<SecureRng>,
    /// The state directory's lock, held for the holder's life: two workers on one state
    /// directory would each charge and cache rounds behind the other's back.
    _lock: std::fs::File,
    /// Each job's Adam state after its last trained round. Restarting the moments every
    /// round made each round's first steps sign steps of pure noise (m̂ = g, v̂ = g²); kept,
    /// they average the noise across rounds as in single-party training. In memory only: a
    /// restarted worker resumes with fresh moments.
    optimizers: std::sync::Mutex<std::collections::HashMap<String, Adam>>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("holder", &self.holder)
            .field("dataset", &self.dataset)
            .finish()
    }
}

impl Holder {
    /// The training device in words (for wgpu, the adapter found).
    pub fn device(&self) -> &str {
        &self.device_description
    }

    /// Reads the table, opens the ledger and sets the cap from the config.
    pub fn open(config: &WorkerConfig) -> Result<Self> {
        let table = read_raw(&config.data)?;
        let device: DeviceChoice = config.device.parse()?;
        // Acquired now, so that a worker configured for a GPU it does not have stops at
        // start with one line, not at its first job.
        let device_description = device::open_described(device, 0)?.description;
        std::fs::create_dir_all(config.state_dir.join("jobs"))?;
        let lock_path = config.state_dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(WorkerError::Config(format!(
                "state directory {} is in use by another worker",
                config.state_dir.display()
            )));
        }
        let ledger_path = config
            .ledger
            .clone()
            .unwrap_or_else(fedsynth_privacy::ledger::default_path);
        if let Some(dir) = ledger_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let ledger = Ledger::open(&ledger_path)?;
        // One budget per dataset on this host, whichever command or federation spends it.
        let holder = fedsynth_privacy::ledger::HOST.to_string();
        let dataset = match &config.dataset {
            Some(d) => d.clone(),
            None => fedsynth_privacy::ledger::dataset_key(&config.data)?,
        };
        ledger.set_cap(
            &holder,
            &dataset,
            Budget {
                epsilon: Epsilon::new(config.cap_epsilon)?,
                delta: Delta::new(config.cap_delta)?,
            },
        )?;
        let rng = match config.seed {
            Some(s) => SecureRng::from_seed(s),
            None => SecureRng::from_os(),
        };
        Ok(Self {
            holder,
            dataset,
            table: Arc::new(table),
            data: config.data.clone(),
            typed_cache: std::sync::Mutex::new(None),
            encoded_cache: std::sync::Mutex::new(None),
            pairs_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            ledger_path,
            state_dir: config.state_dir.clone(),
            device,
            device_description,
            _lock: lock,
            policy: config.policy.clone(),
            cap_epsilon: config.cap_epsilon,
            rng: std::sync::Mutex::new(rng),
            optimizers: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Rows in the holder's table.
    pub fn rows(&self) -> usize {
        self.table.rows()
    }

    fn rng(&self) -> SecureRng {
        self.rng
            .lock()
            .map_or_else(|p| p.into_inner().fork(), |mut r| r.fork())
    }

    fn job_dir(&self, job: &str) -> Result<PathBuf> {
        fedsynth_proto::JobId::new(job).map_err(WorkerError::Invalid)?;
        Ok(self.state_dir.join("jobs").join(job))
    }

    fn plan_path(&self, job: &str) -> Result<PathBuf> {
        Ok(self.job_dir(job)?.join("plan.json"))
    }

    /// The spec of a job this holder accepted, as it was accepted.
    pub fn accepted_spec(&self, job: &str) -> Result<JobSpec> {
        let path = self.job_dir(job)?.join("spec.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|_| WorkerError::Invalid(format!("job {job} was never accepted here")))?;
        let spec = JobSpec::from_toml(&text).map_err(WorkerError::Invalid)?;
        self.check_plan(job, &spec)?;
        Ok(spec)
    }

    /// The spec a job trains by: as accepted, with the schema the holders completed from
    /// their statistics (and its model's size, and the summed row count for the output
    /// when the spec gives none) once they have.
    pub fn spec(&self, job: &str) -> Result<JobSpec> {
        let mut spec = self.accepted_spec(job)?;
        if spec.needs_statistics()
            && let Some(done) = self.completed_schema(job)?
        {
            spec.schema_toml = done.schema_toml;
            spec.parameters = done.parameters;
            if spec.rows == 0 {
                spec.rows = done.rows.round().clamp(1.0, 100_000_000.0) as u64;
            }
        }
        Ok(spec)
    }

    /// The completed schema of a job, when its holders completed it.
    pub fn completed_schema(&self, job: &str) -> Result<Option<CompletedSchema>> {
        read_json(&self.job_dir(job)?.join("completed.json"))
    }

    /// The stored plan of an accepted job.
    pub fn plan(&self, job: &str) -> Result<Option<JobPlan>> {
        read_json(&self.plan_path(job)?)
    }

    /// The schema of a job, checked against the holder's table: it must be complete
    /// (public edges and categories for every column) so that every holder builds the same
    /// encoder without spending budget on it.
    pub fn schema(&self, spec: &JobSpec) -> Result<Schema> {
        let schema = Schema::from_toml(&spec.schema_toml)?.nullable_by_default();
        if !Plan::for_schema(&schema).is_free() {
            return Err(WorkerError::Invalid(
                "the job's schema must give public bin edges and categories for every column"
                    .into(),
            ));
        }
        // Names (and a Parquet file's declared types) are checked; a CSV's cells are typed
        // as the schema says, never refused for a value.
        self.typed(&schema)?;
        Ok(schema)
    }

    /// The job's numeric columns in which some of the holder's cells are not numbers and are
    /// read as missing: for the holder's log only.
    pub fn non_numbers(&self, spec: &JobSpec) -> Vec<String> {
        self.schema(spec)
            .map(|schema| self.table.non_numbers(&schema.kinds()))
            .unwrap_or_default()
    }

    /// The holder's rows typed as the job's schema says (kept for the next call with the
    /// same schema).
    fn typed(&self, schema: &Schema) -> Result<Arc<Table>> {
        let key = schema.to_toml();
        let mut cache = self
            .typed_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((k, table)) = cache.as_ref()
            && *k == key
        {
            return Ok(table.clone());
        }
        let table = Arc::new(self.table.typed(&schema.kinds())?);
        *cache = Some((key, table.clone()));
        Ok(table)
    }

    /// Decides whether to take part in `spec`: checks the schema against the table, plans the
    /// noise for the holder's rows, and charges the ledger (once per job). Returns the plan,
    /// or the reason to refuse.
    pub fn accept(&self, job: &str, spec: &JobSpec) -> Result<JobPlan> {
        if let Some(plan) = self.plan(job)? {
            return Ok(plan);
        }
        spec.validate().map_err(WorkerError::Invalid)?;
        self.policy.check(spec, self.cap_epsilon)?;
        // A partial schema: its statistics are planned here (the same noise at every holder,
        // from the spec alone) and charged with the job; the model's size is known only once
        // they are done, so the training is calibrated for the smallest model the schema
        // can give (the Skellam bound only shrinks as the model grows).
        let (parameters, statistics) = if spec.needs_statistics() {
            let schema = Schema::from_toml(&spec.schema_toml)?;
            self.typed(&schema)?;
            let plan = Plan::for_schema(&schema);
            let share = Epsilon::new(spec.epsilon * spec.statistics_share())?;
            let noise = Noise::calibrate_by(plan, share, Delta::new(spec.delta)?, &|n, p| {
                n.federated_events(p)
            })?;
            let smallest =
                model_settings(spec)?.parameters_for(schema.columns.len().max(1), 0) as u64;
            (smallest, Some((noise, noise.federated_events(plan)?)))
        } else {
            let (encoder, model) = self.encoder(spec)?;
            let parameters = model.parameters(&encoder);
            if parameters as u64 != spec.parameters {
                return Err(WorkerError::Invalid(format!(
                    "job {job}: the spec says the model has {} parameters, its schema gives {parameters}",
                    spec.parameters,
                )));
            }
            (spec.parameters, None)
        };
        let steps = u64::from(spec.rounds) * u64::from(spec.local_steps);
        let delta = Delta::new(spec.delta)?;
        let epsilon = Epsilon::new(spec.epsilon)?;
        let ledger = Ledger::open(&self.ledger_path)?;
        // A job that cannot fit is refused before its first part (the count) is charged. The
        // gate must not look at the rows, so it stands in for the training with the one
        // Gaussian release that costs the job's (ε, δ) together with the count: calibrated
        // to the same target, the real steps compose with the ledger almost exactly alike.
        let count = DpEvent::gaussian(1.0, ROW_COUNT_NOISE, 1)?;
        let stand_in = calibrate_noise(
            AccountantKind::Pld,
            epsilon,
            SamplingRate::new(1.0)?,
            Steps::new(1)?,
            delta,
            std::slice::from_ref(&count),
        )?;
        let whole = [count.clone(), DpEvent::gaussian(1.0, stand_in.get(), 1)?];
        if !ledger.would_fit(&self.holder, &self.dataset, &whole)? {
            let st = ledger.statement(&self.holder, &self.dataset)?;
            return Err(WorkerError::Invalid(format!(
                "job {job}: ε = {} would not fit the cap (ε = {:.3} spent of {})",
                spec.epsilon,
                st.spent,
                st.cap.epsilon.get()
            )));
        }
        ledger.try_spend_once(
            &self.holder,
            &self.dataset,
            std::slice::from_ref(&count),
            &format!("job {job}: row count"),
        )?;
        // Charged: now the count may be drawn; it is kept so a re-offer reuses it.
        let noisy_rows = self.noisy_count(job)?;
        if delta.get() * noisy_rows as f64 >= 1.0 {
            return Err(WorkerError::Invalid(format!(
                "job {job}: δ = {} is not below 1/n for this holder's rows",
                spec.delta
            )));
        }
        let q = (f64::from(spec.batch_size) / noisy_rows as f64).min(1.0);
        // Before the training: the statistics, charged as one spend before any is released.
        let mut before = vec![count.clone()];
        if let Some((_, events)) = &statistics {
            ledger.try_spend_once(
                &self.holder,
                &self.dataset,
                events,
                &format!("job {job}: statistics"),
            )?;
            before.extend(events.iter().cloned());
        }
        let (sigma, training) = if spec.secure_aggregation == SecureAggregation::Secagg {
            // Distributed DP-SGD: every attempt this holder may send (one per round and the
            // spare ones) is charged now, as the Skellam mechanism at the coarsest ring
            // resolution this holder will take part at (see `secure_update`).
            let attempts = spec.charged_attempts();
            let d = parameters;
            let ring_clip = secagg::min_ring_clip(d);
            let sigma = calibrate_with(AccountantKind::Pld, epsilon, delta, &before, &|s| {
                DpEvent::subsampled_skellam(q, s, ring_clip, d, attempts)
            })?;
            let event = DpEvent::subsampled_skellam(q, sigma.get(), ring_clip, d, attempts)?;
            (sigma, event)
        } else {
            let sigma = calibrate_noise(
                AccountantKind::Pld,
                epsilon,
                SamplingRate::new(q)?,
                Steps::new(steps)?,
                delta,
                &before,
            )?;
            (sigma, DpEvent::subsampled_gaussian(q, sigma.get(), steps)?)
        };
        let mut all = before;
        all.push(training.clone());
        let total = AccountantKind::Pld.epsilon(&all, delta)?;
        ledger.try_spend_once(
            &self.holder,
            &self.dataset,
            std::slice::from_ref(&training),
            &format!("job {job}"),
        )?;
        let plan = JobPlan {
            job_id: job.into(),
            spec_digest: hex::encode(Sha256::digest(spec.to_toml().as_bytes())),
            sampling_rate: q,
            noise_multiplier: sigma.get(),
            noisy_rows: noisy_rows as f64,
            epsilon: total,
            statistics: statistics.map(|(noise, _)| noise),
        };
        let dir = self.job_dir(job)?;
        std::fs::create_dir_all(&dir)?;
        let spec_text = spec.to_toml();
        envelope::write_atomically(&dir.join("spec.toml"), |w| {
            std::io::Write::write_all(w, spec_text.as_bytes())
        })?;
        let text =
            serde_json::to_string_pretty(&plan).map_err(|e| WorkerError::Invalid(e.to_string()))?;
        envelope::write_atomically(&self.plan_path(job)?, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })?;
        Ok(plan)
    }

    /// The job's noisy row count: drawn once (after its charge) and kept in the job's
    /// directory, so that a job offered again after a crash reuses it.
    fn noisy_count(&self, job: &str) -> Result<usize> {
        let dir = self.job_dir(job)?;
        let path = dir.join("row-count");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text
                .trim()
                .parse()
                .map_err(|_| WorkerError::Invalid(format!("{}: not a count", path.display())));
        }
        let noisy = noisy_row_count(self.rows(), &mut SecureRng::for_dp_noise());
        std::fs::create_dir_all(&dir)?;
        envelope::write_atomically(&path, |w| {
            std::io::Write::write_all(w, noisy.to_string().as_bytes())
        })?;
        Ok(noisy)
    }

    fn check_plan(&self, job: &str, spec: &JobSpec) -> Result<JobPlan> {
        let plan = self
            .plan(job)?
            .ok_or_else(|| WorkerError::Invalid(format!("job {job} was never accepted here")))?;
        if plan.spec_digest == hex::encode(Sha256::digest(spec.to_toml().as_bytes())) {
            return Ok(plan);
        }
        // The spec a job trains by once its holders completed its partial schema.
        if spec.parameters != 0 && self.spec(job)?.to_toml() == spec.to_toml() {
            return Ok(plan);
        }
        Err(WorkerError::Invalid(format!(
            "job {job}: the spec differs from the one accepted"
        )))
    }

    fn encoder(&self, spec: &JobSpec) -> Result<(Encoder, ModelSettings)> {
        let schema = self.schema(spec)?;
        let encoder = Encoder::new(&schema, self.typed(&schema)?.as_ref())?;
        Ok((encoder, model_settings(spec)?))
    }

    /// The model a job starts from (every holder draws the same one from the job's seed).
    pub fn initial_weights(&self, spec: &JobSpec) -> Result<Vec<f32>> {
        let (encoder, model) = self.encoder(spec)?;
        Ok(model.seeded_flat(&encoder, spec.init_seed))
    }

    fn cached(&self, job: &str, round: u32) -> Result<(PathBuf, PathBuf)> {
        let dir = self.job_dir(job)?;
        Ok((
            dir.join(format!("round-{round:06}.f32")),
            dir.join(format!("round-{round:06}.base")),
        ))
    }

    /// The cached result of `round`, if it was trained: `Err` if it was trained from other
    /// weights (training again would release an update the charge did not cover).
    pub fn cached_round(
        &self,
        job: &str,
        round: u32,
        base_digest: &str,
    ) -> Result<Option<Vec<f32>>> {
        let (values, base) = self.cached(job, round)?;
        let Ok(stored_base) = std::fs::read_to_string(&base) else {
            return Ok(None);
        };
        if stored_base.trim() != base_digest {
            return Err(WorkerError::Invalid(format!(
                "job {job}: round {round} was already trained from other weights; refusing to train it again"
            )));
        }
        let bytes = std::fs::read(&values)?;
        let mut out = Vec::with_capacity(bytes.len() / 4);
        fedsynth_proto::extend_f32(&mut out, &bytes)
            .ok_or_else(|| WorkerError::Invalid(format!("{}: truncated", values.display())))?;
        Ok(Some(out))
    }

    /// Trains `round` of an accepted job from `base` (whose digest is `base_digest`): the
    /// job's local DP-SGD steps, on the holder's rows. The result is cached before it is
    /// returned.
    pub fn train_round(
        &self,
        job: &str,
        spec: &JobSpec,
        round: u32,
        base: &[f32],
        base_digest: &str,
    ) -> Result<Vec<f32>> {
        let plan = self.check_plan(job, spec)?;
        if round >= spec.rounds {
            return Err(WorkerError::Invalid(format!(
                "job {job} has {} rounds, not {}",
                spec.rounds,
                round + 1
            )));
        }
        if let Some(done) = self.cached_round(job, round, base_digest)? {
            return Ok(done);
        }
        let Local {
            encoder,
            data,
            device,
            mut model,
            mut rng,
        } = self.local(spec, base)?;
        let cfg = round_config(spec, &plan, Some(plan.noise_multiplier));
        match &mut model {
            Model::Tvae(tvae) => self.tvae_steps(
                job, spec, round, tvae, &data, &encoder, &cfg, &device, &mut rng,
            )?,
            Model::Ctgan(gan) => {
                // The GAN's own Adam (β₁ = 0.5), fresh each round: its state is the
                // holder's alone and need not outlive the round.
                let mut trainer = gan_trainer(gan, &data, &encoder, &cfg, &plan, &device)?;
                for _ in 0..spec.local_steps {
                    trainer.step(gan, &mut rng)?;
                }
            }
        }
        let out = model.to_flat();
        let (values, base_path) = self.cached(job, round)?;
        envelope::write_atomically(&values, |w| {
            for chunk in fedsynth_proto::f32_chunks(&out) {
                std::io::Write::write_all(w, &chunk)?;
            }
            Ok(())
        })?;
        // The base file marks the round as trained; it is written last.
        envelope::write_atomically(&base_path, |w| {
            std::io::Write::write_all(w, base_digest.as_bytes())
        })?;
        Ok(out)
    }

    /// A TVAE round's local DP-SGD steps: Adam kept between the job's rounds when the
    /// coordinator averages, plain SGD when it runs Adam on the average of the moves.
    #[allow(clippy::too_many_arguments)]
    fn tvae_steps(
        &self,
        job: &str,
        spec: &JobSpec,
        round: u32,
        model: &mut fedsynth_synth::model::Tvae,
        data: &fedsynth_synth::encoder::Encoded,
        encoder: &Encoder,
        cfg: &TrainConfig,
        device: &device::Device,
        rng: &mut SecureRng,
    ) -> Result<()> {
        let mut stepper = Stepper::new(
            model,
            data,
            encoder.spans(),
            cfg,
            device,
            SecureRng::for_dp_noise(),
        )?;
        let local_adam = spec.server_optimizer == ServerOptimizer::Average;
        if local_adam {
            let saved = self
                .optimizers
                .lock()
                .map_err(|_| WorkerError::Invalid("optimiser state lock poisoned".into()))?
                .remove(job);
            if let Some(adam) = saved {
                stepper = stepper.resume(adam);
            }
        } else {
            // The coordinator runs Adam on the average of the holders' moves.
            stepper = stepper.plain_sgd(spec.local_learning_rate);
        }
        for _ in 0..spec.local_steps {
            stepper.step(model, rng)?;
        }
        // Kept for the job's next round; after its last one, dropped.
        if local_adam
            && round + 1 < spec.rounds
            && let Some(adam) = stepper.into_optimizer()
            && let Ok(mut states) = self.optimizers.lock()
        {
            states.insert(job.to_string(), adam);
        }
        Ok(())
    }

    /// Samples the final generator (`weights`) into the job's format, encrypts it for the
    /// job's recipients and writes the envelope to the job's `artifact.fsx`, returning its
    /// path, size and SHA-256 (hex). Block by block: 65,536 rows at a time are sampled,
    /// serialised into a pipe and encrypted from it on another thread, so the holder's memory
    /// holds a block and a chunk whatever the job's row count. The file appears only when
    /// whole. Post-processing of DP weights: it costs no budget.
    pub fn sample(
        &self,
        job: &str,
        spec: &JobSpec,
        weights: &[f32],
    ) -> Result<(PathBuf, u64, String)> {
        self.check_plan(job, spec)?;
        let recipients = spec
            .recipients
            .iter()
            .map(|t| PublicKey::from_text(t).map_err(WorkerError::Invalid))
            .collect::<Result<Vec<_>>>()?;
        if recipients.is_empty() {
            return Err(WorkerError::Invalid("the job names no recipients".into()));
        }
        let (encoder, settings) = self.encoder(spec)?;
        let mut rng = self.rng();
        let device = device::open(self.device, rng.next_u64())?;
        let mut model = settings.build(&encoder, &device)?;
        model.load_flat(weights).map_err(WorkerError::Invalid)?;
        let rows =
            usize::try_from(spec.rows).map_err(|_| WorkerError::Invalid("too many rows".into()))?;
        let format = if spec.format == "parquet" {
            Format::Parquet
        } else {
            Format::Csv
        };
        // Datetimes go to a Parquet output as dates or timestamps, like `fedsynth synth`'s.
        let temporal = output_temporal(&self.schema(spec)?, &declared_temporal(&self.data)?);
        let dir = self.job_dir(job)?;
        let (partial, done) = (dir.join("artifact.partial"), dir.join("artifact.fsx"));
        let file = std::fs::File::create(&partial)?;
        let mut sink = Digesting {
            inner: std::io::BufWriter::with_capacity(256 * 1024, &file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let outcome = fedsynth_synth::sample::write_blocks(
            model.generator(),
            &encoder,
            rows,
            &device,
            &mut rng,
            &mut sink,
            (format, temporal),
            &recipients,
            &mut |_| {},
        )
        .map_err(WorkerError::from);
        let flushed = outcome.and_then(|_| {
            std::io::Write::flush(&mut sink.inner)?;
            file.sync_all()?;
            Ok(())
        });
        if let Err(e) = flushed {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        let (bytes, sha256) = (sink.bytes, hex::encode(sink.hasher.finalize()));
        std::fs::rename(&partial, &done)?;
        Ok((done, bytes, sha256))
    }

    /// The job's key-agreement key: drawn once and kept in the job's directory (0600), so a
    /// restarted worker publishes the same key.
    fn job_key(&self, job: &str) -> Result<JobKey> {
        let path = self.job_dir(job)?.join("secagg.key");
        if let Ok(bytes) = std::fs::read(&path) {
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| WorkerError::Invalid(format!("{}: not a key", path.display())))?;
            return Ok(JobKey::from_bytes(bytes));
        }
        let key = JobKey::generate();
        let secret = key.to_bytes();
        envelope::write_atomically(&path, |w| std::io::Write::write_all(w, &secret[..]))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(key)
    }

    /// This worker's key advert for an accepted secure job, signed with `identity` (its
    /// certificate's PKCS#8 key and the certificate, PEM) when it has one.
    pub fn advert(
        &self,
        job: &str,
        spec: &JobSpec,
        me: &str,
        identity: Option<(&[u8], &str)>,
    ) -> Result<KeyAdvert> {
        let plan = self.check_plan(job, spec)?;
        let key = self.job_key(job)?;
        Ok(KeyAdvert::new(
            job,
            me,
            &key,
            plan.noise_multiplier,
            identity,
        )?)
    }

    /// This worker's masked update for one attempt of a secure round: checks the roster's
    /// adverts (against the federation's CA when given), the participant set and the
    /// holder's charged attempts; then draws a fresh Poisson batch, sums its clipped
    /// gradients, discretises the sum, adds this worker's Skellam share and its pairwise
    /// masks. An attempt already answered is answered with the same words (the same masks
    /// never cover two different updates); an attempt number seen with another participant
    /// set is refused.
    #[allow(clippy::too_many_arguments)]
    pub fn secure_update(
        &self,
        job: &str,
        spec: &JobSpec,
        me: &str,
        round: u32,
        attempt: u32,
        participants: &[String],
        adverts: &[KeyAdvert],
        ca_pem: Option<&[u8]>,
        base: &[f32],
        base_digest: &str,
    ) -> Result<Vec<u32>> {
        let plan = self.check_plan(job, spec)?;
        let invalid = |m: String| WorkerError::Invalid(format!("job {job}: {m}"));
        if round >= spec.rounds {
            return Err(invalid(format!("the job has {} rounds", spec.rounds)));
        }
        let dir = self.job_dir(job)?;
        let digest = hex::encode(secagg::participants_digest(participants));
        let name = format!("secure-{round:06}-{attempt:010}");
        let (words_path, set_path) = (
            dir.join(format!("{name}.u32")),
            dir.join(format!("{name}.set")),
        );
        if let Ok(seen) = std::fs::read_to_string(&set_path) {
            if seen.trim() != format!("{digest} {base_digest}") {
                return Err(invalid(format!(
                    "round {round} attempt {attempt} was answered for another participant set or base; refusing to mask a second update under it"
                )));
            }
            let bytes = std::fs::read(&words_path)?;
            return Ok(bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect());
        }
        let pairs = self.roster_pairs(job, me, adverts, ca_pem)?;
        if participants.len() < spec.min_workers as usize {
            return Err(invalid(format!(
                "{} participants, fewer than the job's minimum {}",
                participants.len(),
                spec.min_workers
            )));
        }
        // The charge and the noise below are for the spec's model size; an update of any
        // other size (a base from a coordinator gone wrong) would round more coordinates.
        if base.len() as u64 != spec.parameters {
            return Err(invalid(format!(
                "the base weights have {} values, the job's model {}",
                base.len(),
                spec.parameters
            )));
        }
        let sigma_max = adverts
            .iter()
            .map(|a| a.noise_multiplier)
            .fold(0.0f64, f64::max);
        let batch = f64::from(spec.batch_size);
        let scale = secagg::ring_scale(spec.clip_norm, batch, adverts.len(), sigma_max);
        let ring_clip = scale * spec.clip_norm;
        if ring_clip < secagg::min_ring_clip(spec.parameters) {
            return Err(invalid(format!(
                "a roster of {} workers at batch {} leaves the clipping norm {ring_clip:.0} ring units, below the {:.0} this holder charged for",
                adverts.len(),
                spec.batch_size,
                secagg::min_ring_clip(spec.parameters)
            )));
        }
        // Every holder charged for the roster's coarsest ring; this one may be finer, and
        // then needs less noise for the same charge.
        let sigma_round = secagg::noise_at_ring_clip(sigma_max, ring_clip, spec.parameters)?;
        let lambda = secagg::skellam_share(
            sigma_round,
            ring_clip,
            participants.len(),
            spec.tolerated_workers as usize,
        )?;
        // Every attempt is a DP-SGD step this holder paid for in advance: counted (and
        // written) before anything is computed, so a crash can waste one, never overspend.
        let used_path = dir.join("secure-attempts");
        let used: u64 = std::fs::read_to_string(&used_path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if used >= spec.charged_attempts() {
            return Err(invalid(format!(
                "the {} attempts this holder charged for are spent; it sends no more",
                spec.charged_attempts()
            )));
        }
        envelope::write_atomically(&used_path, |w| {
            std::io::Write::write_all(w, (used + 1).to_string().as_bytes())
        })?;
        let d = base.len();
        // The masks do not depend on the update: expanded on another thread while the
        // gradient is computed.
        let (mask, sum) = std::thread::scope(|scope| {
            let masking = scope.spawn(|| pairs.net_mask(d, round, attempt, participants));
            let sum = self.clipped_sum(spec, &plan, base);
            (masking.join(), sum)
        });
        let mask = mask.map_err(|_| invalid("the masking thread failed".into()))??;
        let sum = sum?;
        let mut noise = SecureRng::for_dp_noise();
        let mut words = secagg::discretise(&sum, scale, &mut noise);
        drop(sum);
        secagg::add_skellam(&mut words, lambda, &mut noise)?;
        secagg::add_words(&mut words, &mask);
        envelope::write_atomically(&words_path, |w| {
            for chunk in words.chunks(16384) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::io::Write::write_all(w, &bytes)?;
            }
            Ok(())
        })?;
        envelope::write_atomically(&set_path, |w| {
            std::io::Write::write_all(w, format!("{digest} {base_digest}").as_bytes())
        })?;
        Ok(words)
    }

    /// The pairwise keys with a secure job's roster: every advert checked (against the CA
    /// when there is one), this worker's own key found under its name, the keys agreed —
    /// once per roster, kept for the attempts that follow.
    /// This holder's upload for statistics wave `wave` of a job with a partial schema (see
    /// [`fedsynth_synth::fedstats`]): the masked sums and released names the transcript
    /// asks for next, or the schema it completed. Kept in the job's directory and re-sent
    /// unchanged when asked again for the same participants; refused for others (two sums
    /// over different sets would unmask the difference).
    #[allow(clippy::too_many_arguments)]
    pub fn statistics(
        &self,
        job: &str,
        me: &str,
        wave: u32,
        participants: &[String],
        transcript: &[(Vec<u32>, Vec<String>)],
        adverts: &[KeyAdvert],
        ca_pem: Option<&[u8]>,
    ) -> Result<StatisticsUpload> {
        let spec = self.accepted_spec(job)?;
        let plan = self.check_plan(job, &spec)?;
        let noise = plan.statistics.ok_or_else(|| {
            WorkerError::Invalid(format!("job {job}: its schema is complete, no statistics"))
        })?;
        if wave as usize != transcript.len() {
            return Err(WorkerError::Invalid(format!(
                "job {job}: statistics wave {wave} asked with {} waves published",
                transcript.len()
            )));
        }
        let digest = hex::encode(secagg::participants_digest(participants));
        let dir = self.job_dir(job)?.join("statistics");
        let kept = dir.join(format!("wave-{wave}.json"));
        if let Some(upload) = read_json::<StatisticsUpload>(&kept)? {
            if upload.participants != digest {
                return Err(WorkerError::Invalid(format!(
                    "job {job}: statistics wave {wave} was sent for other participants; it is not sent again"
                )));
            }
            return Ok(upload);
        }
        // The statistics mask refuses a participant set outside the roster.
        let pairs = self.roster_pairs(job, me, adverts, ca_pem)?;
        let schema = Schema::from_toml(&spec.schema_toml)?;
        let memo_path = dir.join("memo.json");
        let mut memo: Memo = read_json(&memo_path)?.unwrap_or_default();
        let before = memo.clone();
        let waves: Vec<Wave> = transcript
            .iter()
            .map(|(sums, released)| Wave {
                sums: fedstats::decode(sums),
                released: released.clone(),
            })
            .collect();
        let n = participants.len();
        let t = spec.tolerated_workers as usize;
        let reading = fedstats::reading_noise(noise, n, t);
        let mut rng = SecureRng::for_dp_noise();
        let step = fedstats::complete(
            &self.table,
            &schema,
            reading,
            n,
            plan.noisy_rows,
            &waves,
            &mut memo,
            &mut rng,
        )?;
        std::fs::create_dir_all(&dir)?;
        if memo != before {
            let text =
                serde_json::to_string(&memo).map_err(|e| WorkerError::Invalid(e.to_string()))?;
            envelope::write_atomically(&memo_path, |w| {
                std::io::Write::write_all(w, text.as_bytes())
            })?;
        }
        let upload = match step {
            Step::Request(parts) => {
                let lambda = secagg::skellam_share(noise.sigma, 1.0, n, t)?;
                let mut words = fedstats::encode(&parts, lambda, &mut rng)?;
                let mask = pairs.statistics_mask(words.len(), wave, participants)?;
                secagg::add_words(&mut words, &mask);
                StatisticsUpload {
                    participants: digest,
                    words,
                    released: fedstats::released(&parts),
                    schema: None,
                }
            }
            Step::Done(completed, rows) => {
                let text = completed.schema.to_toml();
                // Sized as training will read it back.
                let done = Schema::from_toml(&text)?.nullable_by_default();
                let encoder = Encoder::new(&done, self.typed(&done)?.as_ref())?;
                let parameters = model_settings(&spec)?.parameters(&encoder) as u64;
                let record = CompletedSchema {
                    schema_toml: text,
                    parameters,
                    rows,
                };
                let text = serde_json::to_string_pretty(&record)
                    .map_err(|e| WorkerError::Invalid(e.to_string()))?;
                envelope::write_atomically(&self.job_dir(job)?.join("completed.json"), |w| {
                    std::io::Write::write_all(w, text.as_bytes())
                })?;
                StatisticsUpload {
                    participants: digest,
                    words: Vec::new(),
                    released: Vec::new(),
                    schema: Some((record.schema_toml, parameters)),
                }
            }
        };
        let text =
            serde_json::to_string(&upload).map_err(|e| WorkerError::Invalid(e.to_string()))?;
        envelope::write_atomically(&kept, |w| std::io::Write::write_all(w, text.as_bytes()))?;
        Ok(upload)
    }

    fn roster_pairs(
        &self,
        job: &str,
        me: &str,
        adverts: &[KeyAdvert],
        ca_pem: Option<&[u8]>,
    ) -> Result<Arc<Pairs>> {
        let digest = signature::digest_parts(
            adverts
                .iter()
                .map(KeyAdvert::to_text)
                .collect::<Vec<_>>()
                .iter()
                .map(|t| t.as_bytes()),
        ) + if ca_pem.is_some() { "+ca" } else { "" };
        let mut cache = self
            .pairs_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((d, pairs)) = cache.get(job)
            && *d == digest
        {
            return Ok(pairs.clone());
        }
        for a in adverts {
            a.verify(job, &a.worker_id, ca_pem)?;
        }
        let key = self.job_key(job)?;
        let mine = adverts.iter().find(|a| a.worker_id == me).ok_or_else(|| {
            WorkerError::Invalid(format!("job {job}: this worker's key is not in the roster"))
        })?;
        if mine.public_key()? != key.public() {
            return Err(WorkerError::Invalid(format!(
                "job {job}: the roster holds another key under this worker's name"
            )));
        }
        let pairs = Arc::new(Pairs::agree(job, me, &key, adverts)?);
        cache.insert(job.to_string(), (digest, pairs.clone()));
        Ok(pairs)
    }

    /// The job's encoder and the holder's rows encoded with it, kept for the next call with
    /// the same schema.
    fn encoded(&self, spec: &JobSpec) -> Result<EncodedRows> {
        let schema = self.schema(spec)?;
        // The model's settings shape the cached model too.
        let key = format!("{}\n{:?}", schema.to_toml(), spec.model);
        let mut cache = self
            .encoded_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.as_ref().filter(|e| e.key == key) {
            return Ok(hit.clone());
        }
        let encoder = Encoder::new(&schema, self.typed(&schema)?.as_ref())?;
        let data = encoder.encode_rows(self.typed(&schema)?.as_ref())?;
        let rows = EncodedRows {
            key,
            settings: model_settings(spec)?,
            encoder: Arc::new(encoder),
            data: Arc::new(data),
        };
        *cache = Some(rows.clone());
        Ok(rows)
    }

    /// The job's encoder, the holder's encoded rows, a device and the model at `base`.
    fn local(&self, spec: &JobSpec, base: &[f32]) -> Result<Local> {
        let EncodedRows {
            encoder,
            data,
            settings,
            ..
        } = self.encoded(spec)?;
        let mut rng = self.rng();
        let device = device::open(self.device, rng.next_u64())?;
        let mut model = settings.build(&encoder, &device)?;
        model.load_flat(base).map_err(WorkerError::Invalid)?;
        Ok(Local {
            encoder,
            data,
            device,
            model,
            rng,
        })
    }

    /// The sum of clipped per-example gradients over one fresh Poisson batch, from `base`.
    fn clipped_sum(&self, spec: &JobSpec, plan: &JobPlan, base: &[f32]) -> Result<Vec<f32>> {
        let Local {
            encoder,
            data,
            device,
            model,
            mut rng,
        } = self.local(spec, base)?;
        let cfg = round_config(spec, plan, None);
        let sum = match &model {
            Model::Tvae(tvae) => Stepper::new(
                tvae,
                &data,
                encoder.spans(),
                &cfg,
                &device,
                SecureRng::for_dp_noise(),
            )?
            .clipped_sum(tvae, &mut rng)?,
            Model::Ctgan(gan) => gan_trainer(gan, &data, &encoder, &cfg, plan, &device)?
                .secure_contribution(gan, &mut rng)?,
        };
        Ok(sum.0)
    }

    /// The ledger file.
    pub fn ledger_path(&self) -> &Path {
        &self.ledger_path
    }

    /// (holder, dataset) as recorded in the ledger.
    pub fn ledger_key(&self) -> (&str, &str) {
        (&self.holder, &self.dataset)
    }
}

/// One round's training settings: the plan's sampling rate, the spec's clipping and learning
/// rate, and the noise multiplier (none for a secure round: its noise is added in the ring).
fn round_config(spec: &JobSpec, plan: &JobPlan, noise_multiplier: Option<f64>) -> TrainConfig {
    TrainConfig {
        epochs: 1,
        sampling_rate: plan.sampling_rate,
        clip_norm: spec.clip_norm,
        noise_multiplier,
        learning_rate: spec.learning_rate,
    }
}

/// A JSON file of the state directory, `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| WorkerError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A schema's encoder and the holder's rows encoded with it (cached by the schema's text).
#[derive(Clone)]
struct EncodedRows {
    key: String,
    settings: ModelSettings,
    encoder: Arc<Encoder>,
    data: Arc<fedsynth_synth::encoder::Encoded>,
}

/// What a round's training needs at the holder.
struct Local {
    encoder: Arc<Encoder>,
    data: Arc<fedsynth_synth::encoder::Encoded>,
    device: device::Device,
    model: Model,
    rng: SecureRng,
}

/// A writer that counts and hashes what passes through it.
struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A round's GAN training at this holder: its expected batch is q times its noisy row count
/// (public), and the batches, packing and DP noise come from the operating system.
fn gan_trainer<'a>(
    gan: &fedsynth_synth::ctgan::Ctgan,
    data: &'a fedsynth_synth::encoder::Encoded,
    encoder: &'a Encoder,
    cfg: &TrainConfig,
    plan: &JobPlan,
    device: &device::Device,
) -> Result<GanTrainer<'a>> {
    Ok(GanTrainer::new(
        gan,
        data,
        encoder.spans(),
        cfg,
        plan.sampling_rate * plan.noisy_rows,
        device,
        SecureRng::for_dp_noise(),
    )?)
}

/// The job's model and its settings, read and validated by `synth`.
fn model_settings(spec: &JobSpec) -> Result<ModelSettings> {
    Ok(ModelSettings::from_table(&spec.model.to_table())?)
}
