//! Privacy events: the releases a data holder makes, each described by its mechanism and
//! parameters, so that accountants can compose them tightly (not by adding ε's).

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::params::{Epsilon, NoiseMultiplier, SamplingRate, Scale, Steps};

/// One privacy-relevant release, possibly repeated `steps`/`count` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum DpEvent {
    /// DP-SGD: `steps` steps of the Gaussian mechanism on a Poisson subsample of rate q,
    /// sensitivity 1 (the clipping norm), noise standard deviation σ·C.
    SubsampledGaussian {
        /// Poisson sampling rate q.
        sampling_rate: SamplingRate,
        /// Noise multiplier σ.
        noise_multiplier: NoiseMultiplier,
        /// Number of steps composed.
        steps: Steps,
    },
    /// `count` releases of the Gaussian mechanism with L2 sensitivity and noise std dev.
    Gaussian {
        /// L2 sensitivity.
        sensitivity: Scale,
        /// Noise standard deviation.
        std_dev: Scale,
        /// Number of such releases.
        count: Steps,
    },
    /// `count` releases of the Laplace mechanism with L1 sensitivity and scale b.
    Laplace {
        /// L1 sensitivity.
        sensitivity: Scale,
        /// Laplace scale b.
        scale: Scale,
        /// Number of such releases.
        count: Steps,
    },
    /// Distributed DP-SGD under secure aggregation: `steps` Poisson-subsampled releases of a
    /// clipped sum scaled by `ring_scale` (ring units per unit of the clipping norm),
    /// stochastically rounded to integers in `dimension` coordinates, plus Skellam noise of
    /// variance at least (σ·ring_scale)² per coordinate. Rényi DP only (see [`crate::skellam`]).
    SubsampledSkellam {
        /// Poisson sampling rate q.
        sampling_rate: SamplingRate,
        /// Noise multiplier σ: the guaranteed noise std is σ times the scaled clipping norm.
        noise_multiplier: NoiseMultiplier,
        /// The clipping norm in ring units (s·C).
        ring_scale: Scale,
        /// Coordinates rounded (the model's parameter count).
        dimension: Steps,
        /// Number of steps composed.
        steps: Steps,
    },
    /// `count` releases of integer counts (L1 and L2 sensitivity 1: a histogram where each
    /// row is in one bucket) summed under secure aggregation with Skellam noise of total
    /// standard deviation at least `std_dev` per count (the holders' DP statistics of a
    /// federated job). Rényi DP only (see [`crate::skellam`]).
    Skellam {
        /// The guaranteed noise standard deviation of each summed count.
        std_dev: Scale,
        /// Number of such releases (histograms).
        count: Steps,
    },
    /// `count` releases known only by their (ε, δ) guarantee.
    ApproxDp {
        /// ε of one release.
        epsilon: Epsilon,
        /// δ of one release, in [0, 1).
        delta: f64,
        /// Number of such releases.
        count: Steps,
    },
}

impl DpEvent {
    /// DP-SGD steps of the Poisson-subsampled Gaussian mechanism.
    pub fn subsampled_gaussian(q: f64, sigma: f64, steps: u64) -> Result<Self> {
        Ok(Self::SubsampledGaussian {
            sampling_rate: SamplingRate::new(q)?,
            noise_multiplier: NoiseMultiplier::new(sigma)?,
            steps: Steps::new(steps)?,
        })
    }

    /// Distributed DP-SGD steps under secure aggregation (see [`Self::SubsampledSkellam`]).
    pub fn subsampled_skellam(
        q: f64,
        sigma: f64,
        ring_scale: f64,
        dimension: u64,
        steps: u64,
    ) -> Result<Self> {
        Ok(Self::SubsampledSkellam {
            sampling_rate: SamplingRate::new(q)?,
            noise_multiplier: NoiseMultiplier::new(sigma)?,
            ring_scale: Scale::new(ring_scale)?,
            dimension: Steps::new(dimension)?,
            steps: Steps::new(steps)?,
        })
    }

    /// `count` histograms of counts summed under secure aggregation with Skellam noise of
    /// standard deviation `std_dev` (see [`Self::Skellam`]).
    pub fn skellam(std_dev: f64, count: u64) -> Result<Self> {
        Ok(Self::Skellam {
            std_dev: Scale::new(std_dev)?,
            count: Steps::new(count)?,
        })
    }

    /// Whether the event has only a Rényi-DP curve (no privacy loss distribution).
    pub fn rdp_only(&self) -> bool {
        matches!(self, Self::SubsampledSkellam { .. } | Self::Skellam { .. })
    }

    /// `count` Gaussian releases.
    pub fn gaussian(sensitivity: f64, std_dev: f64, count: u64) -> Result<Self> {
        Ok(Self::Gaussian {
            sensitivity: Scale::new(sensitivity)?,
            std_dev: Scale::new(std_dev)?,
            count: Steps::new(count)?,
        })
    }

    /// `count` Laplace releases.
    pub fn laplace(sensitivity: f64, scale: f64, count: u64) -> Result<Self> {
        Ok(Self::Laplace {
            sensitivity: Scale::new(sensitivity)?,
            scale: Scale::new(scale)?,
            count: Steps::new(count)?,
        })
    }

    /// `count` releases that are each (ε, δ)-DP.
    pub fn approx_dp(epsilon: f64, delta: f64, count: u64) -> Result<Self> {
        let event = Self::ApproxDp {
            epsilon: Epsilon::new(epsilon)?,
            delta,
            count: Steps::new(count)?,
        };
        event.validate()?;
        Ok(event)
    }

    /// Checks invariants that field types alone cannot express (used after deserialising).
    pub fn validate(&self) -> Result<()> {
        if let Self::ApproxDp { delta, .. } = self
            && !(0.0..1.0).contains(delta)
        {
            return Err(invalid("delta", delta, "must be in [0, 1)"));
        }
        Ok(())
    }

    /// A short human description, e.g. `subsampled Gaussian (q=0.01, σ=1.1, 1000 steps)`.
    pub fn describe(&self) -> String {
        match self {
            Self::SubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            } => format!(
                "subsampled Gaussian (q={sampling_rate}, σ={noise_multiplier}, {steps} steps)"
            ),
            Self::SubsampledSkellam {
                sampling_rate,
                noise_multiplier,
                ring_scale,
                dimension,
                steps,
            } => format!(
                "subsampled Skellam, secure aggregation (q={sampling_rate}, σ={noise_multiplier}, s·C={ring_scale}, d={dimension}, {steps} steps)"
            ),
            Self::Skellam { std_dev, count } => {
                format!("Skellam counts, secure aggregation (Δ=1, std={std_dev}, ×{count})")
            }
            Self::Gaussian {
                sensitivity,
                std_dev,
                count,
            } => {
                format!("Gaussian (Δ₂={sensitivity}, std={std_dev}, ×{count})")
            }
            Self::Laplace {
                sensitivity,
                scale,
                count,
            } => {
                format!("Laplace (Δ₁={sensitivity}, b={scale}, ×{count})")
            }
            Self::ApproxDp {
                epsilon,
                delta,
                count,
            } => {
                format!("({epsilon}, {delta:e})-DP release ×{count}")
            }
        }
    }
}
