//! DP-SGD step against a non-private step of the same TVAE and batch, on burn's CPU backend
//! (flex): the private step computes exact per-example gradients through probe tensors,
//! clips them, and adds Gaussian noise from the secure generator.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use fedsynth_privacy::dpsgd::GaussianNoise;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::encoder::Span;
use fedsynth_synth::model::TvaeConfig;
use fedsynth_synth::train::{clipped_sums, per_example_parts, plain_step, private_step};

/// An encoded-row layout: `numeric` columns of `bins` slots and an offset each, then one
/// block per entry of `categories`, the last `unseen` slots of each never generated.
fn layout(numeric: usize, bins: usize, categories: &[usize], unseen: usize) -> (Vec<Span>, usize) {
    let mut spans = Vec::new();
    let mut w = 0;
    for _ in 0..numeric {
        spans.push(Span::Softmax {
            start: w,
            len: bins,
            sampleable: bins,
        });
        spans.push(Span::Offset { index: w + bins });
        w += bins + 1;
    }
    for &len in categories {
        spans.push(Span::Softmax {
            start: w,
            len,
            sampleable: len - unseen,
        });
        w += len;
    }
    (spans, w)
}

/// A diamonds-like table: 7 numeric columns (20 bins + offset) and categoricals of 6, 8 and
/// 9 slots.
fn spans() -> (Vec<Span>, usize) {
    layout(7, 20, &[6, 8, 9], 1)
}

/// A wide table (1,829 slots): 14 numeric columns (20 bins, a null slot and an offset),
/// categoricals of 16, 3 and 105 slots and an identifier's block of 1,398.
fn wide_spans() -> (Vec<Span>, usize) {
    layout(14, 21, &[16, 3, 105, 1398], 0)
}

fn batch(b: usize, width: usize, latent: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..b * width)
        .map(|i| if i % 7 == 0 { 1.0 } else { 0.0 })
        .collect();
    let eps = (0..b * latent).map(|i| ((i as f32) * 0.61).sin()).collect();
    (x, eps)
}

fn steps(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(1);
    let mut g = c.benchmark_group("tvae_step");
    g.sample_size(20);
    for (table, hidden, b) in [
        ("", 128usize, 1000usize),
        ("", 256, 500),
        ("wide_", 128, 1000),
    ] {
        let (spans, width) = if table.is_empty() {
            spans()
        } else {
            wide_spans()
        };
        let model = TvaeConfig::new(width).with_hidden(hidden).init(&device);
        let (x, eps) = batch(b, width, model.latent);
        let mut noise = GaussianNoise::new(SecureRng::from_os());
        g.bench_function(format!("{table}plain_h{hidden}_b{b}"), |bench| {
            bench.iter(|| plain_step(&model, x.clone(), eps.clone(), b, width, &spans, &device))
        });
        g.bench_function(format!("{table}probe_parts_h{hidden}_b{b}"), |bench| {
            bench.iter(|| {
                per_example_parts(&model, x.clone(), eps.clone(), b, width, &spans, &device)
            })
        });
        g.bench_function(format!("{table}clipped_sums_h{hidden}_b{b}"), |bench| {
            bench.iter(|| {
                clipped_sums(
                    &model,
                    x.clone(),
                    eps.clone(),
                    b,
                    width,
                    &spans,
                    1.0,
                    &device,
                )
            })
        });
        g.bench_function(format!("{table}dp_h{hidden}_b{b}"), |bench| {
            bench.iter(|| {
                private_step(
                    &model,
                    x.clone(),
                    eps.clone(),
                    b,
                    width,
                    &spans,
                    1.0,
                    1.1,
                    b as f64,
                    &mut noise,
                    &device,
                )
                .expect("step")
            })
        });
    }
    g.finish();
}

/// Decoding one chunk of the sampler (4,096 latent points) into output blocks: the
/// decoder's products, then each block's softmax and each offset's sigmoid.
fn decoding(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(1);
    let mut g = c.benchmark_group("tvae_decode");
    g.sample_size(20);
    for (table, (spans, width)) in [("", spans()), ("wide_", wide_spans())] {
        let model = TvaeConfig::new(width).init(&device);
        let rows = 4096;
        let z: Vec<f32> = (0..rows * model.latent)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        g.bench_function(format!("{table}generate_4096"), |bench| {
            bench.iter(|| {
                let zt = Tensor::<2>::from_data(
                    TensorData::new(z.clone(), [rows, model.latent]),
                    &device,
                );
                model.generate(zt, &spans)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, steps, decoding);
criterion_main!(benches);
