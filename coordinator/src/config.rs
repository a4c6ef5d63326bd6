//! The coordinator's config file (`fedsynth coordinator --config FILE`); see
//! `configs/coordinator.toml` for a commented example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CoordinatorError, Result};

/// TLS files of the coordinator. Workers must present a certificate signed by `client_ca`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The coordinator's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs worker and owner certificates (PEM). Every connection must show a
    /// certificate it signed: a peer without one is turned away in the TLS handshake, before
    /// any request is read.
    pub client_ca: PathBuf,
}

/// One federation: a group of workers that may see each other's jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Its name.
    pub name: String,
    /// The enrolment token its workers present.
    pub enrolment_token: String,
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on (`127.0.0.1:7443`; port 0 picks one, printed at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The job store: `sqlite://FILE` (default `sqlite://coordinator.db`) or `postgres://…`.
    #[serde(default = "default_db")]
    pub database_url: String,
    /// The artifact store (job weights and encrypted outputs): a directory (default
    /// `artifacts`) or an S3-compatible bucket, `s3://bucket/prefix`.
    #[serde(default = "default_artifacts")]
    pub artifacts: String,
    /// S3 settings of an `s3://` artifact store, overriding the `AWS_*` environment
    /// (object_store's keys: `aws_endpoint`, `aws_region`, `aws_allow_http`, …).
    #[serde(default)]
    pub artifact_options: BTreeMap<String, String>,
    /// Token of the job owner's CLI (`fedsynth submit/status/fetch/audit`).
    pub owner_token: String,
    /// Mutual TLS; required unless `insecure_plaintext = true`.
    pub tls: Option<TlsConfig>,
    /// Serve without TLS (loopback experiments only; says so loudly).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// How often workers poll, in milliseconds.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u32,
    /// The federations.
    #[serde(rename = "federation", default)]
    pub federations: Vec<FederationConfig>,
    /// Where a port file is written once listening (for scripts and tests).
    pub port_file: Option<PathBuf>,
    /// Most connections served at once (default 1024); further ones wait to be accepted,
    /// so a peer that opens connections and never closes them cannot exhaust the process.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections served at once from one IP address (default 64); a further one from
    /// that address is closed at once, so one peer cannot take every connection slot.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_connections_per_peer() -> usize {
    64
}

fn default_listen() -> String {
    "127.0.0.1:7443".into()
}
fn default_db() -> String {
    "sqlite://coordinator.db".into()
}
fn default_artifacts() -> String {
    "artifacts".into()
}
fn default_poll() -> u32 {
    200
}

impl CoordinatorConfig {
    /// Reads a config file; relative paths inside it are taken from the file's directory.
    pub fn read(path: &Path) -> Result<Self> {
        let mut config: Self = fedsynth_proto::read_toml(path).map_err(CoordinatorError::Config)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if !self.artifacts.contains("://") {
            let mut dir = PathBuf::from(&self.artifacts);
            fix(&mut dir);
            self.artifacts = dir.display().to_string();
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            fix(&mut tls.client_ca);
        }
        if let Some(p) = &mut self.port_file {
            fix(p);
        }
        if let Some(rest) = self.database_url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            self.database_url = format!("sqlite://{}", base.join(rest).display());
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(CoordinatorError::Config(m.into()));
        if self.owner_token.len() < 16 {
            return bad("owner_token must be at least 16 characters");
        }
        if self.tls.is_none() && !self.insecure_plaintext {
            return bad(
                "[tls] is required (or insecure_plaintext = true for loopback experiments)",
            );
        }
        if self.tls.is_none() && !fedsynth_proto::is_loopback(&self.listen) {
            return bad(
                "insecure_plaintext listens on loopback only (listen = \"127.0.0.1:PORT\"); use [tls] for any other address",
            );
        }
        if self.federations.is_empty() {
            return bad("declare at least one [[federation]]");
        }
        for (i, f) in self.federations.iter().enumerate() {
            fedsynth_proto::FederationName::new(f.name.clone())
                .map_err(|e| CoordinatorError::Config(format!("federation: {e}")))?;
            if f.enrolment_token.len() < 16 {
                return bad("every federation's enrolment_token must be at least 16 characters");
            }
            if self.federations[..i].iter().any(|g| g.name == f.name) {
                return bad("federation names must be unique");
            }
            if self.federations[..i]
                .iter()
                .any(|g| g.enrolment_token == f.enrolment_token)
                || f.enrolment_token == self.owner_token
            {
                return bad("every token must be different");
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad("max_connections must be 1-1000000");
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_peer) {
            return bad("max_connections_per_peer must be 1-max_connections");
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return bad("poll_interval_ms must be 10-60000");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_listens_on_loopback_only() {
        let mut config = CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            database_url: "sqlite://c.db".into(),
            artifacts: "artifacts".into(),
            artifact_options: BTreeMap::new(),
            owner_token: "owner-token-0123456789".into(),
            tls: None,
            insecure_plaintext: true,
            poll_interval_ms: 50,
            federations: vec![FederationConfig {
                name: "clinics".into(),
                enrolment_token: "clinics-token-0123456789".into(),
            }],
            port_file: None,
            max_connections: 1024,
            max_connections_per_peer: 64,
        };
        config.validate().unwrap();
        for far in ["0.0.0.0:7443", "10.1.2.3:7443", "[::]:7443"] {
            config.listen = far.into();
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains("loopback"), "{e}");
        }
    }
}
