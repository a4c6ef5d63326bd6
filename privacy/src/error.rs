//! The privacy crate's error type: one enum, each variant a clear one-line message.

use thiserror::Error;

/// Everything that can go wrong in the privacy core.
#[derive(Debug, Error)]
pub enum PrivacyError {
    /// A privacy parameter (ε, δ, σ, rate, steps, …) is outside its valid range.
    #[error("invalid {name}: {value} ({why})")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// The offending value, as the user gave it.
        value: String,
        /// What the valid range is.
        why: &'static str,
    },
    /// No noise multiplier within the search range meets the requested target.
    #[error("cannot calibrate noise: {0}")]
    Calibration(String),
    /// A spend would take a holder past its cap; nothing was recorded or released.
    #[error(
        "budget exceeded for {holder}/{dataset}: spending {requested} would bring ε to {would_be:.4} \
         at δ={delta:e}, over the cap of {cap}"
    )]
    BudgetExceeded {
        /// Data holder.
        holder: String,
        /// Dataset of that holder.
        dataset: String,
        /// Description of the refused spend.
        requested: String,
        /// The composed ε the ledger would have reached.
        would_be: f64,
        /// The holder's cap on ε.
        cap: f64,
        /// The δ at which the cap is measured.
        delta: f64,
    },
    /// A once-only spend's key was charged before for other events: running the new ones
    /// would release what the earlier charge did not cover.
    #[error(
        "{key} was already charged for {recorded}; it is offered again as {requested}: refused, nothing recorded"
    )]
    SpendMismatch {
        /// The once-only key (e.g. `job J`).
        key: String,
        /// What the ledger recorded under it.
        recorded: String,
        /// What was asked now.
        requested: String,
    },
    /// The ledger's database failed or is unreadable.
    #[error("budget ledger {path}: {source}")]
    Ledger {
        /// Ledger file.
        path: String,
        /// Underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The ledger holds a record this version cannot read.
    #[error("budget ledger {path}: {message}")]
    LedgerCorrupt {
        /// Ledger file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A secure-aggregation key, roster or round that does not hold.
    #[error("secure aggregation: {0}")]
    SecureAggregation(String),
    /// Shapes of flat gradient buffers do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Envelope encryption or decryption failed.
    #[error(transparent)]
    Envelope(#[from] crate::envelope::EnvelopeError),
}

/// Result alias for the privacy crate.
pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;

pub(crate) fn invalid(name: &'static str, value: impl ToString, why: &'static str) -> PrivacyError {
    PrivacyError::InvalidParameter {
        name,
        value: value.to_string(),
        why,
    }
}
