//! The GAN's DP step: per-pack clipping through probes checked against a brute-force
//! gradient of each pack, the packing's sensitivity (a row moves the clipped sum by at most
//! C), and the dealing of rows into packs.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashSet;

use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, softplus};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::ctgan::{Conditions, Ctgan, CtganConfig, deal_packs, pack_parts};
use fedsynth_synth::train::clip_and_sum;

/// Width of an encoded row: a 3-slot block, an offset, a 3-slot block (like the tests'
/// common spans).
const W: usize = 7;

/// The device's random stream is global to the process: a test that seeds it and draws from
/// it holds this lock, so tests running in parallel cannot draw from each other's stream.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn own_rng() -> std::sync::MutexGuard<'static, ()> {
    DEVICE_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn model(pac: usize, device: &Device) -> Ctgan {
    device.seed(11);
    // The first block conditioned, with released shares.
    let conditions = Conditions::new(vec![(0, vec![0.5, 0.3, 0.2])]);
    CtganConfig::new(W)
        .with_hidden(8)
        .with_critic_hidden(6)
        .with_pac(pac)
        .init(conditions, device)
        .unwrap()
}

/// `n` encoded rows and their conditions (each row's own slot of the first block).
fn rows(n: usize, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::new();
    let mut cond = Vec::new();
    for i in 0..n {
        let mut row = [0.0f32; W];
        row[i % 3] = 1.0;
        row[3] = (i as f32 * 0.37).fract() * scale;
        row[4 + (i * 2) % 3] = 1.0;
        x.extend_from_slice(&row);
        let mut c = [0.0f32; 3];
        c[i % 3] = 1.0;
        cond.extend_from_slice(&c);
    }
    (x, cond)
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// The gradient of softplus(−D(pack)) for one pack by ordinary autodiff, flattened per
/// layer as weight then bias.
fn brute_force(model: &Ctgan, x: &[f32], cond: &[f32], device: &Device) -> Vec<f64> {
    let pac = model.pac();
    let mut input = Vec::new();
    for r in 0..pac {
        input.extend_from_slice(&x[r * W..(r + 1) * W]);
        input.extend_from_slice(&cond[r * 3..(r + 1) * 3]);
    }
    let width = input.len();
    let mut a = Tensor::<2>::from_data(TensorData::new(input, [1, width]), device).autodiff();
    let layers: Vec<(Tensor<2>, Tensor<1>)> = model
        .discriminator
        .iter()
        .map(|l| {
            (
                l.weight.val().autodiff().require_grad(),
                l.bias.as_ref().unwrap().val().autodiff().require_grad(),
            )
        })
        .collect();
    for (k, (w, b)) in layers.iter().enumerate() {
        let z = a.matmul(w.clone()) + b.clone().unsqueeze::<2>();
        a = if k + 1 < layers.len() {
            leaky_relu(z, 0.2)
        } else {
            z
        };
    }
    let grads = softplus(a.neg(), 1.0).sum().backward();
    let mut out = Vec::new();
    for (w, b) in &layers {
        out.extend(
            to_vec(w.grad(&grads).unwrap().inner())
                .iter()
                .map(|&v| f64::from(v)),
        );
        out.extend(
            b.grad(&grads)
                .unwrap()
                .inner()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    out
}

fn flatten(sums: Vec<(Tensor<2>, Tensor<1>)>) -> Vec<f64> {
    let mut out = Vec::new();
    for (w, b) in sums {
        out.extend(to_vec(w).iter().map(|&v| f64::from(v)));
        out.extend(
            b.into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    out
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Σ over packs of clip(g_pack, bound), from probes.
fn clipped(model: &Ctgan, x: Vec<f32>, cond: Vec<f32>, bound: f64, device: &Device) -> Vec<f64> {
    let packs = x.len() / (W * model.pac());
    let (inputs, deltas, _) = pack_parts(model, x, cond, packs, device);
    let (sums, dropped) = clip_and_sum(inputs, deltas, packs, bound, device);
    assert!(!dropped);
    flatten(sums)
}

#[test]
fn per_pack_clipped_sum_equals_brute_force() {
    let _rng = own_rng();
    let device = Device::flex();
    for pac in [1, 3] {
        let model = model(pac, &device);
        let packs = 4;
        let (x, cond) = rows(packs * pac, 5.0);
        let per_pack: Vec<Vec<f64>> = (0..packs)
            .map(|p| {
                brute_force(
                    &model,
                    &x[p * pac * W..(p + 1) * pac * W],
                    &cond[p * pac * 3..(p + 1) * pac * 3],
                    &device,
                )
            })
            .collect();
        // A bound between the smallest and the largest pack norm clips some packs only.
        let mut norms: Vec<f64> = per_pack.iter().map(|g| norm(g)).collect();
        norms.sort_by(f64::total_cmp);
        for bound in [
            f64::INFINITY,
            (norms[0] + norms[packs - 1]) / 2.0,
            norms[0] / 3.0,
        ] {
            let mut want = vec![0.0; per_pack[0].len()];
            for g in &per_pack {
                let f = (bound / norm(g)).min(1.0);
                for (w, v) in want.iter_mut().zip(g) {
                    *w += f * v;
                }
            }
            let got = clipped(&model, x.clone(), cond.clone(), bound, &device);
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 + 1e-3 * w.abs(),
                    "pac {pac} bound {bound} value {k}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn a_row_moves_the_clipped_sum_by_at_most_c() {
    let _rng = own_rng();
    // Packs of 3 clipped at C/2: a row that joins a pack (replacing a copy that filled it,
    // as dealing does) changes that pack only, so the sum moves by at most C. Large
    // offsets make every pack's gradient exceed its bound, the worst case.
    let device = Device::flex();
    let c = 0.8;
    for seed in 0..4u64 {
        let model = model(3, &device);
        let bound = model.pack_clip(c);
        assert_eq!(bound, c / 2.0);
        let (x, cond) = rows(9, 40.0 + seed as f32);
        // Without the row: the first pack holds rows 0, 1 and a copy of row 0.
        let mut without = x.clone();
        without[2 * W..3 * W].copy_from_slice(&x[0..W].to_vec());
        let mut cond_without = cond.clone();
        cond_without[6..9].copy_from_slice(&cond[0..3].to_vec());
        let a = clipped(&model, x, cond, bound, &device);
        let b = clipped(&model, without, cond_without, bound, &device);
        let moved = norm(&a.iter().zip(&b).map(|(p, q)| p - q).collect::<Vec<_>>());
        assert!(moved <= c * (1.0 + 1e-4), "moved {moved} > C = {c}");
        assert!(moved > 0.0);
    }
}

#[test]
fn every_row_lands_in_at_most_one_pack_and_every_pack_is_full() {
    let mut rng = SecureRng::from_seed(3);
    let batch: Vec<usize> = (0..200).map(|i| i * 7).collect();
    for (packs, pac) in [(50, 4), (10, 4), (100, 4), (1, 10), (30, 1)] {
        let dealt = deal_packs(&batch, packs, pac, &mut rng);
        let mut seen = HashSet::new();
        for p in &dealt {
            assert_eq!(p.len(), pac);
            let members: HashSet<usize> = p.iter().copied().collect();
            for m in members {
                assert!(batch.contains(&m));
                assert!(seen.insert(m), "row {m} in two packs");
            }
        }
        if pac == 1 {
            // Each row its own pack: nothing dropped, nothing copied.
            assert_eq!(dealt.len(), batch.len());
        } else {
            assert!(dealt.len() <= packs);
            // Every pack that received rows is there: with 200 rows into 10 packs all are.
            if packs <= 10 {
                assert_eq!(dealt.len(), packs);
            }
        }
    }
    assert!(deal_packs(&[], 5, 4, &mut rng).is_empty());
}

#[test]
fn a_pack_depends_only_on_its_own_rows() {
    // Adding a row to the batch changes at most one pack: the others are dealt the same
    // given the same randomness for them. Dealing draws one pack index per row in batch
    // order and then shuffles within packs, so with the row added last, the earlier rows'
    // packs are those of the run without it, up to the one pack the new row joins.
    let batch: Vec<usize> = (0..60).collect();
    let mut more = batch.clone();
    more.push(999);
    for seed in 0..20 {
        let a = deal_packs(&batch, 15, 4, &mut SecureRng::from_seed(seed));
        let b = deal_packs(&more, 15, 4, &mut SecureRng::from_seed(seed));
        let set = |p: &Vec<usize>| p.iter().copied().collect::<HashSet<usize>>();
        let a_sets: Vec<HashSet<usize>> = a.iter().map(set).collect();
        let b_sets: Vec<HashSet<usize>> = b.iter().map(set).collect();
        let changed = b_sets.iter().filter(|s| !a_sets.contains(s)).count();
        assert!(changed <= 1, "seed {seed}: {changed} packs changed");
    }
}

/// Wage's encoder and its rows encoded, with and without the table's last row.
fn wage_rows() -> (
    fedsynth_synth::encoder::Encoder,
    fedsynth_synth::encoder::Encoded,
    fedsynth_synth::encoder::Encoded,
) {
    use fedsynth_synth::encoder::Encoder;
    use fedsynth_synth::schema::Schema;
    use fedsynth_synth::table::read_raw;
    let repo = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..");
    let schema = Schema::read(&repo.join("configs/wage.schema.toml"))
        .unwrap()
        .nullable_by_default();
    let text = std::fs::read_to_string(repo.join("cli/tests/data/wage.csv")).unwrap();
    let lines: Vec<&str> = text.lines().take(401).collect();
    let dir = tempfile::tempdir().unwrap();
    let read = |lines: &[&str], name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let table = read_raw(&path).unwrap().typed(&schema.kinds()).unwrap();
        fedsynth_synth::nulls::with_pattern(table, &schema)
    };
    let (with, without) = (
        read(&lines, "with.csv"),
        read(&lines[..lines.len() - 1], "without.csv"),
    );
    let encoder = Encoder::new(&schema, &with).unwrap();
    let (a, b) = (
        encoder.encode_rows(&with).unwrap(),
        encoder.encode_rows(&without).unwrap(),
    );
    (encoder, a, b)
}

#[test]
fn a_holders_secure_contribution_moves_by_at_most_c_when_a_row_is_added() {
    let _rng = own_rng();
    // Under secure aggregation a holder sends the generator's gradient and the
    // discriminator's (generated and real packs) in one vector. Only the real packs' clipped
    // sum may depend on its rows: with every row sampled (q = 1) and the same randomness
    // otherwise, two tables one row apart give contributions at most C apart, and the
    // generator's part is the same.
    use fedsynth_synth::ctgan::GanTrainer;
    use fedsynth_synth::models::{Model, ModelSettings};
    use fedsynth_synth::train::TrainConfig;
    let device = Device::flex();
    let (encoder, with, without) = wage_rows();
    assert_eq!(with.rows(), without.rows() + 1);
    let settings = ModelSettings::from_table(
        &toml::from_str("kind = \"ctgan\"\nhidden = 16\ncritic_hidden = 8").unwrap(),
    )
    .unwrap();
    device.seed(4);
    let Model::Ctgan(model) = settings.build(&encoder, &device).unwrap() else {
        panic!("a GAN was asked for")
    };
    assert_eq!(model.to_flat().len(), settings.parameters(&encoder));
    let c = 0.7;
    let cfg = TrainConfig {
        epochs: 1,
        sampling_rate: 1.0,
        clip_norm: c,
        noise_multiplier: Some(1.0),
        learning_rate: 1e-3,
    };
    let contribution = |data: &fedsynth_synth::encoder::Encoded| {
        device.seed(5);
        let mut trainer = GanTrainer::new(
            &model,
            data,
            encoder.spans(),
            &cfg,
            400.0,
            &device,
            SecureRng::from_seed(6),
        )
        .unwrap();
        let (v, rows) = trainer
            .secure_contribution(&model, &mut SecureRng::from_seed(7))
            .unwrap();
        assert_eq!(rows, data.rows(), "q = 1 samples every row");
        v
    };
    let (a, b) = (contribution(&with), contribution(&without));
    assert_eq!(a.len(), model.to_flat().len());
    let generator = a.len()
        - fedsynth_synth::model::shapes_parameters(&fedsynth_synth::train::layer_shapes(
            &model.discriminator,
        ));
    let diff: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(p, q)| f64::from(*p) - f64::from(*q))
        .collect();
    assert!(
        diff[..generator].iter().all(|d| d.abs() < 1e-5),
        "the generator's part depends on the rows"
    );
    let moved = norm(&diff);
    assert!(moved <= c * (1.0 + 1e-3), "moved {moved} > C = {c}");
    assert!(moved > 1e-4, "the real packs must count");
    // The data-free parts are bounded too: the generator's gradient at C, weighted by the
    // expected packs.
    let g: Vec<f64> = a[..generator].iter().map(|&v| f64::from(v)).collect();
    assert!(norm(&g) <= 400.0 * c * (1.0 + 1e-3), "{}", norm(&g));
    assert!(norm(&g) > 0.0);
}
