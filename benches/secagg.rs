//! Secure aggregation's costs, per round, for one worker and for the coordinator:
//! - `mask`: a worker's net mask over L ring words with k neighbours (ChaCha20 keystreams,
//!   one per neighbour; what it adds to its update, computed while it trains);
//! - `quantise`: discretising an L-value clipped sum and adding its Skellam share;
//! - `sum`: the coordinator adding n masked uploads of L words (wrapping) and decoding the
//!   complete sum — there is no unmasking step: the masks cancel in the sum;
//! - with 10% dropouts an attempt is void and retried: the coordinator's work is the same sum
//!   over the survivors' fresh uploads, plus the partial sum it discards (`sum` at n and 0.9·n).
//!
//!   cargo bench --workspace --profile dev --bench secagg
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::secagg::{self, JobKey, KeyAdvert, Pairs};
use rand::RngCore;

fn roster(n: usize) -> (Vec<String>, Vec<JobKey>, Vec<KeyAdvert>) {
    let ids: Vec<String> = (0..n).map(|i| format!("f/w{i:04}")).collect();
    let keys: Vec<JobKey> = (0..n).map(|_| JobKey::generate()).collect();
    let adverts = ids
        .iter()
        .zip(&keys)
        .map(|(id, k)| KeyAdvert::new("bench", id, k, 1.0, None).expect("advert"))
        .collect();
    (ids, keys, adverts)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("secagg_mask");
    g.sample_size(10);
    for &len in &[100_000usize, 1_000_000] {
        for &k in &[2usize, 10] {
            let (ids, keys, adverts) = roster(k + 1);
            let pairs = Pairs::agree("bench", &ids[0], &keys[0], &adverts).expect("pairs");
            g.throughput(Throughput::Bytes((len * 4 * k) as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("L={len}"), format!("{k} neighbours")),
                &len,
                |b, &len| b.iter(|| pairs.net_mask(len, 3, 0, &ids).expect("mask")),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("secagg_quantise");
    g.sample_size(10);
    for &len in &[100_000usize, 1_000_000] {
        let mut rng = SecureRng::from_seed(1);
        let values: Vec<f32> = (0..len).map(|i| ((i as f32) * 0.01).sin()).collect();
        let scale = secagg::ring_scale(1.0, 500.0, 10, 1.0);
        let lambda = secagg::skellam_share(1.0, scale, 10, 0).expect("λ");
        g.bench_with_input(BenchmarkId::new("discretise+skellam", len), &len, |b, _| {
            b.iter(|| {
                let mut w = secagg::discretise(&values, scale, &mut rng);
                secagg::add_skellam(&mut w, lambda, &mut rng).expect("noise");
                w
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("secagg_sum");
    g.sample_size(10);
    for &len in &[100_000usize, 1_000_000] {
        let mut rng = SecureRng::from_seed(2);
        let upload: Vec<u32> = (0..len).map(|_| rng.next_u32()).collect();
        for &n in &[10usize, 100, 1000] {
            for &(label, live) in &[("0% dropouts", n), ("10% dropouts (void)", n - n / 10)] {
                if n * len > 100_000_000 && live != n {
                    continue;
                }
                g.throughput(Throughput::Bytes((len * 4 * live) as u64));
                g.bench_function(BenchmarkId::new(format!("L={len} n={n}"), label), |b| {
                    b.iter(|| {
                        let mut sum = vec![0u32; len];
                        for _ in 0..live {
                            secagg::add_words(&mut sum, &upload);
                        }
                        secagg::decode(&sum, 1e5)
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
