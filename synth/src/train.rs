//! DP-SGD training of the generator: Poisson-sampled batches, exact per-example clipping
//! through probe gradients, Gaussian noise from the privacy crate's secure generator, and
//! Adam. Each step is one Poisson-subsampled Gaussian release, accounted by the caller.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use fedsynth_privacy::SamplingRate;
use fedsynth_privacy::dpsgd::GaussianNoise;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::sampling::poisson_sample;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::encoder::{Encoded, Span};
use crate::error::{Result, SynthError};
use crate::model::{Tvae, Weights};

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data (in expectation: steps = epochs / q).
    pub epochs: usize,
    /// Poisson sampling rate q.
    pub sampling_rate: f64,
    /// Per-example clipping norm C.
    pub clip_norm: f64,
    /// Noise multiplier σ (noise std σ·C on the clipped sum); `None` trains without DP.
    pub noise_multiplier: Option<f64>,
    /// Adam learning rate.
    pub learning_rate: f64,
}

impl TrainConfig {
    /// Steps per epoch, ⌈1/q⌉.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.sampling_rate).ceil() as u64
    }

    /// Total number of steps.
    pub fn steps(&self) -> u64 {
        self.steps_per_epoch() * self.epochs as u64
    }
}

/// Adam moments for one layer.
struct Moments {
    mw: Tensor<2>,
    vw: Tensor<2>,
    mb: Tensor<1>,
    vb: Tensor<1>,
}

/// Adam over the model's Linear layers, on plain tensors.
pub struct Adam {
    moments: Vec<Moments>,
    t: i32,
    lr: f64,
    betas: (f64, f64),
}

impl Adam {
    /// Zero moments shaped like `model`.
    pub fn new(model: &Tvae, lr: f64, device: &Device) -> Self {
        Self::for_shapes(&model.shapes(), lr, device)
    }

    /// Zero moments for layers of these (d_in, d_out) shapes.
    pub fn for_shapes(shapes: &[(usize, usize)], lr: f64, device: &Device) -> Self {
        let moments = shapes
            .iter()
            .map(|&(i, o)| Moments {
                mw: Tensor::zeros([i, o], device),
                vw: Tensor::zeros([i, o], device),
                mb: Tensor::zeros([o], device),
                vb: Tensor::zeros([o], device),
            })
            .collect();
        Self {
            moments,
            t: 0,
            lr,
            betas: (0.9, 0.999),
        }
    }

    /// The same with other decay rates (β₁, β₂) of the moments.
    pub fn with_betas(mut self, b1: f64, b2: f64) -> Self {
        self.betas = (b1, b2);
        self
    }

    /// One Adam step with per-layer gradients (weight `[d_in, d_out]`, bias `[d_out]`).
    pub fn step(&mut self, model: &mut Tvae, grads: Vec<(Tensor<2>, Tensor<1>)>) {
        self.step_layers(&mut model.layers, grads);
    }

    /// One Adam step on any stack of Linear layers.
    pub fn step_layers(&mut self, layers: &mut [Linear], grads: Vec<(Tensor<2>, Tensor<1>)>) {
        const EPS: f64 = 1e-8;
        let (b1, b2) = self.betas;
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let lr = self.lr;
        for ((layer, m), (gw, gb)) in layers.iter_mut().zip(&mut self.moments).zip(grads) {
            m.mw = m.mw.clone() * b1 + gw.clone() * (1.0 - b1);
            m.vw = m.vw.clone() * b2 + gw.square() * (1.0 - b2);
            m.mb = m.mb.clone() * b1 + gb.clone() * (1.0 - b1);
            m.vb = m.vb.clone() * b2 + gb.square() * (1.0 - b2);
            let uw = (m.mw.clone() / c1) / ((m.vw.clone() / c2).sqrt() + EPS) * lr;
            let ub = (m.mb.clone() / c1) / ((m.vb.clone() / c2).sqrt() + EPS) * lr;
            layer.weight = layer.weight.clone().map(|w| w - uw);
            if let Some(bias) = layer.bias.take() {
                layer.bias = Some(bias.map(|b| b - ub));
            }
        }
    }
}

/// θ ← θ − lr·g for every layer.
fn sgd_step(model: &mut Tvae, grads: Vec<(Tensor<2>, Tensor<1>)>, lr: f64) {
    for (layer, (gw, gb)) in model.layers.iter_mut().zip(grads) {
        layer.weight = layer.weight.clone().map(|w| w - gw * lr);
        if let Some(bias) = layer.bias.take() {
            layer.bias = Some(bias.map(|b| b - gb * lr));
        }
    }
}

/// What one epoch reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken so far.
    pub steps: u64,
    /// Mean per-example loss over the epoch's batches.
    pub loss: f64,
}

fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

fn normal_vec(n: usize, rng: &mut SecureRng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

/// How a step applies its gradient.
enum Optimizer {
    /// Adam (single-party training, a FedAvg holder).
    Adam(Adam),
    /// Plain SGD at this rate (a FedAdam holder: the coordinator runs Adam).
    Sgd(f64),
}

/// Everything one DP-SGD step needs besides the model: the data, the optimiser and the
/// randomness. Built once per training run (or per federated round).
///
/// The Poisson sampling and the Gaussian noise draw from the stepper's own generator, which
/// the caller hands over ([`SecureRng::for_dp_noise`]: seeded by the operating system); the
/// generator passed to [`Stepper::step`] only draws the VAE's latent noise, which a `--seed`
/// may fix without weakening the guarantee.
pub struct Stepper<'a> {
    data: &'a Encoded,
    spans: &'a [Span],
    cfg: TrainConfig,
    q: SamplingRate,
    optimizer: Optimizer,
    sampler: SecureRng,
    noise: GaussianNoise,
    device: Device,
}

impl<'a> Stepper<'a> {
    /// Prepares steps over the encoded rows `data`; `private` draws the batches and the DP
    /// noise (pass [`SecureRng::for_dp_noise`]).
    pub fn new(
        model: &Tvae,
        data: &'a Encoded,
        spans: &'a [Span],
        cfg: &TrainConfig,
        device: &Device,
        mut private: SecureRng,
    ) -> Result<Self> {
        if data.rows() == 0 || data.width() == 0 {
            return Err(SynthError::Setting("no rows to train on".into()));
        }
        let noise = GaussianNoise::new(private.fork());
        Ok(Self {
            data,
            spans,
            cfg: *cfg,
            q: SamplingRate::new(cfg.sampling_rate)?,
            optimizer: Optimizer::Adam(Adam::new(model, cfg.learning_rate, device)),
            sampler: private,
            noise,
            device: device.clone(),
        })
    }

    /// Continues from an earlier run's optimiser state (a federated worker's, from its
    /// previous round) instead of zero moments. The state is the holder's own: a function of
    /// its DP-noised gradients only, kept on the holder, post-processing.
    pub fn resume(mut self, adam: Adam) -> Self {
        if let Optimizer::Adam(current) = &self.optimizer
            && adam.moments.len() == current.moments.len()
        {
            self.optimizer = Optimizer::Adam(adam);
        }
        self
    }

    /// Takes plain SGD steps at `learning_rate` instead of Adam steps: the moves a federated
    /// holder sends when the coordinator applies Adam to their average.
    pub fn plain_sgd(mut self, learning_rate: f64) -> Self {
        self.optimizer = Optimizer::Sgd(learning_rate);
        self
    }

    /// The Adam state, to resume from later (none after plain SGD steps).
    pub fn into_optimizer(self) -> Option<Adam> {
        match self.optimizer {
            Optimizer::Adam(adam) => Some(adam),
            Optimizer::Sgd(_) => None,
        }
    }

    /// One step: a Poisson batch, its clipped and noised (or plain) gradient, an Adam
    /// update. `rng` draws the latent noise only. Returns the batch's summed loss and size.
    pub fn step(&mut self, model: &mut Tvae, rng: &mut SecureRng) -> Result<(f64, usize)> {
        let (width, n) = (self.data.width(), self.data.rows());
        let batch = poisson_sample(n, self.q, &mut self.sampler);
        let mut x = Vec::with_capacity(batch.len() * width);
        for &i in &batch {
            self.data.extend_row(i, &mut x);
        }
        let b = batch.len();
        let eps = normal_vec(b * model.latent, rng);
        let (grads, loss) = match self.cfg.noise_multiplier {
            Some(sigma) => private_step(
                model,
                x,
                eps,
                b,
                width,
                self.spans,
                self.cfg.clip_norm,
                sigma,
                n as f64 * self.cfg.sampling_rate,
                &mut self.noise,
                &self.device,
            )?,
            None => plain_step(model, x, eps, b, width, self.spans, &self.device),
        };
        match (grads, &mut self.optimizer) {
            (Some(grads), Optimizer::Sgd(lr)) => sgd_step(model, grads, *lr),
            (Some(grads), Optimizer::Adam(adam)) => adam.step(model, grads),
            (None, _) => {}
        }
        Ok((loss, b))
    }
}

impl Stepper<'_> {
    /// One step's Poisson batch and the sum of its clipped per-example gradients, flat in the
    /// layout of [`Tvae::to_flat`], **without noise**: what a federated worker discretises and
    /// adds its share of the noise to under secure aggregation. An empty batch (or one whose
    /// sum is not finite) gives zeros, never an error that would tell who was sampled.
    /// Returns the sum and the batch size.
    pub fn clipped_sum(&mut self, model: &Tvae, rng: &mut SecureRng) -> Result<(Vec<f32>, usize)> {
        let (width, n) = (self.data.width(), self.data.rows());
        let batch = poisson_sample(n, self.q, &mut self.sampler);
        let b = batch.len();
        if b == 0 {
            return Ok((vec![0.0; model.parameters()], 0));
        }
        let mut x = Vec::with_capacity(b * width);
        for &i in &batch {
            self.data.extend_row(i, &mut x);
        }
        let eps = normal_vec(b * model.latent, rng);
        let (sums, _) = clipped_sums(
            model,
            x,
            eps,
            b,
            width,
            self.spans,
            self.cfg.clip_norm,
            &self.device,
        );
        if !all_finite(&sums) {
            return Ok((vec![0.0; model.parameters()], b));
        }
        let mut out = Vec::with_capacity(model.parameters());
        extend_flat(&mut out, sums);
        Ok((out, b))
    }
}

/// Trains `model` on the encoded rows `data`: `private` draws the batches and the DP noise,
/// `rng` the latent noise (see [`Stepper`]).
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Tvae,
    data: &Encoded,
    spans: &[Span],
    cfg: &TrainConfig,
    device: &Device,
    private: SecureRng,
    rng: &mut SecureRng,
    mut on_epoch: impl FnMut(EpochReport),
) -> Result<()> {
    let mut stepper = Stepper::new(model, data, spans, cfg, device, private)?;
    let per_epoch = cfg.steps_per_epoch();
    let mut steps = 0;
    for epoch in 1..=cfg.epochs {
        let (mut loss_sum, mut rows_seen) = (0.0, 0usize);
        for _ in 0..per_epoch {
            let (loss, b) = stepper.step(model, rng)?;
            loss_sum += loss;
            rows_seen += b;
            steps += 1;
        }
        on_epoch(EpochReport {
            epoch,
            steps,
            loss: loss_sum / rows_seen.max(1) as f64,
        });
    }
    Ok(())
}

/// Per-example gradient norms and the clipped, noised, averaged gradient of one step.
#[allow(clippy::too_many_arguments)]
pub fn private_step(
    model: &Tvae,
    x: Vec<f32>,
    eps: Vec<f32>,
    b: usize,
    width: usize,
    spans: &[Span],
    clip: f64,
    sigma: f64,
    expected_batch: f64,
    noise: &mut GaussianNoise,
    device: &Device,
) -> Result<(Option<Vec<(Tensor<2>, Tensor<1>)>>, f64)> {
    let shapes = model.shapes();
    let (sums, loss) = if b == 0 {
        // An empty Poisson batch still releases (pure noise): skipping it would reveal it.
        (zero_sums(&shapes, device), 0.0)
    } else {
        let (sums, loss) = clipped_sums(model, x, eps, b, width, spans, clip, device);
        if all_finite(&sums) {
            (sums, loss)
        } else {
            // Cannot happen with the per-example guard of `clipped_sums`; should it ever, the
            // step releases noise alone (independent of the data), never an error that
            // would tell who was sampled.
            (zero_sums(&shapes, device), f64::NAN)
        }
    };
    let noised = noised_mean(sums, sigma * clip, expected_batch, noise, device)?;
    Ok((Some(noised), loss))
}

/// Whether every value of the per-layer sums is finite (one number read back).
pub fn all_finite(sums: &[(Tensor<2>, Tensor<1>)]) -> bool {
    let total = sums
        .iter()
        .map(|(w, b)| w.clone().abs().sum() + b.clone().abs().sum())
        .reduce(|a, b| a + b);
    total.is_none_or(|t| f64::from(t.into_scalar::<f32>()).is_finite())
}

/// Unit roundoff of f32.
const F32_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// The factor by which clipping aims below C so that f32 rounding never leaves a clipped
/// gradient above it: a squared norm summed in f32 over `d` terms is off by at most about
/// d·u relative (u the unit roundoff), and each product of the clipped sum by 2u more.
pub fn clip_margin(shapes: &[(usize, usize)]) -> f64 {
    let widest = shapes.iter().map(|&(i, o)| i + o).max().unwrap_or(0);
    1.0 - (widest as f64 + 8.0) * F32_ROUNDOFF
}

/// Per-example clipping factors c = min(1, C·margin/‖gᵢ‖), computed in f64 from the layers'
/// inputs a and output gradients δ (‖gᵢ‖² = Σ (‖aᵢ‖² + 1)·‖δᵢ‖²), and whether any example
/// was dropped. Each row is first scaled by its largest magnitude, so no square overflows
/// f32; an example with any non-finite value (crafted weights can make activations
/// overflow for chosen rows) gets factor 0: it contributes nothing, exactly as if it had not
/// been sampled, and the step still releases its noise.
fn clip_factors(
    inputs: &[Tensor<2>],
    deltas: &[Tensor<2>],
    b: usize,
    clip: f64,
    margin: f64,
) -> (Vec<f32>, bool) {
    let mut parts = Vec::with_capacity(4 * inputs.len());
    for t in inputs.iter().zip(deltas).flat_map(|(a, d)| [a, d]) {
        let peak = t.clone().abs().max_dim(1);
        let scaled = (t.clone() / peak.clone().clamp_min(1e-30))
            .square()
            .sum_dim(1);
        parts.push(peak);
        parts.push(scaled);
    }
    let cols = parts.len();
    let values: Vec<f32> = Tensor::cat(parts, 1)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_else(|_| vec![f32::NAN; b * cols]);
    let mut dropped = false;
    let factors = (0..b)
        .map(|i| {
            let row = &values[i * cols..(i + 1) * cols];
            let mut norm2 = 0.0f64;
            let mut finite = row.len() == cols;
            for layer in row.chunks_exact(4) {
                let [pa, sa, pd, sd] = [layer[0], layer[1], layer[2], layer[3]].map(f64::from);
                finite &= pa.is_finite() && sa.is_finite() && pd.is_finite() && sd.is_finite();
                norm2 += (pa * pa * sa + 1.0) * (pd * pd * sd);
            }
            if !(finite && norm2.is_finite()) {
                dropped = true;
                return 0.0;
            }
            let norm = norm2.sqrt();
            if norm * margin > clip {
                (clip * margin / norm) as f32
            } else {
                1.0
            }
        })
        .collect();
    (factors, dropped)
}

/// Σᵢ clip(gᵢ, C) per layer, from one backward pass, and the batch's summed loss (NaN when
/// an example was dropped). Norms are computed in f64 (see [`clip_factors`]);
/// an example whose gradient is not finite contributes nothing.
#[allow(clippy::too_many_arguments)]
pub fn clipped_sums(
    model: &Tvae,
    x: Vec<f32>,
    eps: Vec<f32>,
    b: usize,
    width: usize,
    spans: &[Span],
    clip: f64,
    device: &Device,
) -> (Vec<(Tensor<2>, Tensor<1>)>, f64) {
    let (deltas, inputs, loss) = per_example_parts(model, x, eps, b, width, spans, device);
    let (sums, dropped) = clip_and_sum(inputs, deltas, b, clip, device);
    (sums, if dropped { f64::NAN } else { loss })
}

/// Σᵢ clip(gᵢ, C) per layer from the layers' inputs a and output gradients δ of `b` examples
/// (any stack of Linear layers read through probes), and whether an example was dropped
/// (its gradient not finite: it contributes nothing).
pub fn clip_and_sum(
    inputs: Vec<Tensor<2>>,
    deltas: Vec<Tensor<2>>,
    b: usize,
    clip: f64,
    device: &Device,
) -> (Vec<(Tensor<2>, Tensor<1>)>, bool) {
    let shapes: Vec<(usize, usize)> = inputs
        .iter()
        .zip(&deltas)
        .map(|(a, d)| (a.dims()[1], d.dims()[1]))
        .collect();
    let margin = clip_margin(&shapes);
    let (factors, dropped) = clip_factors(&inputs, &deltas, b, clip, margin);
    let scale = tensor2(factors, b, 1, device);
    // With a dropped example, its rows may hold inf or NaN, which a factor of 0 would not
    // cancel (inf·0 is NaN): non-finite entries are zeroed first.
    let clean = |t: Tensor<2>| {
        if dropped {
            let bad = t.clone().is_finite().bool_not();
            t.mask_fill(bad, 0.0)
        } else {
            t
        }
    };
    let sums = inputs
        .into_iter()
        .zip(deltas)
        .map(|(a, d)| {
            let cd = clean(d) * scale.clone();
            let gb = cd.clone().sum_dim(0).squeeze_dim::<1>(0);
            (clean(a).transpose().matmul(cd), gb)
        })
        .collect();
    (sums, dropped)
}

/// One probe per layer for a batch of `b`: a leaf `[b, d_out]` holding the layer's bias
/// repeated per example, whose gradient after `backward()` is the per-example output
/// gradient δ of that layer (see [`crate::model`]).
pub fn probes(layers: &[Linear], b: usize, device: &Device) -> Vec<Tensor<2>> {
    layers
        .iter()
        .map(|l| {
            let o = l.weight.val().dims()[1];
            let bias = l
                .bias
                .as_ref()
                .map_or_else(|| Tensor::zeros([o], device), |p| p.val());
            bias.unsqueeze::<2>()
                .expand([b, o])
                .autodiff()
                .require_grad()
        })
        .collect()
}

/// The probes' gradients (zeros for a probe the loss does not reach).
pub fn probe_grads(
    probes: &[Tensor<2>],
    grads: &burn::tensor::Gradients,
    device: &Device,
) -> Vec<Tensor<2>> {
    probes
        .iter()
        .map(|p| {
            p.grad(grads)
                .map(Tensor::inner)
                .unwrap_or_else(|| Tensor::zeros(p.dims(), device))
        })
        .collect()
}

/// Appends per-layer values (weights then bias, layer by layer) to `out` in the flat
/// layout of [`crate::model::layers_to_flat`].
pub fn extend_flat(out: &mut Vec<f32>, layers: Vec<(Tensor<2>, Tensor<1>)>) {
    for (w, b) in layers {
        out.extend(w.into_data().iter::<f32>());
        out.extend(b.into_data().iter::<f32>());
    }
}

/// (d_in, d_out) of every layer of a stack.
pub fn layer_shapes(layers: &[Linear]) -> Vec<(usize, usize)> {
    layers
        .iter()
        .map(|l| {
            let d = l.weight.val().dims();
            (d[0], d[1])
        })
        .collect()
}

/// Zero sums shaped like layers of these shapes.
pub fn zero_sums(shapes: &[(usize, usize)], device: &Device) -> Vec<(Tensor<2>, Tensor<1>)> {
    shapes
        .iter()
        .map(|&(i, o)| (Tensor::zeros([i, o], device), Tensor::zeros([o], device)))
        .collect()
}

/// The Gaussian mechanism on per-layer clipped sums: each value gets N(0, std²) from the
/// DP noise generator, then the whole is divided by `divisor` (the expected batch).
pub fn noised_mean(
    sums: Vec<(Tensor<2>, Tensor<1>)>,
    std: f64,
    divisor: f64,
    noise: &mut GaussianNoise,
    device: &Device,
) -> Result<Vec<(Tensor<2>, Tensor<1>)>> {
    let mut out = Vec::with_capacity(sums.len());
    for (gw, gb) in sums {
        let [i, o] = gw.dims();
        let mut nw = vec![0.0f32; i * o];
        noise.add_to(&mut nw, std)?;
        let mut nb = vec![0.0f32; o];
        noise.add_to(&mut nb, std)?;
        out.push((
            (gw + tensor2(nw, i, o, device)) / divisor,
            (gb + Tensor::from_data(TensorData::new(nb, [o]), device)) / divisor,
        ));
    }
    Ok(out)
}

/// Per-layer output gradients δ (`[B, d_out]`), layer inputs a (`[B, d_in]`) and the summed
/// loss of a batch: everything per-example gradients are made of.
pub fn per_example_parts(
    model: &Tvae,
    x: Vec<f32>,
    eps: Vec<f32>,
    b: usize,
    width: usize,
    spans: &[Span],
    device: &Device,
) -> (Vec<Tensor<2>>, Vec<Tensor<2>>, f64) {
    let probes = probes(&model.layers, b, device);
    let xt = tensor2(x, b, width, device).autodiff();
    let et = tensor2(eps, b, model.latent, device).autodiff();
    let pass = model.train_pass(xt, et, spans, Weights::Probed(&probes));
    let total = pass.loss.sum();
    let grads = total.backward();
    let loss = f64::from(total.inner().into_scalar::<f32>());
    let deltas = probe_grads(&probes, &grads, device);
    let inputs = pass.inputs.into_iter().map(Tensor::inner).collect();
    (deltas, inputs, loss)
}

/// An ordinary (non-private) step: mean gradient of the batch by autodiff.
pub fn plain_step(
    model: &Tvae,
    x: Vec<f32>,
    eps: Vec<f32>,
    b: usize,
    width: usize,
    spans: &[Span],
    device: &Device,
) -> (Option<Vec<(Tensor<2>, Tensor<1>)>>, f64) {
    if b == 0 {
        return (None, 0.0);
    }
    let weights = model.tracked_weights();
    let xt = tensor2(x, b, width, device).autodiff();
    let et = tensor2(eps, b, model.latent, device).autodiff();
    let pass = model.train_pass(xt, et, spans, Weights::Tracked(&weights));
    let total = pass.loss.sum();
    let grads = total.backward();
    let loss = f64::from(total.inner().into_scalar::<f32>());
    let g = weights
        .iter()
        .map(|(w, bias)| {
            let gw = w
                .grad(&grads)
                .map(Tensor::inner)
                .unwrap_or_else(|| Tensor::zeros(w.dims(), device));
            let gb = bias
                .grad(&grads)
                .map(Tensor::inner)
                .unwrap_or_else(|| Tensor::zeros(bias.dims(), device));
            (gw / b as f64, gb / b as f64)
        })
        .collect();
    (Some(g), loss)
}

/// Replaces a model's weights (for tests that compare against brute force).
pub fn set_weights(model: &mut Tvae, weights: Vec<(Tensor<2>, Tensor<1>)>) {
    for (layer, (w, b)) in model.layers.iter_mut().zip(weights) {
        layer.weight = Param::from_tensor(w);
        layer.bias = Some(Param::from_tensor(b));
    }
}
