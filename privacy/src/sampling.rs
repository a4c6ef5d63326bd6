//! Poisson subsampling: every row joins a batch independently with probability q — the
//! sampling the accountants assume. Batch sizes vary; a fixed-size shuffle is not a substitute.

use rand::Rng;

use crate::params::SamplingRate;
use crate::rng::SecureRng;

/// The indices in `0..n` chosen independently with probability q, in increasing order.
/// Runs in time proportional to the batch size (geometric skips), not to n.
pub fn poisson_sample(n: usize, q: SamplingRate, rng: &mut SecureRng) -> Vec<usize> {
    let q = q.get();
    if q >= 1.0 {
        return (0..n).collect();
    }
    let mut out = Vec::with_capacity(((n as f64) * q * 1.2) as usize + 8);
    let log1mq = (-q).ln_1p();
    let mut i: usize = 0;
    loop {
        // Gap before the next chosen index ~ Geometric(q): floor(ln U / ln(1 − q)), U ∈ (0, 1].
        let u: f64 = 1.0 - rng.random::<f64>();
        let gap = (u.ln() / log1mq).floor();
        if !gap.is_finite() || gap >= (n - i) as f64 {
            break;
        }
        i += gap as usize;
        out.push(i);
        i += 1;
        if i >= n {
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_is_independent_with_rate_q() {
        let mut rng = SecureRng::from_seed(7);
        let (n, q, trials) = (200usize, 0.1, 20_000);
        let mut counts = vec![0u32; n];
        let mut sizes = Vec::with_capacity(trials);
        for _ in 0..trials {
            let s = poisson_sample(n, SamplingRate::new(q).unwrap(), &mut rng);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            sizes.push(s.len() as f64);
            for i in s {
                counts[i] += 1;
            }
        }
        // Each index: Binomial(trials, q); 5 standard deviations.
        let sd = (trials as f64 * q * (1.0 - q)).sqrt();
        for &c in &counts {
            assert!((f64::from(c) - trials as f64 * q).abs() < 5.0 * sd, "{c}");
        }
        // Batch size: mean nq, variance nq(1−q) (a fixed-size batch would have variance 0).
        let mean = sizes.iter().sum::<f64>() / trials as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        assert!((mean - 20.0).abs() < 0.1, "{mean}");
        assert!((var - 18.0).abs() < 1.0, "{var}");
    }

    #[test]
    fn edge_rates() {
        let mut rng = SecureRng::from_seed(1);
        assert_eq!(
            poisson_sample(5, SamplingRate::new(1.0).unwrap(), &mut rng),
            vec![0, 1, 2, 3, 4]
        );
        assert!(poisson_sample(0, SamplingRate::new(0.5).unwrap(), &mut rng).is_empty());
    }
}
