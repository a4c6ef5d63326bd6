//! Raking (the calibration of generated rows to released margins) on one sampling block of a
//! large table: 327,680 proposals (65,536 rows kept at five proposals each) weighed against
//! 19 one-way margins of 20 slots and 16 two-way margins of 60 cells, some of them skewed.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, criterion_group, criterion_main};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::calibrate::{Margin, raking_weights};
use rand::Rng;

fn raking(c: &mut Criterion) {
    let mut rng = SecureRng::from_seed(3);
    let rows = 327_680;
    let mut slots = Vec::new();
    let mut targets = Vec::new();
    for m in 0..35 {
        let k = if m < 19 { 20 } else { 60 };
        // A third of the margins crowd their rows into the first slots.
        let power = if m % 3 == 0 { 3 } else { 1 };
        slots.push(
            (0..rows)
                .map(|_| (rng.random::<f64>().powi(power) * k as f64) as usize)
                .collect::<Vec<usize>>(),
        );
        targets.push(
            (0..k)
                .map(|_| rng.random::<f64>() + 0.1)
                .collect::<Vec<f64>>(),
        );
    }
    let margins: Vec<Margin<'_>> = slots
        .iter()
        .zip(&targets)
        .map(|(s, t)| Margin {
            slots: s,
            target: t,
        })
        .collect();
    let mut g = c.benchmark_group("raking");
    g.sample_size(10);
    g.bench_function("block_327680x35", |b| {
        b.iter(|| raking_weights(rows, &margins, 10.0))
    });
    g.finish();
}

criterion_group!(benches, raking);
criterion_main!(benches);
