//! DP-SGD primitives: clipping against a direct f64 computation, and the Gaussian noise
//! checked statistically (mean, variance, tails, Kolmogorov–Smirnov) so that a wrong σ fails.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use fedsynth_privacy::dpsgd::{GaussianNoise, clip_in_place, clipped_sum, per_example_norms};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::special::ndtr;
use rand::{Rng, SeedableRng};

fn random_batch(batch: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..batch * dim)
        .map(|i| {
            // Rows of very different scales so some are clipped and some are not.
            let row_scale = [0.01f32, 0.3, 1.0, 5.0, 40.0][(i / dim) % 5];
            row_scale * (rng.random::<f32>() * 2.0 - 1.0)
        })
        .collect()
}

fn direct_clipped_sum(grads: &[f32], dim: usize, c: f64) -> Vec<f64> {
    let mut sum = vec![0.0f64; dim];
    for row in grads.chunks(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let f = if norm > c { c / norm } else { 1.0 };
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f * f64::from(v);
        }
    }
    sum
}

#[test]
fn clipped_sum_matches_direct_computation() {
    for (batch, dim) in [(1, 1), (7, 3), (50, 257), (200, 1000)] {
        let grads = random_batch(batch, dim, 11 + dim as u64);
        let c = 1.5;
        let ours = clipped_sum(&grads, dim, c).unwrap();
        let want = direct_clipped_sum(&grads, dim, c);
        for (o, w) in ours.iter().zip(&want) {
            assert!(
                (f64::from(*o) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{o} vs {w}"
            );
        }
    }
}

#[test]
fn clipping_bounds_every_row_and_leaves_small_rows_alone() {
    let dim = 333;
    let original = random_batch(100, dim, 3);
    let mut grads = original.clone();
    let c = 1.0;
    let before = clip_in_place(&mut grads, dim, c).unwrap();
    let after = per_example_norms(&grads, dim).unwrap();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(*a <= c, "row {i}: clipped norm {a} exceeds {c}");
        if *b <= c {
            assert_eq!(
                &grads[i * dim..(i + 1) * dim],
                &original[i * dim..(i + 1) * dim]
            );
        } else {
            assert!((a - c).abs() < 1e-5, "row {i}: {a}");
        }
    }
}

#[test]
fn bad_shapes_and_bounds_are_errors() {
    assert!(
        clipped_sum(&[1.0, 2.0, 3.0], 2, 1.0)
            .unwrap_err()
            .to_string()
            .contains("rows of 2")
    );
    assert!(clipped_sum(&[1.0, 2.0], 0, 1.0).is_err());
    assert!(clipped_sum(&[1.0, 2.0], 2, f64::NAN).is_err());
    assert!(clipped_sum(&[1.0, 2.0], 2, -1.0).is_err());
    let mut noise = GaussianNoise::new(SecureRng::from_seed(1));
    assert!(noise.add_to(&mut [0.0], f64::INFINITY).is_err());
}

fn noise_sample(n: usize, std: f64, seed: u64) -> Vec<f64> {
    let mut noise = GaussianNoise::new(SecureRng::from_seed(seed));
    let mut v = vec![0.0f64; n];
    noise.add_to_f64(&mut v, std).unwrap();
    v
}

/// Checks a sample against N(0, σ²); returns a description of the first failure.
fn check_normal(xs: &[f64], sigma: f64) -> Result<(), String> {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if mean.abs() > 5.0 * sigma / n.sqrt() {
        return Err(format!("mean {mean}"));
    }
    // Var of the sample variance ≈ 2σ⁴/(n−1): allow 5 standard errors (≈ 0.7% at n = 10⁶).
    if (var / (sigma * sigma) - 1.0).abs() > 5.0 * (2.0 / n).sqrt() {
        return Err(format!("variance {var} vs {}", sigma * sigma));
    }
    for k in [2.0, 3.0, 4.0] {
        let p = 2.0 * ndtr(-k);
        let observed = xs.iter().filter(|x| x.abs() > k * sigma).count() as f64;
        let sd = (n * p * (1.0 - p)).sqrt();
        if (observed - n * p).abs() > 5.0 * sd + 1.0 {
            return Err(format!("tail beyond {k}σ: {observed} vs {}", n * p));
        }
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let ks = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let cdf = ndtr(x / sigma);
            (cdf - i as f64 / n)
                .abs()
                .max(((i + 1) as f64 / n - cdf).abs())
        })
        .fold(0.0, f64::max);
    if ks > 1.95 / n.sqrt() {
        return Err(format!("KS distance {ks}"));
    }
    Ok(())
}

#[test]
fn gaussian_noise_has_the_requested_distribution() {
    let sigma = 2.5;
    let xs = noise_sample(1_000_000, sigma, 42);
    check_normal(&xs, sigma).unwrap();
    // The same test must reject noise that is 3% too small or too large.
    assert!(check_normal(&xs, sigma * 1.03).is_err());
    assert!(check_normal(&xs, sigma / 1.03).is_err());
}

#[test]
fn noisy_clipped_sum_adds_noise_of_sigma_times_c() {
    let (dim, c, sigma) = (100_000, 2.0, 1.5);
    let grads = vec![0.0f32; 3 * dim];
    let mut noise = GaussianNoise::new(SecureRng::from_seed(9));
    let out = noise.noisy_clipped_sum(&grads, dim, c, sigma).unwrap();
    let xs: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
    check_normal(&xs, sigma * c).unwrap();
}

#[test]
fn seeded_noise_is_reproducible_and_os_noise_is_not() {
    assert_eq!(noise_sample(16, 1.0, 5), noise_sample(16, 1.0, 5));
    let mut a = GaussianNoise::new(SecureRng::from_os());
    let mut b = GaussianNoise::new(SecureRng::from_os());
    let (mut x, mut y) = (vec![0.0f64; 16], vec![0.0f64; 16]);
    a.add_to_f64(&mut x, 1.0).unwrap();
    b.add_to_f64(&mut y, 1.0).unwrap();
    assert_ne!(x, y);
}

#[test]
fn a_row_that_is_not_finite_is_dropped_not_propagated() {
    let dim = 4;
    let good = [0.3f32, -0.4, 0.0, 1.2, 2.0, 2.0, 2.0, 2.0];
    for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut grads = good.to_vec();
        grads.extend([1.0, poison, 0.5, 0.5]);
        let sum = clipped_sum(&grads, dim, 1.0).unwrap();
        let want = clipped_sum(&good, dim, 1.0).unwrap();
        assert_eq!(sum, want, "poison {poison}");
        let mut noise = GaussianNoise::new(SecureRng::from_seed(3));
        let released = noise.noisy_clipped_sum(&grads, dim, 1.0, 1.0).unwrap();
        assert!(released.iter().all(|v| v.is_finite()));
        let mut in_place = grads.clone();
        clip_in_place(&mut in_place, dim, 1.0).unwrap();
        assert_eq!(&in_place[8..], &[0.0; 4]);
    }
    // A finite row whose squares overflow f32 is clipped, not dropped: norms are in f64.
    let huge = [3.0e38f32, 3.0e38, 0.0, 0.0];
    let sum = clipped_sum(&huge, dim, 1.0).unwrap();
    assert!(
        (sum[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5,
        "{sum:?}"
    );
}
