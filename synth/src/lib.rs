//! fedsynth's tabular synthesis: tables in and out (polars), the schema, private statistics
//! behind the encoding, the TVAE and conditional GAN generators in burn, DP-SGD training with exact per-example
//! clipping, sampling, privacy planning, and quality metrics.
//!
//! Depends on `fedsynth-privacy` for accounting, noise, sampling and encryption.

pub mod calibrate;
pub mod ctgan;
pub mod datetime;
pub mod device;
pub mod encoder;
pub mod error;
pub mod fedstats;
pub mod mia;
pub mod model;
pub mod models;
pub mod nulls;
pub mod plan;
pub mod quality;
pub mod report;
pub mod sample;
pub mod schema;
pub mod stats;
pub mod table;
pub mod train;

pub use error::{Result, SynthError};
