//! Connecting to the coordinator, shared by the worker and the job CLI: a channel (TLS when
//! configured, with a client certificate for workers), and an interceptor that puts the
//! caller's token on every request.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// TLS settings of a client.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA that signed the coordinator's certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM; workers must have one).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The name the coordinator's certificate is checked against (default: the URL's host).
    pub domain: Option<String>,
}

/// Puts `authorization: Bearer <token>` on every request.
#[derive(Debug, Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Token {
    /// A token interceptor; the token must be printable ASCII.
    pub fn new(token: &str) -> Result<Self, String> {
        format!("Bearer {}", token.trim())
            .parse()
            .map(Self)
            .map_err(|_| "the token must be printable ASCII".to_string())
    }
}

impl Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Opens a channel to `url` (`https://…` with `tls`, `http://…` without).
pub async fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("coordinator URL '{url}': {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    match tls {
        Some(tls) => {
            if !url.starts_with("https://") {
                return Err(format!("coordinator URL '{url}': use https:// with TLS"));
            }
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => return Err("TLS: give both cert and key, or neither".into()),
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS: {e}"))?;
        }
        None if url.starts_with("https://") => {
            return Err(format!(
                "coordinator URL '{url}': https:// needs a CA certificate"
            ));
        }
        None => {}
    }
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the coordinator at {url}: {}", error_chain(&e)))
}

/// An error and its sources, joined.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
