//! The coordinator's errors, and the one place where they become gRPC statuses.

use thiserror::Error;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The config file is unreadable or invalid.
    #[error("config: {0}")]
    Config(String),
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored record could not be read back.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// The artifact store failed.
    #[error("artifacts: {0}")]
    Artifacts(#[from] object_store::Error),
    /// A caller sent something invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such job, or not visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's state does not allow the call (protocol version, job state).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Transport (TLS, listening socket).
    #[error("transport: {0}")]
    Transport(String),
    /// File system.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CoordinatorError {
    /// The gRPC code of this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Invalid(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Internal,
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// Result with [`CoordinatorError`].
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
