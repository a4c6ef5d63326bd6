//! The TVAE-style generator: an MLP encoder to a Gaussian latent and an MLP decoder whose
//! output is read block by block (softmax cross-entropy for one-hot blocks, squared error on
//! a sigmoid for within-bin offsets), with the usual KL term.
//!
//! Its forward pass can thread a "probe" leaf through every Linear output
//! (`z = a·W + probe`, the probe holding the bias repeated per example). After `backward()` on the *sum* of per-example losses, the probe's
//! gradient is the per-example output gradient δᵢ of that layer, which gives exact
//! per-example gradients without a loop over examples: ‖gᵢ‖² = Σ_layers (‖aᵢ‖² + 1)·‖δᵢ‖²
//! (the +1 is the bias), and the clipped sum is aᵀ(c ⊙ δ) (see [`crate::train`]).

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};

use fedsynth_privacy::rng::SecureRng;
use rand::Rng;

use crate::ctgan::Conditions;
use crate::encoder::Span;

/// Weight of the squared error on within-bin offsets (a Gaussian likelihood with std 0.15).
const OFFSET_WEIGHT: f64 = 1.0 / (2.0 * 0.15 * 0.15);

/// Largest magnitude a weight or bias may have when loaded from outside (a federated round's
/// global weights). Training moves a weight by about the learning rate per step, so honest
/// models stay orders of magnitude below this; crafted weights far above it are the tool of
/// an adversary who wants activations to overflow for chosen rows.
pub const MAX_ABS_WEIGHT: f32 = 1.0e4;

/// Shape of the generator.
#[derive(Config, Debug)]
pub struct TvaeConfig {
    /// Width of an encoded row.
    pub input: usize,
    /// Width of the hidden layers.
    #[config(default = 128)]
    pub hidden: usize,
    /// Dimension of the latent space.
    #[config(default = 32)]
    pub latent: usize,
    /// Weight of the KL term. Below 1 (like TVAE's loss factor) it keeps the noisy DP
    /// gradients from collapsing the posterior onto the prior, so the decoder learns the
    /// dependencies between columns rather than only their marginals. On diamonds at ε = 1,
    /// 0.3 gave a train-on-synthetic AUC of 0.64 and 0.15 gave 0.72–0.73; the marginals that
    /// a weaker prior loosens are mended by calibration at sampling ([`crate::calibrate`]).
    #[config(default = 0.15)]
    pub kl_weight: f64,
    /// First slot of the column the decoder is conditioned on (see `condition_shares`).
    #[config(default = 0)]
    pub condition_at: usize,
    /// The released shares of the slots of the column the decoder is conditioned on (a
    /// target label's one-hot block at `condition_at`), empty for none. A conditional VAE:
    /// the decoder reads the latent point beside the row's own slot of that column in
    /// training, and a slot drawn from these shares in sampling, so what the other columns
    /// look like within each class is learned directly instead of through the latent space
    /// (where DP noise blurs a rare class's link to its predictors).
    #[config(default = "Vec::new()")]
    pub condition_shares: Vec<f64>,
}

impl TvaeConfig {
    /// Builds the model on `device` (random initialisation from the device's generator).
    pub fn init(&self, device: &Device) -> Tvae {
        Tvae {
            layers: self
                .dims()
                .iter()
                .map(|&(a, b)| LinearConfig::new(a, b).init(device))
                .collect(),
            latent: self.latent,
            kl_weight: self.kl_weight,
            condition_at: self.condition_at,
            conditions: Conditions::new(if self.condition_shares.is_empty() {
                Vec::new()
            } else {
                vec![(self.condition_at, self.condition_shares.clone())]
            }),
        }
    }

    /// Number of weights and biases of the model this config builds.
    pub fn parameters(&self) -> usize {
        shapes_parameters(&self.dims())
    }

    /// (d_in, d_out) of the six layers, in the layout of [`Tvae::to_flat`].
    pub fn dims(&self) -> [(usize, usize); 6] {
        let (i, h, l) = (self.input, self.hidden, self.latent);
        let c = self.condition_shares.len();
        [(i, h), (h, h), (h, 2 * l), (l + c, h), (h, h), (h, i)]
    }
}

/// Initial weights of layers shaped `shapes` drawn from `seed` in the layout of
/// [`layers_to_flat`] (uniform in ±1/√fan_in, burn's default for Linear), the same on every
/// device: federated workers start from one model without the coordinator ever holding one.
pub fn seeded_layers(shapes: &[(usize, usize)], seed: u64) -> Vec<f32> {
    let mut rng = SecureRng::from_seed(seed);
    let mut out = Vec::with_capacity(shapes_parameters(shapes));
    for &(i, o) in shapes {
        let bound = 1.0 / (i as f64).sqrt();
        out.extend((0..i * o + o).map(|_| rng.random_range(-bound..bound) as f32));
    }
    out
}

/// Weights and biases of layers shaped `shapes`.
pub fn shapes_parameters(shapes: &[(usize, usize)]) -> usize {
    shapes.iter().map(|&(i, o)| i * o + o).sum()
}

/// Every weight and bias of a stack of layers as one flat vector: per layer, the weight
/// `[d_in, d_out]` row-major, then the bias (zeros for a layer without one).
pub fn layers_to_flat(layers: &[Linear]) -> Vec<f32> {
    let mut out = Vec::new();
    for l in layers {
        let w = l.weight.val();
        let o = w.dims()[1];
        out.extend(w.into_data().iter::<f32>());
        match &l.bias {
            Some(b) => out.extend(b.val().into_data().iter::<f32>()),
            None => out.extend(std::iter::repeat_n(0.0, o)),
        }
    }
    out
}

/// Replaces every weight and bias of a stack of layers from `flat` (the layout of
/// [`layers_to_flat`]). Refuses weights of the wrong count, and any value that is not finite
/// or exceeds [`MAX_ABS_WEIGHT`] in magnitude, before anything is replaced.
pub fn load_layers(layers: &mut [Linear], flat: &[f32]) -> std::result::Result<(), String> {
    let shapes = crate::train::layer_shapes(layers);
    let parameters = shapes_parameters(&shapes);
    if flat.len() != parameters {
        return Err(format!(
            "the weights have {} values, the model {parameters}",
            flat.len(),
        ));
    }
    if let Some(at) = flat
        .iter()
        .position(|w| !(w.is_finite() && w.abs() <= MAX_ABS_WEIGHT))
    {
        return Err(format!(
            "weight {at} is {}: weights must be finite and at most {MAX_ABS_WEIGHT:e} in magnitude",
            flat[at]
        ));
    }
    let mut at = 0;
    for (l, &(i, o)) in layers.iter_mut().zip(&shapes) {
        let device = l.weight.val().device();
        let w = Tensor::<2>::from_data(
            TensorData::new(flat[at..at + i * o].to_vec(), [i, o]),
            &device,
        );
        at += i * o;
        let b = Tensor::<1>::from_data(TensorData::new(flat[at..at + o].to_vec(), [o]), &device);
        at += o;
        l.weight = Param::from_tensor(w);
        l.bias = Some(Param::from_tensor(b));
    }
    Ok(())
}

/// The generator: layers 0–2 encode, layers 3–5 decode.
#[derive(Module, Debug)]
pub struct Tvae {
    /// The six Linear layers.
    pub layers: Vec<Linear>,
    /// Latent dimension.
    pub latent: usize,
    /// Weight of the KL term.
    pub kl_weight: f64,
    /// First slot of the conditioning column's block (see [`TvaeConfig::condition_shares`]).
    pub condition_at: usize,
    /// That column's released shares, which sampling draws its slots from; none for an
    /// unconditional model (the block's width is the conditions' width).
    #[module(skip)]
    pub conditions: Conditions,
}

/// What a training forward pass returns.
pub struct TrainPass {
    /// Per-example loss, `[B, 1]`.
    pub loss: Tensor<2>,
    /// The input of every Linear layer, `[B, d_in]`, in layer order.
    pub inputs: Vec<Tensor<2>>,
}

/// How the weights take part in a training pass.
pub enum Weights<'a> {
    /// Constants; per-example gradients are read from these probes (one per layer): leaves
    /// of shape `[B, d_out]` holding each layer's bias repeated per example, so that
    /// `z = a·W + probe` and ∂loss/∂probe = δ, the per-example output gradient.
    Probed(&'a [Tensor<2>]),
    /// Leaves with `require_grad` (ordinary, non-private training).
    Tracked(&'a [(Tensor<2>, Tensor<1>)]),
}

impl Tvae {
    /// Every weight and bias as one flat vector: per layer, the weight `[d_in, d_out]`
    /// row-major, then the bias.
    pub fn to_flat(&self) -> Vec<f32> {
        layers_to_flat(&self.layers)
    }

    /// Replaces every weight and bias from `flat` (the layout of [`Tvae::to_flat`]); see
    /// [`load_layers`] for what is refused.
    pub fn load_flat(&mut self, flat: &[f32]) -> std::result::Result<(), String> {
        load_layers(&mut self.layers, flat)
    }

    /// Total number of parameters.
    pub fn parameters(&self) -> usize {
        shapes_parameters(&self.shapes())
    }

    /// (d_in, d_out) of every layer.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        crate::train::layer_shapes(&self.layers)
    }

    fn weights_ad(&self) -> Vec<(Tensor<2>, Tensor<1>)> {
        self.layers
            .iter()
            .map(|l| {
                let b = l.bias.as_ref().map(Param::val).unwrap_or_else(|| {
                    Tensor::zeros([l.weight.val().dims()[1]], &l.weight.val().device())
                });
                (l.weight.val().autodiff(), b.autodiff())
            })
            .collect()
    }

    /// The model's weights as autodiff leaves that track gradients (for non-private steps).
    pub fn tracked_weights(&self) -> Vec<(Tensor<2>, Tensor<1>)> {
        self.weights_ad()
            .into_iter()
            .map(|(w, b)| (w.require_grad(), b.require_grad()))
            .collect()
    }

    /// A training pass on autodiff tensors: `x` the encoded batch, `eps` the latent noise.
    pub fn train_pass(
        &self,
        x: Tensor<2>,
        eps: Tensor<2>,
        spans: &[Span],
        weights: Weights<'_>,
    ) -> TrainPass {
        let constant;
        let (ws, probes): (&[(Tensor<2>, Tensor<1>)], Option<&[Tensor<2>]>) = match weights {
            Weights::Probed(p) => {
                constant = self.weights_ad();
                (&constant, Some(p))
            }
            Weights::Tracked(w) => (w, None),
        };
        let mut inputs = Vec::with_capacity(6);
        let layer = |l: usize, a: Tensor<2>, inputs: &mut Vec<Tensor<2>>| {
            inputs.push(a.clone());
            let (w, b) = &ws[l];
            match probes {
                // The probe already holds the bias, broadcast per example: one add, not two.
                Some(p) => a.matmul(w.clone()) + p[l].clone(),
                None => a.matmul(w.clone()) + b.clone().unsqueeze::<2>(),
            }
        };
        let h = relu(layer(0, x.clone(), &mut inputs));
        let h = relu(layer(1, h, &mut inputs));
        let stats = layer(2, h, &mut inputs);
        let mu = stats.clone().narrow(1, 0, self.latent);
        let logvar = stats.narrow(1, self.latent, self.latent).clamp(-8.0, 8.0);
        let z = mu.clone() + (logvar.clone() * 0.5).exp() * eps;
        let condition = self.conditions.width();
        let z = if condition > 0 {
            Tensor::cat(
                vec![z, x.clone().narrow(1, self.condition_at, condition)],
                1,
            )
        } else {
            z
        };
        let h = relu(layer(3, z, &mut inputs));
        let h = relu(layer(4, h, &mut inputs));
        let out = layer(5, h, &mut inputs);
        let recon = reconstruction_loss(out, x, spans);
        let kl =
            (mu.square() + logvar.clone().exp() - logvar - 1.0).sum_dim(1) * (0.5 * self.kl_weight);
        TrainPass {
            loss: recon + kl,
            inputs,
        }
    }

    /// Decodes latent points into output blocks: probabilities for one-hot blocks and values
    /// in [0, 1] for offsets, as a row-major `[n, width]` vector. A conditional model's
    /// points carry the condition's one-hot slot after the latent coordinates.
    pub fn generate(&self, z: Tensor<2>, spans: &[Span]) -> Vec<f32> {
        let mut a = z;
        for l in 3..6 {
            let layer = &self.layers[l];
            a = layer.forward(a);
            if l < 5 {
                a = relu(a);
            }
        }
        activate(a, spans)
    }
}

/// A decoder's raw output `[n, width]` read back as output blocks: each one-hot block's
/// softmax and each offset's sigmoid, row-major (empty if the values cannot be read).
///
/// Computed here, row by row over the values read back, rather than as a tensor operation
/// per block: the sampler reads every value back anyway, and a narrow, a softmax and a
/// concatenation per block cost more than the products on a wide table (flights' sampling:
/// a quarter of its time in those copies and passes).
pub fn activate(raw: Tensor<2>, spans: &[Span]) -> Vec<f32> {
    let width = raw.dims()[1];
    let Ok(mut values) = raw.into_data().try_into_vec::<f32>() else {
        return Vec::new();
    };
    if width == 0 {
        return values;
    }
    // The rows split between the machine's cores (the products before ran on all of them).
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let rows = values.len() / width;
    if threads < 2 || rows * width < 1 << 16 {
        activate_rows(&mut values, width, spans);
    } else {
        let per = rows.div_ceil(threads) * width;
        std::thread::scope(|scope| {
            for part in values.chunks_mut(per) {
                scope.spawn(move || activate_rows(part, width, spans));
            }
        });
    }
    values
}

/// [`activate`] on rows already read back, in place.
fn activate_rows(values: &mut [f32], width: usize, spans: &[Span]) {
    for row in values.chunks_exact_mut(width) {
        for s in spans {
            match *s {
                Span::Softmax { start, len, .. } => {
                    let block = &mut row[start..start + len];
                    let peak = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut total = 0.0f32;
                    for v in block.iter_mut() {
                        *v = (*v - peak).exp();
                        total += *v;
                    }
                    for v in block.iter_mut() {
                        *v /= total;
                    }
                }
                Span::Offset { index } => row[index] = 1.0 / (1.0 + (-row[index]).exp()),
            }
        }
    }
}

/// Where an output row's one-hot blocks and offsets lie, as constant tensors: what the loss
/// computes on the whole output at once instead of block by block.
struct Layout {
    /// The blocks' (first slot, length).
    blocks: Vec<(usize, usize)>,
    /// Membership, transposed, `[width, blocks]`: slot j of block s holds 1 at [j, s].
    membership: Tensor<2>,
    /// Each slot's block (0 for a slot outside every block), `[width]`.
    of_slot: Tensor<1, Int>,
    /// 1 on a block's slot, 0 elsewhere, `[1, width]`.
    in_block: Tensor<2>,
    /// The offsets' positions, `[offsets]`, none if there are none.
    offsets: Option<Tensor<1, Int>>,
}

impl Layout {
    /// None without a one-hot block (an encoder's offsets each follow their column's block
    /// of bins, so then there is nothing).
    fn new(spans: &[Span], width: usize, device: &Device) -> Option<Self> {
        let mut blocks = Vec::new();
        let mut offsets = Vec::new();
        for s in spans {
            match *s {
                Span::Softmax { start, len, .. } => blocks.push((start, len)),
                Span::Offset { index } => offsets.push(index as i64),
            }
        }
        if blocks.is_empty() {
            return None;
        }
        let k = blocks.len();
        let mut membership = vec![0.0f32; width * k];
        let mut of_slot = vec![0i64; width];
        let mut in_block = vec![0.0f32; width];
        for (s, &(start, len)) in blocks.iter().enumerate() {
            for j in start..start + len {
                membership[j * k + s] = 1.0;
                of_slot[j] = s as i64;
                in_block[j] = 1.0;
            }
        }
        let n = offsets.len();
        Some(Self {
            blocks,
            membership: Tensor::from_data(TensorData::new(membership, [width, k]), device),
            of_slot: Tensor::from_data(TensorData::new(of_slot, [width]), device),
            in_block: Tensor::<1>::from_data(TensorData::new(in_block, [width]), device)
                .unsqueeze(),
            offsets: (n > 0).then(|| Tensor::from_data(TensorData::new(offsets, [n]), device)),
        })
    }

    /// Each block's largest value per row, `[rows, blocks]`.
    fn peaks(&self, out: &Tensor<2>) -> Tensor<2> {
        Tensor::cat(
            self.blocks
                .iter()
                .map(|&(start, len)| out.clone().narrow(1, start, len).max_dim(1))
                .collect(),
            1,
        )
    }

    /// A `[rows, blocks]` tensor spread over the blocks' slots, `[rows, width]`.
    fn spread(&self, per_block: Tensor<2>) -> Tensor<2> {
        per_block.select(1, self.of_slot.clone())
    }
}

/// Per-example reconstruction loss, `[B, 1]`: the cross-entropy of every one-hot block plus
/// the weighted squared error of every offset.
///
/// Computed on the whole output at once rather than block by block: a block's
/// cross-entropy is `lse_s·Σ_{j∈s} xⱼ − Σ_{j∈s} xⱼ·outⱼ` (`lse_s − x·out` for a one-hot `x`),
/// where `lse_s = m_s + log Σ_{j∈s} exp(outⱼ − m_s)` and `m_s` is the block's largest output,
/// held constant (the log-sum-exp does not depend on it, so neither does its gradient). The
/// sums over blocks are one product with the blocks' membership matrix. A narrow per block
/// costs its backward pass a zero tensor the size of the whole output, which on a wide table
/// (an identifier's thousand slots, thirty-odd blocks) made the loss slower than the layers.
fn reconstruction_loss(out: Tensor<2>, x: Tensor<2>, spans: &[Span]) -> Tensor<2> {
    let [b, width] = out.dims();
    let device = out.device();
    let Some(layout) = Layout::new(spans, width, &device) else {
        return Tensor::zeros([b, 1], &device).autodiff();
    };
    let peaks = layout.peaks(&out.clone().inner());
    let shifted = (out.clone() - layout.spread(peaks.clone()).autodiff())
        * layout.in_block.clone().autodiff();
    let lse = shifted
        .exp()
        .matmul(layout.membership.clone().autodiff())
        .log()
        + peaks.autodiff();
    let x_plain = x.clone().inner();
    let mass = x_plain.clone().matmul(layout.membership).autodiff();
    let picked = (out.clone() * (x_plain * layout.in_block).autodiff()).sum_dim(1);
    let mut total = (lse * mass).sum_dim(1) - picked;
    if let Some(at) = layout.offsets {
        // The offsets' columns alone (a few among many one-hot slots).
        let pred = sigmoid(out.select(1, at.clone()));
        total = total + (pred - x.select(1, at)).square().sum_dim(1) * OFFSET_WEIGHT;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;

    /// The loss block by block, as the formula reads.
    fn per_block(out: Tensor<2>, x: Tensor<2>, spans: &[Span]) -> Tensor<2> {
        let mut total: Option<Tensor<2>> = None;
        for s in spans {
            let term = match *s {
                Span::Softmax { start, len, .. } => {
                    let logp = log_softmax(out.clone().narrow(1, start, len), 1);
                    (x.clone().narrow(1, start, len) * logp).sum_dim(1).neg()
                }
                Span::Offset { index } => {
                    let pred = sigmoid(out.clone().narrow(1, index, 1));
                    (pred - x.clone().narrow(1, index, 1)).square() * OFFSET_WEIGHT
                }
            };
            total = Some(match total {
                None => term,
                Some(t) => t + term,
            });
        }
        total.unwrap()
    }

    /// Blocks of 4, 3 (one unseen slot) and 2 slots, and two offsets: 11 slots.
    fn spans() -> [Span; 5] {
        [
            Span::Softmax {
                start: 0,
                len: 4,
                sampleable: 4,
            },
            Span::Offset { index: 4 },
            Span::Softmax {
                start: 5,
                len: 3,
                sampleable: 2,
            },
            Span::Softmax {
                start: 8,
                len: 2,
                sampleable: 2,
            },
            Span::Offset { index: 10 },
        ]
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The whole-output loss and its gradient equal the block-by-block formula's, on outputs
    /// far apart in scale (a block whose logits are all near -60 would underflow a shift by
    /// the row's largest output) and on rows whose one-hot blocks are empty.
    #[test]
    fn the_whole_output_loss_equals_the_per_block_formula() {
        let device = Device::flex();
        let spans = spans();
        let (b, width) = (5, 11);
        let mut rng = SecureRng::from_seed(3);
        let mut out = Vec::new();
        let mut x = vec![0.0f32; b * width];
        for i in 0..b {
            for j in 0..width {
                let scale = if j >= 5 && j < 8 { 30.0 } else { 3.0 };
                let shift = if j >= 8 && j < 10 { -60.0 } else { 0.0 };
                out.push(shift + scale * (rng.random::<f32>() - 0.5));
            }
            let row = &mut x[i * width..(i + 1) * width];
            row[rng.random_range(0..4)] = 1.0;
            row[4] = rng.random();
            if i != 2 {
                row[5 + rng.random_range(0..3)] = 1.0;
                row[8 + rng.random_range(0..2)] = 1.0;
            }
            row[10] = rng.random();
        }
        let x = Tensor::<2>::from_data(TensorData::new(x, [b, width]), &device).autodiff();
        let leaf = || {
            Tensor::<2>::from_data(TensorData::new(out.clone(), [b, width]), &device)
                .autodiff()
                .require_grad()
        };
        let (a, c) = (leaf(), leaf());
        let fused = reconstruction_loss(a.clone(), x.clone(), &spans);
        let reference = per_block(c.clone(), x, &spans);
        let (fv, rv) = (
            values(fused.clone().inner()),
            values(reference.clone().inner()),
        );
        let ga = a.grad(&fused.sum().backward()).unwrap();
        let gc = c.grad(&reference.sum().backward()).unwrap();
        for (f, r) in fv.iter().zip(&rv) {
            assert!((f - r).abs() <= 1e-4 * r.abs().max(1.0), "{fv:?} vs {rv:?}");
        }
        for (f, r) in values(ga).iter().zip(&values(gc)) {
            assert!((f - r).abs() <= 1e-5, "gradient {f} vs {r}");
        }
    }

    /// Decoding gives each block's softmax and each offset's sigmoid as burn computes them,
    /// on logits far apart in scale, on rows enough to be split between threads.
    #[test]
    fn decoding_gives_each_blocks_softmax_and_each_offsets_sigmoid() {
        let device = Device::flex();
        let spans = spans();
        let (n, width) = (7001, 11);
        let raw: Vec<f32> = (0..n * width)
            .map(|i| ((i as f32) * 0.77).sin() * if i % 3 == 0 { 40.0 } else { 2.0 })
            .collect();
        let raw = Tensor::<2>::from_data(TensorData::new(raw, [n, width]), &device);
        let got = activate(raw.clone(), &spans);
        let parts = spans
            .iter()
            .map(|s| match *s {
                Span::Softmax { start, len, .. } => {
                    burn::tensor::activation::softmax(raw.clone().narrow(1, start, len), 1)
                }
                Span::Offset { index } => sigmoid(raw.clone().narrow(1, index, 1)),
            })
            .collect();
        let want = values(Tensor::cat(parts, 1));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "{g} vs {w}");
        }
    }
}
