//! The conditional GAN (`--model ctgan`): a CTGAN-style generator and a PacGAN
//! discriminator over the same encoded rows as the TVAE, trained with DP on the
//! discriminator only.
//!
//! **What touches real rows.** Only the discriminator's loss on real packs. Its gradient is
//! the one DP release of a step: Poisson-sampled rows, exact per-pack clipping through the
//! probes of [`crate::train`], Gaussian noise σ·C, one subsampled-Gaussian event per step in
//! the ledger, exactly as a TVAE step. The discriminator's loss on generated packs, and every
//! generator step, are functions of the released discriminator, the generator and fresh
//! randomness: post-processing, added without clipping or noise.
//!
//! **Packing and sensitivity.** The sampled rows are dealt into K = ⌈b̄/pac⌉ packs (b̄ the
//! expected batch, public): each row picks its pack uniformly at random, independently of
//! every other row, so a row's presence changes only its own pack. A pack with more than
//! `pac` rows keeps a random `pac` of them; one with fewer is filled with copies of its own
//! rows; an empty pack is left out. A pack is the clipped unit. Adding a row changes one
//! pack's clipped gradient into another (or adds one), which moves the sum by up to twice the
//! per-pack bound, so with `pac` > 1 each pack is clipped at C/2 and the sum's sensitivity is
//! C, the same as one row's clipped gradient at `pac` = 1 (each row its own pack, clipped at
//! C). Conditioned on the other rows and the packing randomness, the mechanism is a Poisson
//! mixture of two Gaussians at most C apart, so the subsampled-Gaussian accountant applies
//! unchanged.
//!
//! **Loss.** The logistic (non-saturating) GAN loss, softplus(−D(real)) + softplus(D(fake)),
//! with no gradient penalty: CTGAN's WGAN-GP penalty is a second derivative at interpolates
//! of real and generated rows, which per-example clipping cannot bound without a double
//! backward pass per pack. The logistic loss needs no Lipschitz constraint to be stable.
//!
//! **Conditions.** A condition picks one categorical (or binned numeric) column and one of
//! its slots. Generated rows draw theirs from the column frequencies the run released with DP
//! (or the schema's public ones), never from raw counts; a real row's condition is its own
//! slot in a column picked at random, so both sides see conditions from the same
//! distribution and the discriminator cannot tell them apart by the condition alone. The
//! generator also pays the cross-entropy of its output at the condition (CTGAN's
//! conditional loss), so at sampling a condition drawn from the released frequencies steers
//! it to that column's released shares.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, log_softmax, relu, sigmoid, softmax, softplus};
use fedsynth_privacy::SamplingRate;
use fedsynth_privacy::dpsgd::GaussianNoise;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::sampling::poisson_sample;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::encoder::{Encoded, Span};
use crate::error::{Result, SynthError};
use crate::model::{layers_to_flat, load_layers, shapes_parameters};
use crate::sample::Generator;
use crate::train::{
    Adam, EpochReport, TrainConfig, all_finite, clip_and_sum, extend_flat, layer_shapes,
    noised_mean, probe_grads, probes, zero_sums,
};

/// Temperature of the Gumbel-softmax that makes generated one-hot blocks nearly discrete
/// for the discriminator (CTGAN's).
const GUMBEL_TAU: f64 = 0.2;
/// Generated rows per step (rounded up to whole packs), whatever the real batch: both
/// networks' steps on generated rows are post-processing and cost no privacy, so their
/// batch is set for speed. On diamonds at ε = 3, 250 rows instead of the real batch's 1,000
/// fitted in 36 s instead of 84 s with the same quality (pair trends 0.84 against 0.82).
pub const GENERATED_ROWS: usize = 256;
/// Slope of the discriminator's leaky ReLU (CTGAN's).
const LEAKY_SLOPE: f64 = 0.2;

/// The pack size of DP training. Each pack is one clipped unit, so packs of `pac` rows give
/// `pac` times fewer units per step, each clipped at half the bound, against the same noise:
/// about 2·`pac` times less signal. On diamonds at ε = 3, packs of 4 gave a
/// train-on-synthetic AUC of 0.45–0.56, single rows 0.72.
pub const DP_PAC: usize = 1;

/// Shape of the GAN.
#[derive(Debug, Clone, PartialEq)]
pub struct CtganConfig {
    /// Width of an encoded row.
    pub input: usize,
    /// Width of the generator's hidden layers.
    pub hidden: usize,
    /// Width of the discriminator's hidden layers.
    pub critic_hidden: usize,
    /// Dimension of the generator's noise.
    pub noise: usize,
    /// Rows per discriminator input (PacGAN).
    pub pac: usize,
}

impl CtganConfig {
    /// The defaults: a generator of 256-wide layers from 64 noise dimensions, a
    /// discriminator of 64-wide layers, packs of 10 (CTGAN's; see [`DP_PAC`] for DP
    /// training). The discriminator is narrow on purpose: its gradient is the one noised,
    /// and the noise's norm grows with the square root of its parameter count while the
    /// clipped signal does not.
    pub fn new(input: usize) -> Self {
        Self {
            input,
            hidden: 256,
            critic_hidden: 64,
            noise: 64,
            pac: 10,
        }
    }

    /// Other hidden width.
    pub fn with_hidden(mut self, hidden: usize) -> Self {
        self.hidden = hidden;
        self
    }

    /// Other discriminator width.
    pub fn with_critic_hidden(mut self, hidden: usize) -> Self {
        self.critic_hidden = hidden;
        self
    }

    /// Other pack size.
    pub fn with_pac(mut self, pac: usize) -> Self {
        self.pac = pac;
        self
    }

    /// (d_in, d_out) of the generator's layers then the discriminator's, for conditions
    /// `condition_width` wide: the layout of [`Ctgan::to_flat`].
    pub fn shapes(&self, condition_width: usize) -> Vec<(usize, usize)> {
        let (w, h, c, d) = (self.input, self.hidden, condition_width, self.critic_hidden);
        vec![
            (self.noise + c, h),
            (h, h),
            (h, w),
            (self.pac * (w + c), d),
            (d, d),
            (d, 1),
        ]
    }

    /// Builds the model; `conditions` come from the released frequencies
    /// ([`crate::encoder::Encoder::slot_frequencies`]).
    pub fn init(&self, conditions: Conditions, device: &Device) -> Result<Ctgan> {
        if self.pac == 0
            || self.hidden == 0
            || self.critic_hidden == 0
            || self.noise == 0
            || self.input == 0
        {
            return Err(SynthError::Setting(
                "the GAN's pack size, widths and noise must be at least 1".into(),
            ));
        }
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let (w, h, c, d) = (
            self.input,
            self.hidden,
            conditions.width,
            self.critic_hidden,
        );
        Ok(Ctgan {
            generator: vec![linear(self.noise + c, h), linear(h, h), linear(h, w)],
            discriminator: vec![linear(self.pac * (w + c), d), linear(d, d), linear(d, 1)],
            noise: self.noise,
            pac: self.pac,
            width: w,
            conditions,
        })
    }
}

/// One conditioned column.
#[derive(Debug, Clone, PartialEq)]
struct CondColumn {
    /// First slot of its block in an encoded row.
    start: usize,
    /// Slots of the block.
    len: usize,
    /// First slot of its block in the condition vector.
    at: usize,
    /// Cumulative released shares of its slots.
    cdf: Vec<f64>,
}

/// The columns a condition can pick, and their released frequencies.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    columns: Vec<CondColumn>,
    width: usize,
    /// Every conditioned slot's released share, in the condition vector's layout.
    shares: Vec<f32>,
    /// Σ p·ln p of those shares (the constant of the marginal loss's KL).
    entropy: f64,
}

impl Conditions {
    /// From (first slot, shares per slot) of each column with released frequencies; none
    /// gives an unconditional GAN.
    pub fn new(frequencies: Vec<(usize, Vec<f64>)>) -> Self {
        let mut width = 0;
        let shares: Vec<f32> = frequencies
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&x| x as f32))
            .collect();
        let entropy = shares
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| f64::from(p) * f64::from(p).ln())
            .sum();
        let columns = frequencies
            .into_iter()
            .map(|(start, p)| {
                let mut acc = 0.0;
                let cdf: Vec<f64> = p
                    .iter()
                    .map(|x| {
                        acc += x;
                        acc
                    })
                    .collect();
                let c = CondColumn {
                    start,
                    len: p.len(),
                    at: width,
                    cdf,
                };
                width += c.len;
                c
            })
            .collect();
        Self {
            columns,
            width,
            shares,
            entropy,
        }
    }

    /// Width of a condition vector.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `n` conditions drawn from the released frequencies, `[n, width]` (zeros when
    /// unconditional).
    pub(crate) fn draw(&self, n: usize, rng: &mut SecureRng) -> Vec<f32> {
        let mut cond = vec![0.0f32; n * self.width];
        if self.columns.is_empty() {
            return cond;
        }
        for r in 0..n {
            let c = &self.columns[rng.random_range(0..self.columns.len())];
            let u = rng.random::<f64>() * c.cdf.last().copied().unwrap_or(1.0);
            let k = c.cdf.partition_point(|&x| x <= u).min(c.len - 1);
            cond[r * self.width + c.at + k] = 1.0;
        }
        cond
    }

    /// The conditions of real rows `x` (`[b, width]`): each row's own slot in a column
    /// picked uniformly at random.
    fn of_rows(&self, x: &[f32], b: usize, row_width: usize, rng: &mut SecureRng) -> Vec<f32> {
        let mut cond = vec![0.0f32; b * self.width];
        if self.columns.is_empty() {
            return cond;
        }
        for r in 0..b {
            let c = &self.columns[rng.random_range(0..self.columns.len())];
            let block = &x[r * row_width + c.start..r * row_width + c.start + c.len];
            if let Some(k) = block.iter().position(|&v| v > 0.5) {
                cond[r * self.width + c.at + k] = 1.0;
            }
        }
        cond
    }
}

/// The generator and the discriminator.
#[derive(Debug)]
pub struct Ctgan {
    /// noise ⊕ condition → hidden → hidden → encoded row (ReLU).
    pub generator: Vec<Linear>,
    /// pac × (row ⊕ condition) → hidden → hidden → 1 (leaky ReLU).
    pub discriminator: Vec<Linear>,
    noise: usize,
    pac: usize,
    width: usize,
    conditions: Conditions,
}

/// A layer's weight and bias as autodiff tensors, tracked or constant.
type Weights = Vec<(Tensor<2>, Tensor<1>)>;

fn weights(layers: &[Linear], track: bool) -> Weights {
    layers
        .iter()
        .map(|l| {
            let w = l.weight.val().autodiff();
            let b = l.bias.as_ref().map(Param::val).unwrap_or_else(|| {
                Tensor::zeros([l.weight.val().dims()[1]], &l.weight.val().device())
            });
            let b = b.autodiff();
            if track {
                (w.require_grad(), b.require_grad())
            } else {
                (w, b)
            }
        })
        .collect()
}

fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

fn normal_vec(n: usize, rng: &mut SecureRng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

/// An MLP pass: hidden layers through `act`, the last one linear. With `probes`, each
/// layer's bias is its probe (see [`crate::model`]) and the layers' inputs are returned.
fn mlp(
    ws: &[(Tensor<2>, Tensor<1>)],
    probes: Option<&[Tensor<2>]>,
    x: Tensor<2>,
    act: impl Fn(Tensor<2>) -> Tensor<2>,
) -> (Tensor<2>, Vec<Tensor<2>>) {
    let mut inputs = Vec::with_capacity(ws.len());
    let mut a = x;
    for (l, (w, b)) in ws.iter().enumerate() {
        inputs.push(a.clone());
        let z = match probes {
            Some(p) => a.matmul(w.clone()) + p[l].clone(),
            None => a.matmul(w.clone()) + b.clone().unsqueeze::<2>(),
        };
        a = if l + 1 < ws.len() { act(z) } else { z };
    }
    (a, inputs)
}

/// Each row's pack: `pac` = 1 makes every row its own pack; otherwise every row picks one
/// of `packs` uniformly and independently, an overfull pack keeps a random `pac` of its
/// rows, an underfull one is filled with copies of its own rows, and empty packs are left
/// out. Every pack returned has exactly `pac` rows, all of one pack.
pub fn deal_packs(
    batch: &[usize],
    packs: usize,
    pac: usize,
    rng: &mut SecureRng,
) -> Vec<Vec<usize>> {
    if pac <= 1 {
        return batch.iter().map(|&i| vec![i]).collect();
    }
    // Each pack's own choices come from a generator of its own, so a pack's contents are a
    // function of its rows alone (what the sensitivity argument needs, and what the tests
    // check by adding a row).
    let master = rand::RngCore::next_u64(rng);
    let mut bins: Vec<Vec<usize>> = vec![Vec::new(); packs.max(1)];
    for &i in batch {
        let k = rng.random_range(0..bins.len());
        bins[k].push(i);
    }
    bins.into_iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(k, mut p)| {
            let mut own =
                SecureRng::from_seed(master ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // A random `pac` of an overfull pack (partial Fisher–Yates).
            let keep = p.len().min(pac);
            for j in 0..keep {
                let r = own.random_range(j..p.len());
                p.swap(j, r);
            }
            p.truncate(keep);
            while p.len() < pac {
                let r = own.random_range(0..keep);
                p.push(p[r]);
            }
            p
        })
        .collect()
}

impl Ctgan {
    /// Rows per pack.
    pub fn pac(&self) -> usize {
        self.pac
    }

    /// Width of an encoded row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Width of a condition vector.
    pub fn condition_width(&self) -> usize {
        self.conditions.width
    }

    /// Every weight and bias, the generator's layers then the discriminator's, in the
    /// layout of [`layers_to_flat`].
    pub fn to_flat(&self) -> Vec<f32> {
        let mut out = layers_to_flat(&self.generator);
        out.extend(layers_to_flat(&self.discriminator));
        out
    }

    /// Number of weights and biases.
    pub fn parameters(&self) -> usize {
        self.generator_parameters() + shapes_parameters(&layer_shapes(&self.discriminator))
    }

    /// Number of the generator's weights and biases: where the discriminator's start in
    /// [`Ctgan::to_flat`].
    fn generator_parameters(&self) -> usize {
        shapes_parameters(&layer_shapes(&self.generator))
    }

    /// Replaces every weight and bias from `flat` (the layout of [`Ctgan::to_flat`]); see
    /// [`load_layers`] for what is refused. Nothing is replaced when either part is refused.
    pub fn load_flat(&mut self, flat: &[f32]) -> std::result::Result<(), String> {
        let parameters = self.parameters();
        if flat.len() != parameters {
            return Err(format!(
                "the weights have {} values, the model {parameters}",
                flat.len(),
            ));
        }
        let at = self.generator_parameters();
        let mut generator = self.generator.clone();
        load_layers(&mut generator, &flat[..at])?;
        load_layers(&mut self.discriminator, &flat[at..])?;
        self.generator = generator;
        Ok(())
    }

    /// The per-pack clipping bound for a sum whose sensitivity must be `clip` (see the
    /// module's notes).
    pub fn pack_clip(&self, clip: f64) -> f64 {
        if self.pac > 1 { clip / 2.0 } else { clip }
    }

    /// The generator's raw output (logits and offset pre-activations), `[n, width]`, for
    /// noise and conditions drawn from `rng`; with the chosen slots.
    fn generator_pass(
        &self,
        ws: &[(Tensor<2>, Tensor<1>)],
        n: usize,
        device: &Device,
        rng: &mut SecureRng,
    ) -> (Tensor<2>, Tensor<2>) {
        let cond = self.conditions.draw(n, rng);
        let z = tensor2(normal_vec(n * self.noise, rng), n, self.noise, device);
        let cond = tensor2(cond, n, self.conditions.width, device);
        let input = if self.conditions.width > 0 {
            Tensor::cat(vec![z, cond.clone()], 1)
        } else {
            z
        };
        let (raw, _) = mlp(ws, None, input.autodiff(), relu);
        (raw, cond)
    }

    /// Generated rows as the discriminator sees them: Gumbel-softmax one-hot blocks and
    /// sigmoid offsets.
    fn activate(raw: Tensor<2>, spans: &[Span]) -> Tensor<2> {
        let device = raw.device();
        // Gumbel noise for every slot at once, from the device's generator (seeded with the
        // model's initialisation).
        let u = Tensor::<2>::random(
            raw.dims(),
            burn::tensor::Distribution::Uniform(1e-7, 1.0 - 1e-7),
            &device,
        );
        let gumbel = u.log().neg().log().neg().autodiff();
        let noisy = (raw.clone() + gumbel) / GUMBEL_TAU;
        let blocks = spans
            .iter()
            .map(|s| match *s {
                Span::Softmax { start, len, .. } => softmax(noisy.clone().narrow(1, start, len), 1),
                Span::Offset { index } => sigmoid(raw.clone().narrow(1, index, 1)),
            })
            .collect();
        Tensor::cat(blocks, 1)
    }

    /// Rows (`[n·pac, width]`) and their conditions as packs `[n, pac·(width + cond)]`.
    fn pack(&self, rows: Tensor<2>, cond: Tensor<2>) -> Tensor<2> {
        let n = rows.dims()[0] / self.pac;
        if self.conditions.width > 0 {
            let joined = Tensor::cat(vec![rows, cond], 1);
            joined.reshape([n, self.pac * (self.width + self.conditions.width)])
        } else {
            rows.reshape([n, self.pac * self.width])
        }
    }

    /// The log-softmax of every conditioned column's block, in the condition vector's layout,
    /// `[n, cond]`.
    fn conditioned_logp(&self, raw: &Tensor<2>) -> Tensor<2> {
        Tensor::cat(
            self.conditions
                .columns
                .iter()
                .map(|c| log_softmax(raw.clone().narrow(1, c.start, c.len), 1))
                .collect(),
            1,
        )
    }

    /// The generator's two losses on the released frequencies, from the conditioned
    /// columns' log-probabilities `logp` and the conditions `cond` (one-hot in the same
    /// layout): CTGAN's conditional loss, the mean cross-entropy of each row's chosen slot,
    /// plus a marginal loss, Σ over conditioned columns of KL(released shares ‖ the batch's
    /// mean probabilities). The released shares are public once released, so this pulls
    /// every column's marginal toward them at no privacy cost, and leaves the
    /// discriminator's noisy signal to the dependencies between columns.
    fn frequency_losses(&self, logp: Tensor<2>, cond: Tensor<2>) -> Tensor<1> {
        let device = logp.device();
        let conditional = (logp.clone() * cond).sum_dim(1).mean().neg();
        let (shares, width) = (&self.conditions.shares, self.conditions.width);
        let target =
            Tensor::<2>::from_data(TensorData::new(shares.clone(), [1, width]), &device).autodiff();
        let mean = logp.exp().mean_dim(0).clamp_min(1e-8).log();
        let marginal = (target * mean).sum().neg() + self.conditions.entropy;
        conditional + marginal
    }
}

impl Generator for Ctgan {
    /// Noise and a condition drawn from the released frequencies, through the generator:
    /// softmax probabilities for one-hot blocks, sigmoid offsets.
    fn generate_rows(
        &self,
        n: usize,
        spans: &[Span],
        device: &Device,
        rng: &mut SecureRng,
    ) -> Vec<f32> {
        let ws = weights(&self.generator, false);
        let (raw, _) = self.generator_pass(&ws, n, device, rng);
        crate::model::activate(raw.inner(), spans)
    }
}

/// What one training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// Rows sampled.
    pub rows: usize,
    /// Summed discriminator loss on the real packs.
    pub real: f64,
    /// Mean generator loss (adversarial + conditional).
    pub generator: f64,
}

/// The per-pack real-loss gradients of the discriminator on `packs` of encoded rows:
/// layer inputs, output gradients and the summed loss softplus(−D(pack)).
pub fn pack_parts(
    model: &Ctgan,
    x: Vec<f32>,
    cond: Vec<f32>,
    packs: usize,
    device: &Device,
) -> (Vec<Tensor<2>>, Vec<Tensor<2>>, f64) {
    let n = packs * model.pac;
    let rows = tensor2(x, n, model.width, device);
    let cond = tensor2(cond, n, model.conditions.width, device);
    discriminator_parts(model, model.pack(rows, cond), true, device)
}

/// Per-pack layer inputs and output gradients of the discriminator's loss on packed input
/// `[P, pac·(width + cond)]`: softplus(−D) for real packs, softplus(D) for generated ones.
fn discriminator_parts(
    model: &Ctgan,
    packed: Tensor<2>,
    real: bool,
    device: &Device,
) -> (Vec<Tensor<2>>, Vec<Tensor<2>>, f64) {
    let packs = packed.dims()[0];
    let ps = probes(&model.discriminator, packs, device);
    let ws = weights(&model.discriminator, false);
    let (out, inputs) = mlp(&ws, Some(&ps), packed.autodiff(), |z| {
        leaky_relu(z, LEAKY_SLOPE)
    });
    let total = softplus(if real { out.neg() } else { out }, 1.0).sum();
    let grads = total.backward();
    let loss = f64::from(total.inner().into_scalar::<f32>());
    let deltas = probe_grads(&ps, &grads, device);
    (
        inputs.into_iter().map(Tensor::inner).collect(),
        deltas,
        loss,
    )
}

/// DP training of the GAN: one discriminator step (the DP release) and one generator step
/// per step of `cfg`.
pub struct GanTrainer<'a> {
    data: &'a Encoded,
    spans: &'a [Span],
    cfg: TrainConfig,
    q: SamplingRate,
    expected_batch: f64,
    packs: usize,
    d_opt: Adam,
    g_opt: Adam,
    /// (d_in, d_out) of the discriminator's layers.
    d_shapes: Vec<(usize, usize)>,
    sampler: SecureRng,
    noise: GaussianNoise,
    device: Device,
}

impl<'a> GanTrainer<'a> {
    /// Prepares training on `data`. `expected_batch` is the public expected batch (q times
    /// the noisy row count); `private` draws the batches, the packing and the DP noise.
    pub fn new(
        model: &Ctgan,
        data: &'a Encoded,
        spans: &'a [Span],
        cfg: &TrainConfig,
        expected_batch: f64,
        device: &Device,
        mut private: SecureRng,
    ) -> Result<Self> {
        if data.rows() == 0 || data.width() == 0 {
            return Err(SynthError::Setting("no rows to train on".into()));
        }
        if data.width() != model.width {
            return Err(SynthError::Setting(format!(
                "the rows have {} values, the model {}",
                data.width(),
                model.width
            )));
        }
        let expected_batch = expected_batch.max(1.0);
        let noise = GaussianNoise::new(private.fork());
        let d_shapes = layer_shapes(&model.discriminator);
        Ok(Self {
            data,
            spans,
            cfg: *cfg,
            q: SamplingRate::new(cfg.sampling_rate)?,
            expected_batch,
            packs: (expected_batch / model.pac as f64).ceil().max(1.0) as usize,
            d_opt: Adam::for_shapes(&d_shapes, cfg.learning_rate, device).with_betas(0.5, 0.9),
            g_opt: Adam::for_shapes(&layer_shapes(&model.generator), cfg.learning_rate, device)
                .with_betas(0.5, 0.9),
            d_shapes,
            sampler: private,
            noise,
            device: device.clone(),
        })
    }

    /// Packs the sampled rows are dealt into per step (public: from the expected batch).
    pub fn packs(&self) -> usize {
        self.packs
    }

    /// One step. `rng` draws the generator's noise and conditions only.
    pub fn step(&mut self, model: &mut Ctgan, rng: &mut SecureRng) -> Result<StepLosses> {
        let device = self.device.clone();
        let pac = model.pac;
        // 1. The DP release: the clipped sum of the real packs' gradients, noised.
        let clip = match self.cfg.noise_multiplier {
            Some(_) => model.pack_clip(self.cfg.clip_norm),
            None => f64::INFINITY,
        };
        let (rows, sums, real_loss) = self.real_sums(model, clip);
        let divisor = self.expected_batch / pac as f64;
        let real_grad = match self.cfg.noise_multiplier {
            Some(sigma) => noised_mean(
                sums,
                sigma * self.cfg.clip_norm,
                divisor,
                &mut self.noise,
                &device,
            )?,
            None => sums
                .into_iter()
                .map(|(w, b)| (w / divisor, b / divisor))
                .collect(),
        };

        // 2. The generated packs' part, added to the released one.
        let generated = Generated::draw(model, self.spans, &device, rng);
        let d_grads = add_layers(
            real_grad,
            generated.discriminator_mean(model, clip, &device),
        );
        self.d_opt.step_layers(&mut model.discriminator, d_grads);

        // 3. The generator step, through the updated discriminator: no real row is involved.
        let (g_grads, generator) = generated.generator_grads(model);
        self.g_opt.step_layers(&mut model.generator, g_grads);
        Ok(StepLosses {
            rows,
            real: real_loss,
            generator,
        })
    }

    /// One Poisson batch dealt into packs: the sum of the real packs' discriminator
    /// gradients, each clipped at `clip`, with the number of rows sampled and the summed
    /// loss. An empty batch, or a sum that is not finite, gives zeros (and a NaN loss for
    /// the latter), never an error that would tell who was sampled.
    fn real_sums(&mut self, model: &Ctgan, clip: f64) -> (usize, Vec<(Tensor<2>, Tensor<1>)>, f64) {
        let device = self.device.clone();
        let (width, n, pac) = (self.data.width(), self.data.rows(), model.pac);
        let batch = poisson_sample(n, self.q, &mut self.sampler);
        let dealt = deal_packs(&batch, self.packs, pac, &mut self.sampler);
        if dealt.is_empty() {
            return (batch.len(), zero_sums(&self.d_shapes, &device), 0.0);
        }
        let mut x = Vec::with_capacity(dealt.len() * pac * width);
        for &i in dealt.iter().flatten() {
            self.data.extend_row(i, &mut x);
        }
        let cond = model
            .conditions
            .of_rows(&x, dealt.len() * pac, width, &mut self.sampler);
        let (inputs, deltas, loss) = pack_parts(model, x, cond, dealt.len(), &device);
        let (sums, dropped) = clip_and_sum(inputs, deltas, dealt.len(), clip, &device);
        if dropped || !all_finite(&sums) {
            (batch.len(), zero_sums(&self.d_shapes, &device), f64::NAN)
        } else {
            (batch.len(), sums, loss)
        }
    }

    /// A holder's contribution to a round of federated training under secure aggregation,
    /// flat in the layout of [`Ctgan::to_flat`], **without noise** (the holder discretises
    /// it and adds its share of the noise in the ring): the generator's gradient, then the
    /// discriminator's, both at the round's weights.
    ///
    /// Only the discriminator's real-pack sum depends on the holder's rows: one Poisson
    /// batch, each pack clipped at [`Ctgan::pack_clip`] of the job's bound, so the
    /// contribution's sensitivity is the job's clipping norm C exactly as a TVAE holder's.
    /// The rest is a function of the round's weights (public to the holders) and fresh
    /// randomness, added as the same amount whatever the rows: the generated packs' mean
    /// gradient (each pack clipped at the same bound) and the generator's gradient, clipped
    /// at C as a whole; both are weighted by the expected packs so that the decoded mean
    /// balances them against the real part as a single party's step does. The coordinator
    /// steps both networks at once with the decoded mean (simultaneous gradient steps).
    /// Returns the contribution and the number of rows sampled.
    pub fn secure_contribution(
        &mut self,
        model: &Ctgan,
        rng: &mut SecureRng,
    ) -> Result<(Vec<f32>, usize)> {
        let device = self.device.clone();
        let clip = model.pack_clip(self.cfg.clip_norm);
        let (rows, sums, _) = self.real_sums(model, clip);
        let weight = self.expected_batch / model.pac as f64;
        let generated = Generated::draw(model, self.spans, &device, rng);
        let fake = generated.discriminator_mean(model, clip, &device);
        let (g_grads, _) = generated.generator_grads(model);
        let g_grads = clip_layers(g_grads, self.cfg.clip_norm);
        let scale = |grads: Vec<(Tensor<2>, Tensor<1>)>| -> Vec<(Tensor<2>, Tensor<1>)> {
            grads
                .into_iter()
                .map(|(w, b)| (w * weight, b * weight))
                .collect()
        };
        let d = add_layers(sums, scale(fake));
        let mut out = Vec::with_capacity(model.parameters());
        extend_flat(&mut out, scale(g_grads));
        extend_flat(&mut out, d);
        if out.iter().any(|v| !v.is_finite()) {
            return Err(SynthError::Setting(
                "the GAN's gradient at these weights is not finite".into(),
            ));
        }
        Ok((out, rows))
    }
}

/// One batch of generated rows from the generator's tracked weights: detached for the
/// discriminator's side, through the discriminator for the generator's.
struct Generated {
    g_tracked: Weights,
    raw: Tensor<2>,
    fake: Tensor<2>,
    cond: Tensor<2>,
    packs: usize,
}

impl Generated {
    /// [`GENERATED_ROWS`] rows (whole packs), with noise and conditions from `rng`.
    fn draw(model: &Ctgan, spans: &[Span], device: &Device, rng: &mut SecureRng) -> Self {
        let packs = GENERATED_ROWS.div_ceil(model.pac);
        let g_tracked = weights(&model.generator, true);
        let (raw, cond) = model.generator_pass(&g_tracked, packs * model.pac, device, rng);
        let fake = Ctgan::activate(raw.clone(), spans);
        Self {
            g_tracked,
            raw,
            fake,
            cond,
            packs,
        }
    }

    /// The discriminator's mean gradient on the generated packs, each clipped at `clip` like
    /// the real packs so that neither side outweighs the other (post-processing: no noise).
    fn discriminator_mean(
        &self,
        model: &Ctgan,
        clip: f64,
        device: &Device,
    ) -> Vec<(Tensor<2>, Tensor<1>)> {
        let packed = model.pack(self.fake.clone().inner(), self.cond.clone());
        let (inputs, deltas, _) = discriminator_parts(model, packed, false, device);
        let (sums, _) = clip_and_sum(inputs, deltas, self.packs, clip, device);
        let n = self.packs as f64;
        sums.into_iter().map(|(w, b)| (w / n, b / n)).collect()
    }

    /// The generator's gradient (and loss) through the model's current discriminator:
    /// the non-saturating adversarial loss plus the losses on the released frequencies.
    fn generator_grads(self, model: &Ctgan) -> (Vec<(Tensor<2>, Tensor<1>)>, f64) {
        let packed = model.pack(self.fake, self.cond.clone().autodiff());
        let d_const = weights(&model.discriminator, false);
        let (out, _) = mlp(&d_const, None, packed, |z| leaky_relu(z, LEAKY_SLOPE));
        let mut g_loss = softplus(out.neg(), 1.0).mean();
        if model.conditions.width > 0 {
            let logp = model.conditioned_logp(&self.raw);
            g_loss = g_loss + model.frequency_losses(logp, self.cond.autodiff());
        }
        let grads = g_loss.backward();
        let g_grads = self
            .g_tracked
            .iter()
            .map(|(w, b)| {
                (
                    w.grad(&grads)
                        .map(Tensor::inner)
                        .unwrap_or_else(|| w.clone().inner().zeros_like()),
                    b.grad(&grads)
                        .map(Tensor::inner)
                        .unwrap_or_else(|| b.clone().inner().zeros_like()),
                )
            })
            .collect();
        (g_grads, f64::from(g_loss.inner().into_scalar::<f32>()))
    }
}

/// Layer by layer sums of two gradients.
fn add_layers(
    a: Vec<(Tensor<2>, Tensor<1>)>,
    b: Vec<(Tensor<2>, Tensor<1>)>,
) -> Vec<(Tensor<2>, Tensor<1>)> {
    a.into_iter()
        .zip(b)
        .map(|((aw, ab), (bw, bb))| (aw + bw, ab + bb))
        .collect()
}

/// A gradient scaled down to L2 norm `bound` over all its layers when it is longer.
fn clip_layers(grads: Vec<(Tensor<2>, Tensor<1>)>, bound: f64) -> Vec<(Tensor<2>, Tensor<1>)> {
    let squared: f64 = grads
        .iter()
        .map(|(w, b)| {
            f64::from(w.clone().powf_scalar(2.0).sum().into_scalar::<f32>())
                + f64::from(b.clone().powf_scalar(2.0).sum().into_scalar::<f32>())
        })
        .sum();
    let norm = squared.sqrt();
    if norm <= bound || !norm.is_finite() {
        return grads;
    }
    let f = bound / norm;
    grads.into_iter().map(|(w, b)| (w * f, b * f)).collect()
}

/// Trains the GAN (see [`GanTrainer`]), reporting each epoch's mean real-pack loss of the
/// discriminator.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Ctgan,
    data: &Encoded,
    spans: &[Span],
    cfg: &TrainConfig,
    expected_batch: f64,
    device: &Device,
    private: SecureRng,
    rng: &mut SecureRng,
    mut on_epoch: impl FnMut(EpochReport),
) -> Result<()> {
    let mut trainer = GanTrainer::new(model, data, spans, cfg, expected_batch, device, private)?;
    let per_epoch = cfg.steps_per_epoch();
    let mut steps = 0;
    for epoch in 1..=cfg.epochs {
        let (mut loss, mut packs) = (0.0, 0usize);
        for _ in 0..per_epoch {
            let s = trainer.step(model, rng)?;
            if s.real.is_finite() {
                loss += s.real;
                packs += s.rows.div_ceil(model.pac.max(1));
            }
            steps += 1;
        }
        on_epoch(EpochReport {
            epoch,
            steps,
            loss: loss / packs.max(1) as f64,
        });
    }
    Ok(())
}
