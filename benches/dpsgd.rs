//! DP-SGD primitive benchmarks on one core: Gaussian noise throughput from the secure
//! generator against a plain non-cryptographic one, and clipping throughput.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedsynth_privacy::dpsgd::{GaussianNoise, clip_in_place, clipped_sum};
use fedsynth_privacy::rng::SecureRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn noise(c: &mut Criterion) {
    const N: usize = 1 << 20;
    let mut g = c.benchmark_group("gaussian_noise");
    g.throughput(Throughput::Elements(N as u64));
    let mut buf = vec![0.0f32; N];
    let mut secure = GaussianNoise::new(SecureRng::from_os());
    g.bench_function("chacha12_secure", |b| {
        b.iter(|| secure.add_to(&mut buf, 1.0).expect("noise"))
    });
    let mut plain = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    g.bench_function("xoshiro256pp_plain", |b| {
        b.iter(|| {
            for v in buf.iter_mut() {
                let z: f64 = plain.sample(StandardNormal);
                *v += z as f32;
            }
        })
    });
    g.finish();
}

fn clipping(c: &mut Criterion) {
    let (batch, dim) = (500usize, 100 * 256 + 256 * 256 + 256 * 100);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(2);
    let grads: Vec<f32> = (0..batch * dim)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let mut g = c.benchmark_group("clipping");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((grads.len() * 4) as u64));
    g.bench_function("clipped_sum_500x117k", |b| {
        b.iter(|| clipped_sum(&grads, dim, 1.0).expect("clip"))
    });
    let mut work = grads.clone();
    g.bench_function("clip_in_place_500x117k", |b| {
        b.iter(|| clip_in_place(&mut work, dim, 1.0).expect("clip"))
    });
    g.finish();
}

criterion_group!(benches, noise, clipping);
criterion_main!(benches);
