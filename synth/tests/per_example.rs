//! Per-example gradients from probe tensors, checked against brute force: one backward pass
//! per example, on the same model, rows and latent noise.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use burn::prelude::*;
use fedsynth_synth::model::{TvaeConfig, Weights};
use fedsynth_synth::train::{clipped_sums, per_example_parts};

mod common;
use common::SPANS;

fn batch(b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::new();
    for i in 0..b {
        let mut row = [0.0f32; 7];
        row[i % 3] = 1.0;
        row[3] = (i as f32 * 0.37).fract();
        row[4 + (i * 2) % 3] = 1.0;
        x.extend_from_slice(&row);
    }
    let eps = (0..b * 3).map(|k| ((k as f32 * 1.7).sin()) * 0.8).collect();
    (x, eps)
}

fn to_vec2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Gradients of one example's loss, per layer, by ordinary autodiff.
fn brute_force(
    model: &fedsynth_synth::model::Tvae,
    x: &[f32],
    eps: &[f32],
    device: &Device,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let weights = model.tracked_weights();
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [1, 7]), device).autodiff();
    let et = Tensor::<2>::from_data(TensorData::new(eps.to_vec(), [1, 3]), device).autodiff();
    let pass = model.train_pass(xt, et, &SPANS, Weights::Tracked(&weights));
    let grads = pass.loss.sum().backward();
    weights
        .iter()
        .map(|(w, b)| {
            (
                to_vec2(w.grad(&grads).unwrap().inner()),
                b.grad(&grads)
                    .unwrap()
                    .inner()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn probe_gradients_equal_brute_force_per_example() {
    check_probes(TvaeConfig::new(7).with_hidden(8).with_latent(3));
}

/// The same with the decoder conditioned on the first block (its slot read beside the
/// latent point): the probes see the conditioned layer's wider input.
#[test]
fn probe_gradients_of_a_conditional_model_equal_brute_force() {
    check_probes(
        TvaeConfig::new(7)
            .with_hidden(8)
            .with_latent(3)
            .with_condition_at(0)
            .with_condition_shares(vec![0.5, 0.3, 0.2]),
    );
}

fn check_probes(config: TvaeConfig) {
    let device = Device::flex();
    device.seed(5);
    let model = config.init(&device);
    let b = 5;
    let (x, eps) = batch(b);
    let (deltas, inputs, _) =
        per_example_parts(&model, x.clone(), eps.clone(), b, 7, &SPANS, &device);
    let mut brute_norms = vec![0.0f64; b];
    for i in 0..b {
        let bf = brute_force(
            &model,
            &x[i * 7..(i + 1) * 7],
            &eps[i * 3..(i + 1) * 3],
            &device,
        );
        for (l, (gw, gb)) in bf.iter().enumerate() {
            let a = to_vec2(inputs[l].clone());
            let d = to_vec2(deltas[l].clone());
            let (din, dout) = (a.len() / b, d.len() / b);
            for p in 0..din {
                for q in 0..dout {
                    let probe = a[i * din + p] * d[i * dout + q];
                    let want = gw[p * dout + q];
                    assert!(
                        (probe - want).abs() <= 1e-5 + 1e-4 * want.abs(),
                        "layer {l} example {i} w[{p},{q}]: {probe} vs {want}"
                    );
                }
            }
            for q in 0..dout {
                assert!(
                    (d[i * dout + q] - gb[q]).abs() <= 1e-5 + 1e-4 * gb[q].abs(),
                    "layer {l} bias"
                );
            }
            brute_norms[i] += gw
                .iter()
                .chain(gb)
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>();
        }
    }
    // The clipped sum equals Σ clip(gᵢ, C) built from the brute-force gradients.
    let clip = 0.5;
    let (sums, _) = clipped_sums(&model, x.clone(), eps.clone(), b, 7, &SPANS, clip, &device);
    let mut want: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for i in 0..b {
        let bf = brute_force(
            &model,
            &x[i * 7..(i + 1) * 7],
            &eps[i * 3..(i + 1) * 3],
            &device,
        );
        let f = (clip / brute_norms[i].sqrt()).min(1.0);
        for (l, (gw, gb)) in bf.into_iter().enumerate() {
            if want.len() <= l {
                want.push((vec![0.0; gw.len()], vec![0.0; gb.len()]));
            }
            want[l]
                .0
                .iter_mut()
                .zip(&gw)
                .for_each(|(s, g)| *s += f * f64::from(*g));
            want[l]
                .1
                .iter_mut()
                .zip(&gb)
                .for_each(|(s, g)| *s += f * f64::from(*g));
        }
    }
    for (l, ((gw, gb), (ww, wb))) in sums.into_iter().zip(&want).enumerate() {
        for (got, w) in to_vec2(gw).iter().zip(ww) {
            assert!(
                (f64::from(*got) - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "layer {l}: {got} vs {w}"
            );
        }
        for (got, w) in gb.into_data().try_to_vec::<f32>().unwrap().iter().zip(wb) {
            assert!(
                (f64::from(*got) - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "layer {l} bias: {got} vs {w}"
            );
        }
    }
    // Some examples were really clipped (else the check above would not test clipping).
    assert!(
        brute_norms.iter().any(|n| n.sqrt() > clip),
        "{brute_norms:?}"
    );
}

/// A conditional model's generated rows carry the condition slot they were drawn with, in
/// its block, one-hot, at the released shares it was drawn from.
#[test]
fn a_conditional_model_generates_its_drawn_slot_at_the_shares() {
    use fedsynth_privacy::rng::SecureRng;
    use fedsynth_synth::sample::Generator;
    let device = Device::flex();
    device.seed(9);
    let model = TvaeConfig::new(7)
        .with_hidden(8)
        .with_latent(3)
        .with_condition_at(4)
        .with_condition_shares(vec![0.8, 0.2, 0.0])
        .init(&device);
    let n = 4000;
    let rows = model.generate_rows(n, &SPANS, &device, &mut SecureRng::from_seed(3));
    assert_eq!(rows.len(), n * 7);
    let mut first = 0;
    for r in rows.chunks(7) {
        let block = &r[4..7];
        assert_eq!(block.iter().filter(|&&p| p == 1.0).count(), 1, "{block:?}");
        assert_eq!(block.iter().filter(|&&p| p == 0.0).count(), 2, "{block:?}");
        assert_eq!(block[2], 0.0, "a slot of share 0 drawn");
        first += usize::from(block[0] == 1.0);
    }
    let share = first as f64 / n as f64;
    assert!((share - 0.8).abs() < 0.03, "{share}");
}
