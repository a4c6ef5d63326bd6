//! The worker's errors.

use thiserror::Error;

/// Everything that can go wrong in the worker.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The config file is unreadable or invalid.
    #[error("config: {0}")]
    Config(String),
    /// The coordinator refused us for good (protocol, credentials).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// The coordinator is unreachable or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// A gRPC call failed.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// Data, schema, model or sampling.
    #[error(transparent)]
    Synth(#[from] fedsynth_synth::SynthError),
    /// Ledger, accounting or encryption.
    #[error(transparent)]
    Privacy(#[from] fedsynth_privacy::PrivacyError),
    /// Encryption of the artifact.
    #[error(transparent)]
    Envelope(#[from] fedsynth_privacy::envelope::EnvelopeError),
    /// Something the worker will not do (it would break a promise).
    #[error("{0}")]
    Invalid(String),
    /// Local state files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result with [`WorkerError`].
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
