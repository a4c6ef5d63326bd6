//! What a curious coordinator learns under secure aggregation: everything it receives in a
//! round is recorded (the key adverts and every masked upload). The sum it can compute is
//! the true sum of the workers' clipped sums plus the DP noise; each upload on its own is
//! indistinguishable from uniform ring words and uncorrelated with its worker's update.

use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::secagg::{self, JobKey, KeyAdvert, Pairs};
use rand::Rng;

const WORKERS: usize = 5;
const LEN: usize = 40_000;

#[test]
fn the_coordinator_learns_the_noisy_sum_and_nothing_of_any_upload() {
    let job = "job-curious";
    let ids: Vec<String> = (0..WORKERS).map(|i| format!("f/w{i}")).collect();
    let keys: Vec<JobKey> = (0..WORKERS).map(|_| JobKey::generate()).collect();
    let sigma = 1.0;
    // What the coordinator relays: the adverts (recorded).
    let adverts: Vec<KeyAdvert> = ids
        .iter()
        .zip(&keys)
        .map(|(id, k)| KeyAdvert::new(job, id, k, sigma, None).unwrap())
        .collect();
    let (clip, batch) = (1.0, 50.0);
    let scale = secagg::ring_scale(clip, batch, WORKERS, sigma);
    let lambda = secagg::skellam_share(sigma, scale * clip, WORKERS, 0).unwrap();
    // Each worker's true update: a structured, far-from-uniform vector (a clipped sum of
    // gradients over ~50 rows: values of a few units, mostly positive in some coordinates).
    let mut data_rng = SecureRng::from_seed(11);
    let updates: Vec<Vec<f32>> = (0..WORKERS)
        .map(|w| {
            (0..LEN)
                .map(|j| {
                    let trend = ((j as f32) * 0.001 + w as f32).sin() * 3.0;
                    trend + data_rng.random_range(-0.5f32..0.5)
                })
                .collect()
        })
        .collect();
    let mut recorded: Vec<Vec<u32>> = Vec::new();
    for (w, (id, key)) in ids.iter().zip(&keys).enumerate() {
        let pairs = Pairs::agree(job, id, key, &adverts).unwrap();
        let mut noise = SecureRng::from_os();
        let mut words = secagg::discretise(&updates[w], scale, &mut noise);
        secagg::add_skellam(&mut words, lambda, &mut noise).unwrap();
        secagg::add_words(&mut words, &pairs.net_mask(LEN, 4, 1, &ids).unwrap());
        recorded.push(words);
    }

    // 1. The sum it computes: the true sum plus noise of std σ·C (one unit).
    let mut sum = vec![0u32; LEN];
    for r in &recorded {
        secagg::add_words(&mut sum, r);
    }
    let decoded = secagg::decode(&sum, scale);
    let errors: Vec<f64> = (0..LEN)
        .map(|j| {
            let truth: f64 = updates.iter().map(|u| f64::from(u[j])).sum();
            f64::from(decoded[j]) - truth
        })
        .collect();
    let var = errors.iter().map(|e| e * e).sum::<f64>() / LEN as f64;
    assert!(
        (var - sigma * sigma * clip * clip).abs() < 0.05,
        "noise variance {var}"
    );

    for (w, upload) in recorded.iter().enumerate() {
        // 2. Uniform words: a χ² test on the 256 byte values (255 d.o.f.; the 0.9999 quantile
        // is about 360) and on the top 4 bits of each word (15 d.o.f.; 0.9999: about 43).
        let mut bytes = [0u64; 256];
        let mut nibbles = [0u64; 16];
        for word in upload {
            for b in word.to_le_bytes() {
                bytes[b as usize] += 1;
            }
            nibbles[(word >> 28) as usize] += 1;
        }
        let chi = |counts: &[u64]| {
            let n: u64 = counts.iter().sum();
            let e = n as f64 / counts.len() as f64;
            counts
                .iter()
                .map(|&c| (c as f64 - e).powi(2) / e)
                .sum::<f64>()
        };
        assert!(chi(&bytes) < 360.0, "worker {w}: bytes χ² {}", chi(&bytes));
        assert!(
            chi(&nibbles) < 43.0,
            "worker {w}: nibbles χ² {}",
            chi(&nibbles)
        );
        // 3. No correlation with the worker's own update (|r| < 4.5/√L), read as signed
        // values the way the coordinator would decode them.
        let x: Vec<f64> = upload.iter().map(|&u| f64::from(u as i32)).collect();
        let y: Vec<f64> = updates[w].iter().map(|&v| f64::from(v)).collect();
        let r = correlation(&x, &y);
        assert!(
            r.abs() < 4.5 / (LEN as f64).sqrt(),
            "worker {w}: correlation {r}"
        );
    }
    // 4. A proper subset of the uploads (one worker missing: a void attempt) decodes to
    // nothing like the partial sum.
    let mut partial = vec![0u32; LEN];
    for r in &recorded[..WORKERS - 1] {
        secagg::add_words(&mut partial, r);
    }
    let x: Vec<f64> = secagg::decode(&partial, scale)
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let y: Vec<f64> = (0..LEN)
        .map(|j| updates[..WORKERS - 1].iter().map(|u| f64::from(u[j])).sum())
        .collect();
    assert!(correlation(&x, &y).abs() < 4.5 / (LEN as f64).sqrt());
}

fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    sxy / (sxx * syy).sqrt()
}
