//! The GPU path against the CPU backend: on a software Vulkan adapter (Mesa's lavapipe,
//! selected explicitly), the per-example gradient norms, the clipped and noised step, and a
//! few DP-SGD steps of the real training loop on a real table equal the CPU backend's
//! within f32 rounding.
//!
//! Tolerances: per-example norms and the noised step agree to 1e-4 relative (f32 sums in
//! another order: about √d·2⁻²⁴ apart for d terms); after ten Adam steps every weight agrees
//! to 1e-4 absolute (ten moves of at most the learning rate, 5e-3, each off by rounding).
//!
//! Without a Vulkan driver the tests say so and pass, unless `FEDSYNTH_TEST_WGPU=required`
//! (set by `.ci/run`, which installs `mesa-vulkan-drivers`): then a missing adapter fails.

#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use burn::prelude::*;
use fedsynth_privacy::dpsgd::GaussianNoise;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::device::{self, Adapter, DeviceChoice};
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::model::{Tvae, TvaeConfig};
use fedsynth_synth::schema::Schema;
use fedsynth_synth::table::read_raw;
use fedsynth_synth::train::{Stepper, TrainConfig, per_example_parts, private_step};

mod common;
use common::SPANS;

/// The software adapter, or `None` (with a line saying why) where the machine has no
/// Vulkan driver and the run does not require one.
fn software() -> Option<Device> {
    match device::open_described(DeviceChoice::Wgpu(Adapter::Software), 7) {
        Ok(opened) => {
            assert!(
                opened.description.contains("software adapter"),
                "{}",
                opened.description
            );
            eprintln!("training on {}", opened.description);
            Some(opened.device)
        }
        Err(e) if std::env::var("FEDSYNTH_TEST_WGPU").as_deref() == Ok("required") => {
            panic!("FEDSYNTH_TEST_WGPU=required but: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: {e} (install mesa-vulkan-drivers for the software adapter; \
                 FEDSYNTH_TEST_WGPU=required makes this a failure)"
            );
            None
        }
    }
}

/// The same model on both devices: initialised on the CPU, copied to the GPU.
fn twin(config: &TvaeConfig, cpu: &Device, gpu: &Device) -> (Tvae, Tvae) {
    cpu.seed(5);
    let on_cpu = config.init(cpu);
    let mut on_gpu = config.init(gpu);
    on_gpu.load_flat(&on_cpu.to_flat()).unwrap();
    assert_eq!(on_gpu.to_flat(), on_cpu.to_flat());
    (on_cpu, on_gpu)
}

fn batch(b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::new();
    for i in 0..b {
        let mut row = [0.0f32; 7];
        row[i % 3] = 1.0;
        row[3] = ((i as f32 * 0.37).fract() - 0.5) * 1.8;
        row[4 + i % 2] = 1.0;
        x.extend_from_slice(&row);
    }
    let eps = (0..b * 3).map(|k| (k as f32 * 1.7).sin() * 0.9).collect();
    (x, eps)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// ‖gᵢ‖ of each example from the layers' inputs a and output gradients δ (f64).
fn norms(inputs: Vec<Tensor<2>>, deltas: Vec<Tensor<2>>, b: usize) -> Vec<f64> {
    let mut norm2 = vec![0.0f64; b];
    for (a, d) in inputs.into_iter().zip(deltas) {
        let (a, d) = (values(a), values(d));
        let (din, dout) = (a.len() / b, d.len() / b);
        for (i, n) in norm2.iter_mut().enumerate() {
            let sq = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
            *n += (sq(&a[i * din..(i + 1) * din]) + 1.0) * sq(&d[i * dout..(i + 1) * dout]);
        }
    }
    norm2.into_iter().map(f64::sqrt).collect()
}

fn assert_close(got: &[f32], want: &[f32], abs: f64, rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(*g), f64::from(*w));
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{k}]: wgpu {g} vs cpu {w}"
        );
        worst = worst.max((g - w).abs());
    }
    eprintln!(
        "{what}: largest difference {worst:.3e} over {} values",
        got.len()
    );
}

#[test]
fn per_example_norms_and_the_clipped_noised_step_match_the_cpu_backend() {
    let Some(gpu) = software() else { return };
    let cpu = Device::flex();
    let config = TvaeConfig::new(7).with_hidden(32).with_latent(3);
    let (on_cpu, on_gpu) = twin(&config, &cpu, &gpu);
    let b = 48;
    let (x, eps) = batch(b);

    let (d_cpu, a_cpu, loss_cpu) =
        per_example_parts(&on_cpu, x.clone(), eps.clone(), b, 7, &SPANS, &cpu);
    let (d_gpu, a_gpu, loss_gpu) =
        per_example_parts(&on_gpu, x.clone(), eps.clone(), b, 7, &SPANS, &gpu);
    assert!(
        (loss_gpu - loss_cpu).abs() <= 1e-4 * loss_cpu.abs(),
        "loss {loss_gpu} vs {loss_cpu}"
    );
    let (n_cpu, n_gpu) = (norms(a_cpu, d_cpu, b), norms(a_gpu, d_gpu, b));
    for (i, (g, c)) in n_gpu.iter().zip(&n_cpu).enumerate() {
        assert!((g - c).abs() <= 1e-4 * c, "example {i}: ‖g‖ {g} vs {c}");
    }
    // The clipping norm sits inside the spread of the norms: some examples are clipped,
    // some are not, so both branches of the clipping are compared.
    let mut sorted = n_cpu.clone();
    sorted.sort_by(f64::total_cmp);
    let clip = sorted[b / 2];
    assert!(sorted[0] < clip && clip < sorted[b - 1], "{sorted:?}");

    // The clipped, noised, averaged step at noise multiplier σ, with the same noise drawn
    // on both.
    let step = |model: &Tvae, device: &Device, sigma: f64| {
        let mut noise = GaussianNoise::new(SecureRng::from_seed(11));
        let (grads, _) = private_step(
            model,
            x.clone(),
            eps.clone(),
            b,
            7,
            &SPANS,
            clip,
            sigma,
            b as f64,
            &mut noise,
            device,
        )
        .unwrap();
        grads
            .unwrap()
            .into_iter()
            .flat_map(|(w, bias)| values(w).into_iter().chain(values(bias)))
            .collect::<Vec<f32>>()
    };
    let (s_cpu, s_gpu) = (step(&on_cpu, &cpu, 1.1), step(&on_gpu, &gpu, 1.1));
    assert_close(&s_gpu, &s_cpu, 1e-6, 1e-4, "noised step");
    // Without its noise (σ = 0) the step is the clipped mean alone: compared too, so that
    // the noise cannot hide a difference in the clipping.
    let (c_cpu, c_gpu) = (step(&on_cpu, &cpu, 0.0), step(&on_gpu, &gpu, 0.0));
    let scale = c_cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "the clipped mean is not all zeros");
    assert_close(
        &c_gpu,
        &c_cpu,
        1e-6 * f64::from(scale),
        1e-4,
        "clipped mean",
    );
}

#[test]
fn ten_dp_sgd_steps_on_a_real_table_match_the_cpu_backend() {
    let Some(gpu) = software() else { return };
    let cpu = Device::flex();
    let repo = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..");
    let schema = Schema::read(&repo.join("configs/wage.schema.toml"))
        .unwrap()
        .nullable_by_default();
    let table = read_raw(&repo.join("cli/tests/data/wage.csv"))
        .unwrap()
        .typed(&schema.kinds())
        .unwrap();
    let table = fedsynth_synth::nulls::with_pattern(table, &schema);
    let encoder = Encoder::new(&schema, &table).unwrap();
    let data = encoder.encode_rows(&table).unwrap();
    let config = TvaeConfig::new(encoder.width());
    let (mut on_cpu, mut on_gpu) = twin(&config, &cpu, &gpu);
    let start = on_cpu.to_flat();
    let cfg = TrainConfig {
        epochs: 1,
        sampling_rate: 0.02,
        clip_norm: 1.0,
        noise_multiplier: Some(1.0),
        learning_rate: 5e-3,
    };
    // The same seeds on both: the same Poisson batches, DP noise and latent noise.
    let run = |model: &mut Tvae, device: &Device| {
        let mut stepper = Stepper::new(
            model,
            &data,
            encoder.spans(),
            &cfg,
            device,
            SecureRng::from_seed(3),
        )
        .unwrap();
        let mut latent = SecureRng::from_seed(4);
        (0..10)
            .map(|_| stepper.step(model, &mut latent).unwrap())
            .collect::<Vec<_>>()
    };
    let steps_cpu = run(&mut on_cpu, &cpu);
    let steps_gpu = run(&mut on_gpu, &gpu);
    for ((lg, bg), (lc, bc)) in steps_gpu.iter().zip(&steps_cpu) {
        assert_eq!(bg, bc, "the same Poisson batch sizes");
        assert!((lg - lc).abs() <= 1e-4 * lc.abs(), "loss {lg} vs {lc}");
    }
    let (w_cpu, w_gpu) = (on_cpu.to_flat(), on_gpu.to_flat());
    assert_close(&w_gpu, &w_cpu, 1e-4, 0.0, "weights after ten steps");
    let moved = w_cpu
        .iter()
        .zip(&start)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "training moved the weights ({moved})");
}
