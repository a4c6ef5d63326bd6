//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov, Talwar and
//! Zhang 2019, integer and fractional orders), plain Gaussian and Laplace releases, with the
//! tight RDP → (ε, δ) conversion of Canonne, Kamath and Steinke (2020) used by dp_accounting.

use crate::error::{PrivacyError, Result};
use crate::event::DpEvent;
use crate::special::{log_abs_binom, log_add, log_erfc, log_sub};

/// The default Rényi orders: 1.1 … 10.9 by 0.1, 11 … 63, and 128, 256, 512, 1024
/// (the same grid as dp_accounting's `RdpAccountant`).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (11..=109).map(|i| f64::from(i) / 10.0).collect();
    orders.extend((11..=63).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// An RDP accountant: per-order Rényi divergences of the composed events.
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::with_orders(default_orders()).expect("default orders are valid")
    }
}

impl RdpAccountant {
    /// An empty accountant over the given orders (each > 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() || orders.iter().any(|a| !(a.is_finite() && *a > 1.0)) {
            return Err(PrivacyError::Calibration(
                "RDP orders must be finite and > 1".into(),
            ));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Adds an event's Rényi divergences at every order.
    pub fn compose(&mut self, event: &DpEvent) -> Result<&mut Self> {
        for (r, &alpha) in self.rdp.iter_mut().zip(&self.orders) {
            *r += event_rdp(event, alpha)?;
        }
        Ok(self)
    }

    /// The smallest ε over all orders such that the composition is (ε, δ)-DP.
    pub fn epsilon(&self, delta: f64) -> f64 {
        rdp_to_epsilon(&self.orders, &self.rdp, delta).0
    }

    /// The ε together with the order that attains it.
    pub fn epsilon_and_order(&self, delta: f64) -> (f64, f64) {
        rdp_to_epsilon(&self.orders, &self.rdp, delta)
    }
}

/// The Rényi divergence of one event at order α.
fn event_rdp(event: &DpEvent, alpha: f64) -> Result<f64> {
    Ok(match *event {
        DpEvent::SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            steps,
        } => {
            steps.get() as f64
                * subsampled_gaussian_rdp(sampling_rate.get(), noise_multiplier.get(), alpha)
        }
        DpEvent::Gaussian {
            sensitivity,
            std_dev,
            count,
        } => {
            let sigma = std_dev.get() / sensitivity.get();
            count.get() as f64 * alpha / (2.0 * sigma * sigma)
        }
        DpEvent::Laplace {
            sensitivity,
            scale,
            count,
        } => {
            // Mironov 2017, Proposition 6, with ε₀ = Δ/b.
            let e = sensitivity.get() / scale.get();
            let a = alpha;
            let t1 = ((a - 1.0) * e).exp() * a / (2.0 * a - 1.0);
            let t2 = (-a * e).exp() * (a - 1.0) / (2.0 * a - 1.0);
            count.get() as f64 * (t1 + t2).ln() / (a - 1.0)
        }
        DpEvent::SubsampledSkellam {
            sampling_rate,
            noise_multiplier,
            ring_scale,
            dimension,
            steps,
        } => {
            let mechanism = crate::skellam::Skellam::for_dpsgd(
                noise_multiplier.get(),
                ring_scale.get(),
                dimension.get(),
            );
            steps.get() as f64 * mechanism.subsampled_rdp(sampling_rate.get(), alpha)
        }
        DpEvent::Skellam { std_dev, count } => {
            let mechanism = crate::skellam::Skellam::for_counts(std_dev.get());
            count.get() as f64 * mechanism.rdp(alpha)
        }
        DpEvent::ApproxDp { .. } => {
            return Err(PrivacyError::Calibration(
                "an (ε, δ) event has no Rényi-DP curve; use the PLD accountant".into(),
            ));
        }
    })
}

/// RDP of one step of the Poisson-subsampled Gaussian with rate q and noise multiplier σ.
pub fn subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    for i in 0..=alpha {
        let (lb, _) = log_abs_binom(alpha as f64, i);
        let fi = i as f64;
        let log_coef = lb + fi * lq + (alpha - i) as f64 * l1q;
        log_a = log_add(log_a, log_coef + (fi * fi - fi) / (2.0 * sigma * sigma));
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = 2.0 * sigma * sigma;
    let mut i = 0u64;
    loop {
        let (log_coef, sign) = log_abs_binom(alpha, i);
        let fi = i as f64;
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lq + j * l1q;
        let log_t1 = log_coef + j * lq + fi * l1q;
        let log_e0 = 0.5_f64.ln() + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5_f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / s2 + log_e0;
        let log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
        if sign > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        i += 1;
        if log_s0.max(log_s1) < -30.0 || i > 10_000 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// Converts per-order RDP to (ε, δ): ε = min over α of
/// `rdp + log1p(−1/α) − log(δ·α)/(α − 1)` (Canonne, Kamath, Steinke 2020, Prop. 12).
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            // δ ≥ sqrt(1 − exp(−KL)) already: ε = 0 suffices.
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}
