//! The worker's config file (`fedsynth worker --config FILE`); see `configs/worker.toml`.

use std::path::{Path, PathBuf};

use fedsynth_proto::client::ClientTls;
use serde::Deserialize;

use crate::error::{Result, WorkerError};

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The coordinator's URL (`https://host:port`).
    pub coordinator: String,
    /// The federation this holder belongs to.
    pub federation: String,
    /// This worker's stable name within the federation.
    pub name: String,
    /// The federation's enrolment token.
    pub enrolment_token: String,
    /// The holder's table (.csv or .parquet). It never leaves this process.
    pub data: PathBuf,
    /// The table's name in the ledger (default: `sha256:` and the digest of the data file's
    /// bytes, the name `fedsynth synth` gives the same file).
    pub dataset: Option<String>,
    /// State directory: accepted jobs and cached round updates.
    pub state_dir: PathBuf,
    /// The privacy ledger (default: the host's, shared with `fedsynth synth`:
    /// `~/.local/share/fedsynth/ledger.db`), so one dataset has one budget on this host.
    pub ledger: Option<PathBuf>,
    /// The holder's cap: total ε over every job on this dataset.
    pub cap_epsilon: f64,
    /// The δ at which the cap is measured.
    pub cap_delta: f64,
    /// Training device: `cpu` (default), `wgpu` (the best GPU found), or a chosen adapter:
    /// `wgpu:discrete[:N]`, `wgpu:integrated[:N]`, `wgpu:virtual[:N]`, `wgpu:software`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Mutual TLS (CA of the coordinator, this worker's certificate and key).
    pub tls: Option<ClientTls>,
    /// Connect without TLS (loopback experiments only).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Fixed seed for the model's randomness (initialisation, latent noise, sampling). DP
    /// noise and batch sampling always come from the operating system, whatever it says.
    pub seed: Option<u64>,
    /// What jobs this holder takes part in, beyond fitting its cap.
    #[serde(default)]
    pub policy: Policy,
}

/// The holder's policy (`[policy]` in the config): a job outside it is refused before
/// anything is charged. By default a job may spend at most half the cap, so one job can
/// never drain the whole budget.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Largest ε one job may charge (default: half of `cap_epsilon`).
    pub max_job_epsilon: Option<f64>,
    /// Largest δ one job may use (default: 1e-5).
    pub max_job_delta: Option<f64>,
    /// Public keys (`fedsynth-x25519-pub:…`, as in `NAME.pub`) that outputs may be
    /// encrypted for; every recipient of a job must be one of them. Empty or absent: any.
    #[serde(default)]
    pub allowed_recipients: Vec<String>,
    /// Most rows of output a job may ask this holder to sample (default 10,000,000): the
    /// output is built in memory before it is encrypted.
    pub max_output_rows: Option<u64>,
    /// Most weights and biases a job's model may have (default 16,777,216, 64 MiB).
    pub max_parameters: Option<u64>,
    /// Whether this holder takes part in jobs without secure aggregation
    /// (`secure_aggregation = "none"`), where the coordinator sees each holder's update.
    /// Default false: such jobs are refused.
    #[serde(default)]
    pub allow_plain_aggregation: bool,
}

impl Policy {
    /// The largest ε a job may charge, under a cap of `cap_epsilon`.
    pub fn max_epsilon(&self, cap_epsilon: f64) -> f64 {
        self.max_job_epsilon.unwrap_or(cap_epsilon / 2.0)
    }

    /// The largest δ a job may use.
    pub fn max_delta(&self) -> f64 {
        self.max_job_delta.unwrap_or(1e-5)
    }

    /// The most output rows a job may ask for.
    pub fn max_rows(&self) -> u64 {
        self.max_output_rows.unwrap_or(10_000_000)
    }

    /// The most parameters a job's model may have.
    pub fn max_model(&self) -> u64 {
        self.max_parameters.unwrap_or(1 << 24)
    }

    /// Checks a job against the policy, under a cap of `cap_epsilon`.
    pub fn check(&self, spec: &fedsynth_proto::JobSpec, cap_epsilon: f64) -> Result<()> {
        let refuse = |m: String| Err(WorkerError::Invalid(format!("policy: {m}")));
        if spec.epsilon > self.max_epsilon(cap_epsilon) {
            return refuse(format!(
                "the job asks ε = {}, this holder allows at most {} per job",
                spec.epsilon,
                self.max_epsilon(cap_epsilon)
            ));
        }
        if spec.delta > self.max_delta() {
            return refuse(format!(
                "the job asks δ = {:e}, this holder allows at most {:e} per job",
                spec.delta,
                self.max_delta()
            ));
        }
        if spec.rows > self.max_rows() {
            return refuse(format!(
                "the job asks for {} output rows, this holder samples at most {}",
                spec.rows,
                self.max_rows()
            ));
        }
        if spec.parameters > self.max_model() {
            return refuse(format!(
                "the job's model has {} parameters, this holder trains at most {}",
                spec.parameters,
                self.max_model()
            ));
        }
        if spec.secure_aggregation == fedsynth_proto::SecureAggregation::None
            && !self.allow_plain_aggregation
        {
            return refuse(
                "the job runs without secure aggregation (the coordinator would see this holder's updates); set allow_plain_aggregation = true to take part in such jobs"
                    .into(),
            );
        }
        if !self.allowed_recipients.is_empty() {
            let allowed = |r: &String| self.allowed_recipients.iter().any(|a| a.trim() == r.trim());
            if let Some(k) = spec.recipients.iter().position(|r| !allowed(r)) {
                return refuse(format!("recipient {} is not in allowed_recipients", k + 1));
            }
        }
        Ok(())
    }
}

fn default_device() -> String {
    "cpu".into()
}

impl WorkerConfig {
    /// Reads a config file; relative paths are taken from the file's directory.
    pub fn read(path: &Path) -> Result<Self> {
        let mut config: Self = fedsynth_proto::read_toml(path).map_err(WorkerError::Config)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut config.data);
        if let Some(l) = &mut config.ledger {
            fix(l);
        }
        fix(&mut config.state_dir);
        if let Some(tls) = &mut config.tls {
            fix(&mut tls.ca);
            if let Some(c) = &mut tls.cert {
                fix(c);
            }
            if let Some(k) = &mut tls.key {
                fix(k);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(WorkerError::Config(m));
        fedsynth_proto::WorkerId::new(format!("{}/{}", self.federation, self.name))
            .map_err(WorkerError::Config)?;
        if !(self.cap_epsilon.is_finite() && self.cap_epsilon > 0.0) {
            return bad("cap_epsilon must be a positive number".into());
        }
        if !(self.cap_delta > 0.0 && self.cap_delta < 1.0) {
            return bad("cap_delta must be in (0, 1)".into());
        }
        if let Some(e) = self.policy.max_job_epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return bad("policy.max_job_epsilon must be a positive number".into());
        }
        if let Some(d) = self.policy.max_job_delta
            && !(d > 0.0 && d < 1.0)
        {
            return bad("policy.max_job_delta must be in (0, 1)".into());
        }
        for key in &self.policy.allowed_recipients {
            fedsynth_privacy::envelope::PublicKey::from_text(key)
                .map_err(|e| WorkerError::Config(format!("policy.allowed_recipients: {e}")))?;
        }
        if self.insecure_plaintext
            && !fedsynth_proto::is_loopback(fedsynth_proto::url_host(&self.coordinator))
        {
            return bad(
                "insecure_plaintext connects to a coordinator on loopback only (127.0.0.1, ::1, localhost); use [tls] for any other address"
                    .into(),
            );
        }
        match &self.tls {
            None if !self.insecure_plaintext => {
                return bad(
                    "[tls] is required (or insecure_plaintext = true for loopback experiments)"
                        .into(),
                );
            }
            Some(tls) if tls.cert.is_none() || tls.key.is_none() => {
                return bad(
                    "[tls] needs cert and key: workers authenticate with a client certificate"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(())
    }
}
