//! fedsynth's privacy core. Everything that decides or spends privacy lives here:
//!
//! - [`rdp`] and [`pld`]: accountants for the Poisson-subsampled Gaussian and for Gaussian,
//!   Laplace and (ε, δ) releases, behind one face in [`accountant`], with noise calibration;
//! - [`dpsgd`]: exact per-example clipping, the clipped sum and Gaussian noise;
//! - [`sampling`]: Poisson subsampling of row indices;
//! - [`rng`]: the one source of cryptographic randomness (noise, sampling, keys);
//! - [`ledger`]: the holder's persistent, atomic privacy budget ledger (SQLite);
//! - [`secagg`]: secure aggregation (pairwise masks, ring quantisation, Skellam shares) and
//!   [`skellam`], its accountant;
//! - [`envelope`]: encrypted files for named recipients (HPKE + AES-256-GCM STREAM).
//!
//! The crate depends on nothing else of fedsynth.

pub mod accountant;
pub mod dpsgd;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ledger;
pub mod params;
pub mod pld;
pub mod rdp;
pub mod rng;
pub mod sampling;
pub mod secagg;
pub mod signature;
pub mod skellam;
pub mod special;

pub use accountant::{AccountantKind, calibrate_noise, calibrate_with, dpsgd_epsilon};
pub use error::{PrivacyError, Result};
pub use event::DpEvent;
pub use params::{Delta, Epsilon, NoiseMultiplier, SamplingRate, Scale, Steps};
