//! DP-SGD primitives on flat gradient buffers: exact per-example L2 clipping, the clipped
//! sum, and Gaussian noise from the secure generator.
//!
//! A batch of per-example gradients is a row-major `[batch, dim]` slice of `f32`. Norms are
//! accumulated in `f64`; when a gradient is clipped its scale is shrunk by a further 10⁻⁶
//! relative so that `f32` rounding can never leave a clipped norm above the bound. A row
//! with any non-finite value (overflowed activations, crafted weights) has no meaningful
//! norm: it is dropped (factor 0, zeroed in place), so it adds nothing to the sum and can
//! never turn a release into NaN, which would reveal that the row was sampled.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{PrivacyError, Result};
use crate::rng::SecureRng;

const CLIP_MARGIN: f64 = 1.0 - 1e-6;

fn check_shape(len: usize, dim: usize) -> Result<usize> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(PrivacyError::Shape(format!(
            "a gradient buffer of {len} values is not a whole number of rows of {dim}"
        )));
    }
    Ok(len / dim)
}

fn check_bound(max_norm: f64) -> Result<()> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(())
    } else {
        Err(crate::error::invalid(
            "clipping norm",
            max_norm,
            "must be a finite number > 0",
        ))
    }
}

/// Squared L2 norm of one row, accumulated in f64 over 8 lanes.
pub fn squared_norm(row: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = f64::from(v);
            *a += v * v;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in rest {
        s += f64::from(v) * f64::from(v);
    }
    s
}

/// The factor min(1, C/‖g‖) (shrunk by the safety margin when < 1) for a norm; 0 for a
/// norm that is not finite (the row is dropped).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if !norm.is_finite() {
        0.0
    } else if norm > max_norm {
        max_norm / norm * CLIP_MARGIN
    } else {
        1.0
    }
}

/// Per-example L2 norms of a `[batch, dim]` buffer.
pub fn per_example_norms(grads: &[f32], dim: usize) -> Result<Vec<f64>> {
    check_shape(grads.len(), dim)?;
    Ok(grads
        .chunks_exact(dim)
        .map(|r| squared_norm(r).sqrt())
        .collect())
}

/// Clips every row of a `[batch, dim]` buffer to L2 norm at most `max_norm`, in place;
/// returns the norms before clipping.
pub fn clip_in_place(grads: &mut [f32], dim: usize, max_norm: f64) -> Result<Vec<f64>> {
    check_shape(grads.len(), dim)?;
    check_bound(max_norm)?;
    let mut norms = Vec::with_capacity(grads.len() / dim);
    for row in grads.chunks_exact_mut(dim) {
        let n = squared_norm(row).sqrt();
        let f = clip_factor(n, max_norm);
        if f == 0.0 {
            row.fill(0.0);
        } else if f < 1.0 {
            let f = f as f32;
            row.iter_mut().for_each(|v| *v *= f);
        }
        norms.push(n);
    }
    Ok(norms)
}

/// Σᵢ clip(gᵢ, C) over the rows of a `[batch, dim]` buffer, without modifying it.
pub fn clipped_sum(grads: &[f32], dim: usize, max_norm: f64) -> Result<Vec<f32>> {
    check_shape(grads.len(), dim)?;
    check_bound(max_norm)?;
    let mut sum = vec![0.0f32; dim];
    for row in grads.chunks_exact(dim) {
        let f = clip_factor(squared_norm(row).sqrt(), max_norm) as f32;
        if f == 0.0 {
            continue;
        }
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f * v;
        }
    }
    Ok(sum)
}

/// Gaussian noise for DP sums, drawn from the secure generator.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: SecureRng,
}

impl GaussianNoise {
    /// Noise from a given generator (use [`SecureRng::from_os`] outside tests).
    pub fn new(rng: SecureRng) -> Self {
        Self { rng }
    }

    /// Adds N(0, std²) independently to every value.
    pub fn add_to(&mut self, values: &mut [f32], std: f64) -> Result<()> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(crate::error::invalid(
                "noise standard deviation",
                std,
                "must be finite and ≥ 0",
            ));
        }
        for v in values.iter_mut() {
            let z: f64 = self.rng.sample(StandardNormal);
            *v += (z * std) as f32;
        }
        Ok(())
    }

    /// Adds N(0, std²) to every value of an `f64` buffer.
    pub fn add_to_f64(&mut self, values: &mut [f64], std: f64) -> Result<()> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(crate::error::invalid(
                "noise standard deviation",
                std,
                "must be finite and ≥ 0",
            ));
        }
        for v in values.iter_mut() {
            let z: f64 = self.rng.sample(StandardNormal);
            *v += z * std;
        }
        Ok(())
    }

    /// The DP-SGD release for one step: Σ clip(gᵢ, C) + N(0, (σC)²) per coordinate.
    pub fn noisy_clipped_sum(
        &mut self,
        grads: &[f32],
        dim: usize,
        max_norm: f64,
        noise_multiplier: f64,
    ) -> Result<Vec<f32>> {
        let mut sum = clipped_sum(grads, dim, max_norm)?;
        self.add_to(&mut sum, noise_multiplier * max_norm)?;
        Ok(sum)
    }
}
