//! Sampling: latent points through the decoder, one-hot blocks sampled from their softmax
//! (never the "unseen" slot), offsets from the decoder's value with a little jitter, the
//! proposals calibrated to the schema's frequencies where it has them, then decoded to typed
//! rows. Pure post-processing of the trained model and of released DP statistics.

use burn::prelude::*;
use fedsynth_privacy::rng::SecureRng;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::calibrate::{resample, resample_within};
use crate::encoder::{Choice, Encoder, KeptMargins, Span};
use crate::error::{Result, SynthError};
use crate::model::Tvae;
use crate::table::{BlockWriter, Format, Table};
use fedsynth_privacy::envelope::{self, PublicKey};
use polars::prelude::DataType;

/// What sampling needs of a trained model: `n` rows of output blocks (probabilities for
/// one-hot blocks, values in [0, 1] for offsets) as a row-major `[n, width]` vector, drawn
/// with `rng` only. Every model of fedsynth implements it.
pub trait Generator {
    /// Generates `n` rows of output blocks.
    fn generate_rows(
        &self,
        n: usize,
        spans: &[Span],
        device: &Device,
        rng: &mut SecureRng,
    ) -> Vec<f32>;
}

impl Generator for Tvae {
    /// Latent points from the prior through the decoder.
    fn generate_rows(
        &self,
        n: usize,
        spans: &[Span],
        device: &Device,
        rng: &mut SecureRng,
    ) -> Vec<f32> {
        let c = self.conditions.width();
        let width = self.latent + c;
        let conditions = self.conditions.draw(n, rng);
        let mut z = Vec::with_capacity(n * width);
        for r in 0..n {
            z.extend((0..self.latent).map(|_| rng.sample::<f64, _>(StandardNormal) as f32));
            z.extend_from_slice(&conditions[r * c..(r + 1) * c]);
        }
        let zt = Tensor::<2>::from_data(TensorData::new(z, [n, width]), device);
        let mut out = self.generate(zt, spans);
        // The conditioning column is the drawn slot itself.
        if c > 0 && !out.is_empty() {
            let row = out.len() / n;
            for r in 0..n {
                let at = r * row + self.condition_at;
                out[at..at + c].copy_from_slice(&conditions[r * c..(r + 1) * c]);
            }
        }
        out
    }
}

/// Spread added to generated within-bin offsets (reflected into [0, 1]).
const OFFSET_JITTER: f64 = 0.2;
/// Rows decoded per forward pass.
const CHUNK: usize = 4096;
/// Proposals per kept row at first when the schema has frequencies to calibrate to.
pub const OVERSAMPLE: usize = 5;
/// Most proposals per kept row (see [`for_each_block`]).
pub const MAX_OVERSAMPLE: usize = 20;
/// Most rows kept per block.
const BLOCK: usize = 65_536;
/// Most proposals calibrated together (bounds the memory of a block).
const POOL: usize = BLOCK * OVERSAMPLE;
/// Most proposals the pool grows to for picked margins that did not fit whole (see
/// [`for_each_block`]): margins are tried in part on no larger pool
/// ([`crate::encoder::PARTS_POOL`]), and each growth decides them again, a trial raking per
/// margin and per part tried (caravan's 40 informative margins: 8 s of decision at 46,000
/// proposals, 16 s at 93,000, for one or two more margins kept whole and no better scores).
const MARGINS_POOL: usize = crate::encoder::PARTS_POOL;

fn reflect(u: f64) -> f64 {
    let u = u.rem_euclid(2.0);
    if u > 1.0 { 2.0 - u } else { u }
}

/// Generates `rows` synthetic rows; where the schema has frequencies, several times as many
/// are proposed and the calibrated subset kept (see [`crate::calibrate`] and
/// [`for_each_block`]).
pub fn sample(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
) -> Table {
    sample_with_progress(model, encoder, rows, device, rng, &mut |_| {})
}

/// [`sample`], calling `progress` with the number of rows of each block once it is
/// calibrated (a large table's sampling takes a minute: flights' 269,379 rows are five to
/// eight blocks, as the proposals per kept row grow).
pub fn sample_with_progress(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
    progress: &mut dyn FnMut(usize),
) -> Table {
    let mut out: Vec<Vec<Choice>> = Vec::with_capacity(rows);
    let done: Result<(), std::convert::Infallible> =
        for_each_block(model, encoder, rows, device, rng, |block| {
            progress(block.len());
            out.extend(block);
            Ok(())
        });
    let Ok(()) = done;
    encoder.decode(&out)
}

/// [`sample`] block by block: each block (at most 65,536 rows) is calibrated on its own and
/// handed to `sink` decoded, in order, so memory holds one block whatever `rows` is. With
/// the same generator state it yields the rows [`sample`] would, in the same order.
pub fn sample_blocks<E>(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
    mut sink: impl FnMut(Table) -> Result<(), E>,
) -> Result<(), E> {
    for_each_block(model, encoder, rows, device, rng, |block| {
        sink(encoder.decode(&block))
    })
}

/// [`sample_blocks`] written to `out` as it goes: each block finished
/// ([`Encoder::finish`]) and serialised as `format` by a [`BlockWriter`] (datetime columns
/// as `temporal`), in the clear where `recipients` is empty, else into a pipe that
/// [`envelope::encrypt`] seals for them on another thread (keys and nonces from the
/// operating system, never from `rng`). Memory holds a block and an envelope chunk whatever
/// `rows` is. On an error the output is incomplete: write it to a file that is renamed into
/// place only on success ([`envelope::try_write_atomically`]). `progress` is called with
/// the number of rows of each block once it is written.
#[allow(clippy::too_many_arguments)]
pub fn write_blocks(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
    out: &mut (dyn std::io::Write + Send),
    (format, temporal): (Format, Vec<(String, DataType)>),
    recipients: &[PublicKey],
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    let write = |to: &mut dyn std::io::Write, rng: &mut SecureRng| {
        let mut blocks = BlockWriter::new(to, format).with_temporal(temporal);
        sample_blocks(model, encoder, rows, device, rng, |block| {
            let n = block.rows();
            blocks.write(&encoder.finish(block))?;
            progress(n);
            Ok::<(), SynthError>(())
        })?;
        blocks.finish()
    };
    if recipients.is_empty() {
        return write(out, rng);
    }
    let (reader, mut writer) = std::io::pipe().map_err(|e| SynthError::Output {
        path: "the encryption pipe".into(),
        message: e.to_string(),
    })?;
    let (sampled, sealed) = std::thread::scope(|scope| {
        let encrypting = scope
            .spawn(move || envelope::encrypt(reader, out, recipients, &mut SecureRng::from_os()));
        // The writer is dropped when `write` returns, whatever it returns: the pipe's end,
        // so the encryption finishes (an error discards the output, see above).
        let sampled = write(&mut writer, rng);
        drop(writer);
        (sampled, encrypting.join())
    });
    // The encryption's own failure first: a sampler writing into a closed pipe only says so.
    match sealed {
        Err(_) => Err(SynthError::Output {
            path: "the encrypted output".into(),
            message: "the encryption thread failed".into(),
        }),
        Ok(Err(e)) => Err(SynthError::Privacy(e.into())),
        Ok(Ok(_)) => sampled,
    }
}

/// The calibrated choices of `rows` rows, a block at a time.
///
/// The proposals are the model's, but for the share the encoder was given
/// ([`Encoder::set_margin_proposals`]: by default the share of ε the plan gave the
/// statistics) drawn from the released statistics alone ([`Encoder::propose_by_margins`],
/// MST's sampler over the measured two-way margins) and spread among them. A small table's
/// DP model is weak (psid1976 at ε = 3: a batch of 64 rows against noise σ = 3.4) and its
/// rows miss links its margins hold, such as a flag that says whether an amount is zero;
/// a large table's model learns links of more than two columns that no tree of margins
/// holds. On psid1976 at ε = 3 (noise seed 1), half the proposals from the margins: TSTR
/// 0.551 → 1.000, 3-way error 0.840 → 0.810; diamonds at ε = 1 with 15%: 3-way error
/// 0.734 → 0.714, TSTR 0.758 → 0.859, and with half of them at ε = 3 3-way error 0.623 →
/// 0.680 (hence a share that follows the plan).
///
/// Where the schema has frequencies, a block of `n` kept rows starts from `OVERSAMPLE · n`
/// proposals, and raking weighs them with weights capped at the proposals per kept row. A
/// cap that binds (the margins ask some rows for more weight than it allows: a model far
/// from its targets after DP training) lowers the mean weight below 1, and with it the raked
/// weights' effective size (Kish: (Σw)² / Σw², at least `n` times the mean weight) below the
/// `n` rows to keep. While that happens and some column is still farther from its
/// frequencies than their noise explains ([`crate::calibrate::beyond_noise`], with the noise
/// the encoder was given; never where it was not), the proposals per kept row double, up to
/// `MAX_OVERSAMPLE` (more proposals while the pool is under `POOL`, fewer rows kept from it
/// once it is full), as long as each doubling raises the effective size; later blocks start
/// from the factor reached. Where a doubling does not (margins whose noise makes them
/// disagree bind the cap whatever the pool), the smaller pool is kept and the factor stays.
/// Chasing targets that are mostly noise would fit the noise: caravan at ε = 1 (σ = 140 rows
/// on 4,630, 171 margins) lost 0.34 → 0.39 of 3-way error when every binding cap grew.
///
/// With a declared target, the rows kept are drawn within its classes, each class given its
/// released share ([`Encoder::strata`]): raking to its two-way margins leaves a rare class's
/// weight on the few proposals that fit them all (caravan at ε = 3, a 6% `Purchase`:
/// 1.2-1.8% of the rows before, 5.7-6.2% with the strata). A class left short does not
/// make the proposals grow: at a cap of 20, diamonds with `--target cut` at ε = 3 lost
/// shapes 0.960 → 0.926 (its size columns), and caravan kept the same TSTR without it.
fn for_each_block<E>(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
    mut each: impl FnMut(Vec<Vec<Choice>>) -> Result<(), E>,
) -> Result<(), E> {
    let calibrated = encoder.has_targets();
    let mut factor = if calibrated { OVERSAMPLE } else { 1 };
    // Whether more proposals may still help (see above).
    let mut grow = true;
    // The picked margins the first block's calibration kept, for the later blocks.
    let mut kept = KeptMargins::default();
    let mut done = 0;
    while done < rows {
        let mut n = (POOL / factor).min(BLOCK).min(rows - done);
        let mut proposals = propose(model, encoder, n * factor, device, rng);
        let keep = if calibrated {
            let (mut weights, mut beyond) =
                encoder.calibrate_keeping(&proposals, factor as f64, &mut kept);
            let mut held = crate::calibrate::effective_rows(&weights) / n as f64;
            // Picked margins left out, or kept in part, for the effective size: more
            // proposals may let raking meet more of them, on a small table's pool.
            let short = |kept: &KeptMargins, n: usize, factor: usize| {
                kept.short() > 0 && n * factor * 2 <= MARGINS_POOL
            };
            loop {
                let for_fit = beyond && held < 1.0;
                if !grow || factor >= MAX_OVERSAMPLE || !(for_fit || short(&kept, n, factor)) {
                    break;
                }
                let (before, pooled, decided) = (n, proposals.len(), kept.clone());
                factor *= 2;
                if n * factor <= POOL {
                    let more = n * factor - proposals.len();
                    proposals.extend(propose(model, encoder, more, device, rng));
                } else {
                    n = (proposals.len() / factor).max(1);
                    proposals.truncate(n * factor);
                }
                let (more_weights, more_beyond) =
                    encoder.calibrate_keeping(&proposals, factor as f64, &mut kept);
                let more_held = crate::calibrate::effective_rows(&more_weights) / n as f64;
                // A doubling is kept where it raises the effective size that the one-way
                // fit asked for, or lets more of the picked margins in (the sum of the
                // parts kept): a larger cap also raises the floor the margins must keep,
                // and may let less of them in.
                if !((for_fit && more_held > held) || kept.taken() > decided.taken()) {
                    // The cap binds as much with twice the proposals (margins that conflict
                    // under their noise, not too few proposals), or the margins lost by it.
                    // Keep the smaller pool and what was decided for it.
                    factor /= 2;
                    n = before;
                    proposals.truncate(pooled);
                    kept = decided;
                    grow = false;
                    break;
                }
                (weights, held, beyond) = (more_weights, more_held, more_beyond);
            }
            match encoder.strata(&proposals, &weights, n) {
                Some((strata, shares, within)) => {
                    resample_within(&within, &strata, &shares, n, rng)
                }
                None => resample(&weights, n, rng),
            }
        } else {
            (0..n).collect()
        };
        each(keep.into_iter().map(|i| proposals[i].clone()).collect())?;
        done += n;
    }
    Ok(())
}

/// Decodes `rows` latent points drawn from the prior into column choices.
///
/// The sampler takes its model as `&dyn Generator`, not as a type parameter: its loops are
/// then compiled once, here, in this crate's optimised profile, not again in each caller
/// (a copy instantiated in an unoptimised debug build of the CLI spent 45 of flights' 121
/// seconds of sampling choosing slots).
fn propose(
    model: &dyn Generator,
    encoder: &Encoder,
    rows: usize,
    device: &Device,
    rng: &mut SecureRng,
) -> Vec<Vec<Choice>> {
    let spans = encoder.spans();
    let masks = encoder.null_masks();
    let width = encoder.width();
    let mut out: Vec<Vec<Choice>> = Vec::with_capacity(rows);
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        let generated = model.generate_rows(n, spans, device, rng);
        for r in 0..n {
            let row = &generated[r * width..(r + 1) * width];
            let mut choices = Vec::with_capacity(encoder.columns());
            let mut pos = 0;
            let mut column = 0;
            for s in spans {
                match *s {
                    Span::Softmax {
                        len, sampleable, ..
                    } => {
                        let probs = &row[pos..pos + len];
                        let mask = masks.get(column).copied().flatten();
                        column += 1;
                        let p = |k: usize| {
                            if Some(k) == mask {
                                0.0
                            } else {
                                f64::from(probs[k])
                            }
                        };
                        let total: f64 = (0..sampleable).map(p).sum();
                        let mut u = rng.random::<f64>() * total;
                        let mut slot = (0..sampleable).rev().find(|&k| p(k) > 0.0).unwrap_or(0);
                        for k in 0..sampleable {
                            u -= p(k);
                            if u <= 0.0 && p(k) > 0.0 {
                                slot = k;
                                break;
                            }
                        }
                        // The offset of a categorical choice picks an id's pseudonym; a
                        // numeric one is replaced by its offset span below.
                        choices.push(Choice::new(slot, rng.random::<f32>()));
                        pos += len;
                    }
                    Span::Offset { .. } => {
                        let mean = f64::from(row[pos]);
                        let z: f64 = rng.sample(StandardNormal);
                        if let Some(last) = choices.last_mut() {
                            last.offset = reflect(mean + OFFSET_JITTER * z) as f32;
                        }
                        pos += 1;
                    }
                }
            }
            out.push(choices);
        }
        done += n;
    }
    // A share of the proposals drawn from the released margins instead, spread among the
    // model's (the rows kept are written in the order proposed).
    let m = (out.len() as f64 * encoder.margin_proposals()).round() as usize;
    if m > 0 {
        let by_margins = encoder.propose_by_margins(&out[..m], rng);
        out[..m].clone_from_slice(&by_margins);
        for i in (1..out.len()).rev() {
            let j = rng.random_range(0..=i);
            out.swap(i, j);
        }
    }
    encoder.apply_null_patterns(&mut out);
    out
}
