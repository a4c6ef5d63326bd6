//! Numerically careful special functions the accountants need: normal tails in log space,
//! log-sum-exp helpers and log-binomials.

use std::f64::consts::{LN_2, PI};

/// log(exp(a) + exp(b)), exact for infinite arguments.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(exp(a) − exp(b)) for a ≥ b; −∞ when they are equal.
pub fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// log Φ(x), the log of the standard normal CDF, accurate far into the lower tail.
pub fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        // Φ(x) = 1 − Φ(−x), and Φ(−x) is tiny.
        return (-ndtr(-x)).ln_1p();
    }
    if x > -20.0 {
        return ndtr(x).ln();
    }
    // Asymptotic series: Φ(x) = φ(x)/|x| · (1 − 1/x² + 3/x⁴ − 15/x⁶ + 105/x⁸ …)
    let x2 = x * x;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..8 {
        term *= -((2 * k - 1) as f64) / x2;
        sum += term;
    }
    -0.5 * x2 - (-x).ln() - 0.5 * (2.0 * PI).ln() + sum.ln()
}

/// Φ(x), the standard normal CDF.
pub fn ndtr(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// 1 − Φ(x), the standard normal survival function, without cancellation.
pub fn ndtr_sf(x: f64) -> f64 {
    ndtr(-x)
}

/// log erfc(x), as in the RDP literature (log 2 + log Φ(−x√2)).
pub fn log_erfc(x: f64) -> f64 {
    LN_2 + log_ndtr(-x * std::f64::consts::SQRT_2)
}

/// log |binomial(α, k)| and its sign, for real α ≥ 0 and integer k ≥ 0.
pub fn log_abs_binom(alpha: f64, k: u64) -> (f64, f64) {
    if alpha.fract() == 0.0 && alpha >= k as f64 {
        let a = alpha;
        let k = k as f64;
        let v = libm::lgamma(a + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(a - k + 1.0);
        return (v, 1.0);
    }
    // Product form: binom(α, k) = Π_{j<k} (α − j)/(j + 1); α is small for fractional orders.
    let mut log = 0.0;
    let mut sign = 1.0;
    for j in 0..k {
        let num = alpha - j as f64;
        if num == 0.0 {
            return (f64::NEG_INFINITY, 0.0);
        }
        if num < 0.0 {
            sign = -sign;
        }
        log += num.abs().ln() - ((j + 1) as f64).ln();
    }
    (log, sign)
}

/// Inverse of the standard normal CDF, by bisection refined with Newton steps.
pub fn ndtri(p: f64) -> f64 {
    debug_assert!(p > 0.0 && p < 1.0);
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ndtr(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_ndtr_is_continuous_across_branches() {
        for x in [-20.0_f64, 6.0] {
            let a = log_ndtr(x - 1e-9);
            let b = log_ndtr(x + 1e-9);
            assert!((a - b).abs() < 1e-6 * a.abs().max(1.0), "{x}: {a} vs {b}");
        }
        // Known value: log Φ(−30) ≈ −454.321
        assert!((log_ndtr(-30.0) + 454.321_17).abs() < 1e-3);
        assert!((ndtr(1.959_963_984_540_054) - 0.975).abs() < 1e-12);
    }

    #[test]
    fn binomials() {
        let (l, s) = log_abs_binom(10.0, 3);
        assert!((l.exp() - 120.0).abs() < 1e-9 && s == 1.0);
        let (l, s) = log_abs_binom(2.5, 4); // 2.5·1.5·0.5·(−0.5)/24
        assert!((s * l.exp() - (2.5 * 1.5 * 0.5 * -0.5 / 24.0)).abs() < 1e-12);
        assert!((ndtri(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
    }
}
