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
    /// The table's name in the ledger (default: the data file's absolute path).
    pub dataset: Option<String>,
    /// State directory: the privacy ledger, accepted jobs and cached round updates.
    pub state_dir: PathBuf,
    /// The holder's cap: total ε over every job on this dataset.
    pub cap_epsilon: f64,
    /// The δ at which the cap is measured.
    pub cap_delta: f64,
    /// Training device: `cpu` or `wgpu`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Mutual TLS (CA of the coordinator, this worker's certificate and key).
    pub tls: Option<ClientTls>,
    /// Connect without TLS (loopback experiments only).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Fixed seed for reproducible runs (tests); by default noise comes from the OS.
    pub seed: Option<u64>,
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
