//! The synth crate's error type: each variant renders as one clear line.

use thiserror::Error;

/// Everything that can go wrong turning a table into a synthetic one.
#[derive(Debug, Error)]
pub enum SynthError {
    /// The input cannot be read or parsed.
    #[error("{path}: {message}")]
    Input {
        /// The input file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The schema file is invalid or does not match the data.
    #[error("schema: {0}")]
    Schema(String),
    /// A column's values are unusable.
    #[error("column '{column}': {message}")]
    Column {
        /// Column name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// Writing an output failed.
    #[error("{path}: {message}")]
    Output {
        /// The output file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The tensor backend failed or the device is unavailable.
    #[error("device: {0}")]
    Device(String),
    /// A privacy-core error (accounting, ledger, encryption).
    #[error(transparent)]
    Privacy(#[from] fedsynth_privacy::PrivacyError),
    /// Training settings are invalid.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The table is too small (or too wide) for the statistics it needs at its ε: the
    /// message says what a schema would spare. The releases made before the plan
    /// ([`crate::plan::look_events`]) are charged before it is shown.
    #[error("{0}")]
    TooFewRows(String),
    /// A federated statistic is not released yet: the holders' next wave must answer it
    /// (see [`crate::fedstats`]); never shown to a user.
    #[error("statistics wait for the holders' next wave")]
    Pending,
}

/// Result alias for the synth crate.
pub type Result<T, E = SynthError> = std::result::Result<T, E>;

pub(crate) fn column_err(column: &str, message: impl Into<String>) -> SynthError {
    SynthError::Column {
        column: column.to_string(),
        message: message.into(),
    }
}
