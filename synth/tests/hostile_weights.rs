//! Weights that arrive from outside (a federated round's global model) are the coordinator's
//! to choose. A crafted model can make activations overflow for rows of one category only;
//! if that turned the released sum into NaN, the release would tell whether such a row was
//! sampled. These tests pin the defences: weights out of range are refused on load, an
//! example whose gradient is not finite contributes nothing, and a step always releases
//! finite noise.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use burn::prelude::*;
use fedsynth_privacy::dpsgd::GaussianNoise;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::model::{MAX_ABS_WEIGHT, Tvae, TvaeConfig};
use fedsynth_synth::train::{clipped_sums, private_step};

mod common;
use common::SPANS;

/// Rows `idx` of a fixed batch: row i has category i % 3 in the first block.
fn rows(idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::new();
    let mut eps = Vec::new();
    for &i in idx {
        let mut row = [0.0f32; 7];
        row[i % 3] = 1.0;
        row[3] = (i as f32 * 0.37).fract();
        row[4 + (i * 2) % 3] = 1.0;
        x.extend_from_slice(&row);
        eps.extend((0..3).map(|k| (((i * 3 + k) as f32 * 1.7).sin()) * 0.8));
    }
    (x, eps)
}

fn model(device: &Device) -> Tvae {
    device.seed(9);
    TvaeConfig::new(7)
        .with_hidden(8)
        .with_latent(3)
        .init(device)
}

/// A model whose first layer sends category 0 of the first column to the edge of f32, so
/// that every row with that category overflows and no other row does.
fn booby_trapped(device: &Device) -> Tvae {
    let mut m = model(device);
    let mut flat = m.to_flat();
    let hidden = 8;
    // Layer 0's weight is [7, 8] row-major: input feature 0's weights come first.
    for w in &mut flat[..hidden] {
        *w = 3.0e38;
    }
    let shapes = m.shapes();
    let mut at = 0;
    let mut layers = Vec::new();
    for &(i, o) in &shapes {
        let w = Tensor::<2>::from_data(
            TensorData::new(flat[at..at + i * o].to_vec(), [i, o]),
            device,
        );
        at += i * o;
        let b = Tensor::<1>::from_data(TensorData::new(flat[at..at + o].to_vec(), [o]), device);
        at += o;
        layers.push((w, b));
    }
    fedsynth_synth::train::set_weights(&mut m, layers);
    m
}

fn values(sums: &[(Tensor<2>, Tensor<1>)]) -> Vec<f32> {
    sums.iter()
        .flat_map(|(w, b)| {
            let mut v = w.clone().into_data().try_to_vec::<f32>().unwrap();
            v.extend(b.clone().into_data().try_to_vec::<f32>().unwrap());
            v
        })
        .collect()
}

#[test]
fn weights_out_of_range_are_refused_on_load() {
    let device = Device::flex();
    let mut m = model(&device);
    let before = m.to_flat();
    for bad in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        MAX_ABS_WEIGHT * 2.0,
        -1e30,
    ] {
        let mut flat = before.clone();
        flat[17] = bad;
        let err = m.load_flat(&flat).unwrap_err();
        assert!(err.contains("weight 17"), "{err}");
        assert_eq!(m.to_flat(), before, "a refused load changed the model");
    }
    let mut edge = before.clone();
    edge[3] = MAX_ABS_WEIGHT;
    edge[4] = -MAX_ABS_WEIGHT;
    m.load_flat(&edge).unwrap();
    assert_eq!(m.to_flat(), edge);
}

#[test]
fn an_example_whose_gradient_overflows_contributes_nothing() {
    let device = Device::flex();
    let trapped = booby_trapped(&device);
    let clip = 1.0;
    // Rows 0 and 3 have the trapped category; 1, 2 and 4 do not.
    let (x, eps) = rows(&[0, 1, 2, 3, 4]);
    let (with, _) = clipped_sums(&trapped, x, eps, 5, 7, &SPANS, clip, &device);
    let with = values(&with);
    assert!(
        with.iter().all(|v| v.is_finite()),
        "a non-finite value was released"
    );
    let (x, eps) = rows(&[1, 2, 4]);
    let (without, _) = clipped_sums(&trapped, x, eps, 3, 7, &SPANS, clip, &device);
    let without = values(&without);
    for (a, b) in with.iter().zip(&without) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs {b}");
    }
    // A batch of trapped rows alone sums to exactly zero.
    let (x, eps) = rows(&[0, 3]);
    let (only, _) = clipped_sums(&trapped, x, eps, 2, 7, &SPANS, clip, &device);
    assert!(values(&only).iter().all(|v| *v == 0.0));
}

#[test]
fn a_step_on_trapped_rows_still_releases_finite_noise() {
    let device = Device::flex();
    let trapped = booby_trapped(&device);
    let (x, eps) = rows(&[0, 3, 6]);
    let mut noise = GaussianNoise::new(SecureRng::from_seed(4));
    let (grads, _) = private_step(
        &trapped, x, eps, 3, 7, &SPANS, 1.0, 1.5, 10.0, &mut noise, &device,
    )
    .unwrap();
    let released = values(&grads.unwrap());
    assert!(released.iter().all(|v| v.is_finite()));
    // Pure noise: σC/expected batch = 0.15 per value, so values are not all zero.
    let mean_sq =
        released.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / released.len() as f64;
    assert!((mean_sq.sqrt() - 0.15).abs() < 0.05, "{}", mean_sq.sqrt());
}
