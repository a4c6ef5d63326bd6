//! The privacy audit of a synthetic table: membership-inference attacks, identifiability and
//! k-anonymity, measured on the real rows the generator was trained on.
//!
//! Rows are compared in the evaluation's embedding (standardised numerics, one-hot
//! categoricals; see [`crate::quality`]). Two attacks score each target row, a larger score
//! meaning "more likely a training row":
//!
//! - **distance to the closest synthetic record** (DCR): minus the distance from the target to
//!   its nearest synthetic row — a generator that copies or hugs its training rows puts them
//!   closer than unseen rows;
//! - **density ratio** (DOMIAS-style): log p̂_synth(x) − log p̂_ref(x), both Gaussian kernel
//!   density estimates (diagonal bandwidths, their scale chosen by the likelihood one half
//!   of the estimate's own rows gives the other), the reference density fitted on real rows
//!   the generator never saw. It finds local over-density around training rows even
//!   where the generator does not copy them.
//!
//! Members are a random sample of the training rows; non-members and the reference are
//! disjoint random halves of the holdout. Each attack is scored by ROC AUC (with its
//! Hanley–McNeil standard error) and the true-positive rate at 1% and 10% false positives.
//! The **control** runs the same attacks with an independent sample of real rows (a third of
//! the holdout, never a target) in place of the synthetic table: a generator that knows
//! nothing of its training rows. It must score ≈ 0.5; if it does not, members and
//! non-members differ for another reason (a holdout taken from the end of a sorted file, say)
//! and the attacks' figures are not evidence about the generator.

use std::collections::HashMap;

use fedsynth_privacy::rng::SecureRng;
use rand::Rng;
use serde_json::{Value, json};

/// Fewest holdout rows for a membership audit (a third of them are the control's generator).
pub const MIN_HOLDOUT: usize = 30;
/// Most targets per side (members, non-members) and most query rows for identifiability.
pub const MAX_TARGETS: usize = 2_000;
/// Most rows of a table an attack compares against (a random sample above it).
pub const MAX_POOL: usize = 10_000;
/// Smallest bandwidth of a kernel density estimate, in the embedding's units (a one-hot
/// column whose category is rare must not make the density a spike).
const SD_FLOOR: f64 = 0.1;
/// Bandwidth factors a density estimate chooses from (by held-out likelihood).
const FACTORS: [f64; 8] = [0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0];
/// Most held-out rows scoring a bandwidth.
const CV_ROWS: usize = 1_000;
/// Points kept on a drawn ROC curve.
const CURVE_POINTS: usize = 400;

/// A categorical value not among the real table's categories (a zero one-hot vector).
pub const UNSEEN: u32 = u32::MAX;

/// Rows of the embedding: per row `dn` standardised numbers and one code per categorical
/// column (the one-hot vector kept as the index of its one). Distances are those of the
/// one-hot embedding: two known, different categories are √2 apart, a known and an unseen
/// one 1.
#[derive(Debug, Clone, Default)]
pub struct Points {
    num: Vec<f64>,
    dn: usize,
    cat: Vec<u32>,
    /// Number of categories of each categorical column.
    levels: Vec<usize>,
    n: usize,
}

impl Points {
    /// `n` rows: `num` holds `n × dn` numbers, `cat` `n × levels.len()` codes below each
    /// column's level count (or [`UNSEEN`]).
    pub fn new(n: usize, num: Vec<f64>, cat: Vec<u32>, levels: Vec<usize>) -> Self {
        let dn = num.len().checked_div(n).unwrap_or(0);
        Self {
            num,
            dn,
            cat,
            levels,
            n,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn nums(&self, i: usize) -> &[f64] {
        &self.num[i * self.dn..(i + 1) * self.dn]
    }

    fn cats(&self, i: usize) -> &[u32] {
        let dc = self.levels.len();
        &self.cat[i * dc..(i + 1) * dc]
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Points {
        let mut num = Vec::with_capacity(idx.len() * self.dn);
        let mut cat = Vec::with_capacity(idx.len() * self.levels.len());
        for &i in idx {
            num.extend_from_slice(self.nums(i));
            cat.extend_from_slice(self.cats(i));
        }
        Points {
            num,
            dn: self.dn,
            cat,
            levels: self.levels.clone(),
            n: idx.len(),
        }
    }

    fn concat(&self, other: &Points) -> Points {
        let mut out = self.clone();
        out.num.extend_from_slice(&other.num);
        out.cat.extend_from_slice(&other.cat);
        out.n += other.n;
        out
    }

    /// Squared distance between row `i` and row `j` of `other`.
    fn sq_dist(&self, i: usize, other: &Points, j: usize) -> f64 {
        let num: f64 = self
            .nums(i)
            .iter()
            .zip(other.nums(j))
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let cat: f64 = self
            .cats(i)
            .iter()
            .zip(other.cats(j))
            .map(|(&a, &b)| match (a == b, a == UNSEEN || b == UNSEEN) {
                (true, _) => 0.0,
                (false, true) => 1.0,
                (false, false) => 2.0,
            })
            .sum();
        num + cat
    }
}

/// `k` distinct indices of `0..n` drawn at random (all of them, shuffled, when k ≥ n).
pub fn sample_indices(n: usize, k: usize, rng: &mut SecureRng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// `f(0..n)` on the machine's cores.
fn par_map(n: usize, f: impl Fn(usize) -> f64 + Sync) -> Vec<f64> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 16);
    if n < 64 || threads == 1 {
        return (0..n).map(f).collect();
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<_>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Euclidean distance from each query row to its nearest pool row; `skip[i]`, when given, is
/// a pool row that query `i` ignores (the query itself).
pub fn nearest(query: &Points, pool: &Points, skip: Option<&[Option<usize>]>) -> Vec<f64> {
    par_map(query.len(), |i| {
        let own = skip.and_then(|s| s[i]);
        (0..pool.len())
            .filter(|&j| Some(j) != own)
            .map(|j| query.sq_dist(i, pool, j))
            .fold(f64::INFINITY, f64::min)
            .sqrt()
    })
}

/// An ROC curve of attack scores (larger: "member").
#[derive(Debug, Clone)]
pub struct Roc {
    /// Area under the curve (ties count one half).
    pub auc: f64,
    /// Its standard error (Hanley & McNeil, 1982).
    pub auc_se: f64,
    /// True-positive rate at 1% false positives.
    pub tpr_at_1: f64,
    /// True-positive rate at 10% false positives.
    pub tpr_at_10: f64,
    /// (false-positive rate, true-positive rate) points, thinned for drawing.
    pub curve: Vec<(f64, f64)>,
}

impl Roc {
    /// The JSON of the report.
    pub fn to_json(&self) -> Value {
        json!({
            "auc": self.auc,
            "auc_se": self.auc_se,
            "tpr_at_1pct_fpr": self.tpr_at_1,
            "tpr_at_10pct_fpr": self.tpr_at_10,
            "roc": self.curve.iter().map(|&(f, t)| [f, t]).collect::<Vec<_>>(),
        })
    }
}

/// The ROC of `members`' scores against `non_members'`.
pub fn roc(members: &[f64], non_members: &[f64]) -> Roc {
    let (m, n) = (members.len() as f64, non_members.len() as f64);
    let mut scored: Vec<(f64, bool)> = members
        .iter()
        .map(|&s| (s, true))
        .chain(non_members.iter().map(|&s| (s, false)))
        .map(|(s, t)| (if s.is_nan() { f64::NEG_INFINITY } else { s }, t))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp, mut auc, mut i) = (0.0, 0.0, 0.0, 0);
    while i < scored.len() {
        let mut j = i;
        let (t0, f0) = (tp, fp);
        while j < scored.len() && scored[j].0 == scored[i].0 {
            if scored[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        // Trapezoid: a block of tied scores counts its pairs one half.
        auc += (fp - f0) * (tp + t0) / 2.0;
        points.push((fp / n.max(1.0), tp / m.max(1.0)));
        i = j;
    }
    let auc = if m > 0.0 && n > 0.0 {
        auc / (m * n)
    } else {
        f64::NAN
    };
    let (q1, q2) = (auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc));
    let var =
        (auc * (1.0 - auc) + (m - 1.0) * (q1 - auc * auc) + (n - 1.0) * (q2 - auc * auc)) / (m * n);
    let tpr_at = |t: f64| {
        points
            .iter()
            .filter(|p| p.0 <= t + 1e-12)
            .map(|p| p.1)
            .fold(0.0, f64::max)
    };
    let step = points.len().div_ceil(CURVE_POINTS).max(1);
    let last = points.len() - 1;
    let curve = points
        .iter()
        .enumerate()
        .filter(|(k, _)| k % step == 0 || *k == last)
        .map(|(_, p)| *p)
        .collect();
    Roc {
        auc,
        auc_se: var.max(0.0).sqrt(),
        tpr_at_1: tpr_at(0.01),
        tpr_at_10: tpr_at(0.10),
        curve,
    }
}

/// A Gaussian kernel density estimate in the one-hot embedding with a diagonal bandwidth
/// (a factor times each coordinate's spread, floored), computed on the codes: a one-hot
/// column contributes nothing where the categories agree and the two coordinates' terms
/// where they differ.
struct Kde<'a> {
    data: &'a Points,
    /// 1/h per numeric coordinate.
    inv_h: Vec<f64>,
    /// 1/(2h²) per category of each categorical column.
    half_ih2: Vec<Vec<f64>>,
    log_norm: f64,
}

impl<'a> Kde<'a> {
    /// The estimate on `data` whose bandwidth factor (h = factor · spread, per coordinate)
    /// fits best: the one of [`FACTORS`] under which half of `data` gives the other half the
    /// highest likelihood (Scott's rule oversmooths in the one-hot embedding's many
    /// dimensions). Only `data` is looked at.
    fn fitted(data: &'a Points) -> Self {
        let n = data.len();
        if n < 20 {
            return Self::new(data, 1.0);
        }
        let fit = data.select(&(0..n).step_by(2).collect::<Vec<_>>());
        let held = data.select(&(1..n).step_by(2).take(CV_ROWS).collect::<Vec<_>>());
        let score = |factor: f64| {
            let k = Kde::new(&fit, factor);
            par_map(held.len(), |i| k.log_density(&held, i))
                .iter()
                .sum::<f64>()
        };
        let best = FACTORS
            .iter()
            .map(|&f| (f, score(f)))
            .fold(
                (1.0, f64::NEG_INFINITY),
                |a, b| if b.1 > a.1 { b } else { a },
            )
            .0;
        // The half fitted on n/2 rows: the whole takes Scott's n^(-1/(d+4)) shrinkage of it.
        let dims = data.dn + data.levels.iter().sum::<usize>();
        Self::new(data, best * 2f64.powf(-1.0 / (dims as f64 + 4.0)))
    }

    fn new(data: &'a Points, factor: f64) -> Self {
        let n = data.len().max(1) as f64;
        let dims = data.dn + data.levels.iter().sum::<usize>();
        let mut log_h = 0.0;
        let mut bandwidth = |sd: f64| {
            let h = factor * sd.max(SD_FLOOR);
            log_h += h.ln();
            h
        };
        let inv_h: Vec<f64> = (0..data.dn)
            .map(|j| {
                let col = (0..data.len()).map(|i| data.nums(i)[j]);
                let mean = col.clone().sum::<f64>() / n;
                let var = col.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                1.0 / bandwidth(var.sqrt())
            })
            .collect();
        let half_ih2: Vec<Vec<f64>> = data
            .levels
            .iter()
            .enumerate()
            .map(|(j, &levels)| {
                let mut counts = vec![0.0; levels];
                for i in 0..data.len() {
                    if let Some(c) = counts.get_mut(data.cats(i)[j] as usize) {
                        *c += 1.0;
                    }
                }
                counts
                    .iter()
                    .map(|c| {
                        let p = c / n;
                        let h = bandwidth((p * (1.0 - p)).sqrt());
                        0.5 / (h * h)
                    })
                    .collect()
            })
            .collect();
        let log_norm = -n.ln() - log_h - 0.5 * dims as f64 * (2.0 * std::f64::consts::PI).ln();
        Self {
            data,
            inv_h,
            half_ih2,
            log_norm,
        }
    }

    /// log p̂ at row `i` of `x`.
    fn log_density(&self, x: &Points, i: usize) -> f64 {
        let (xn, xc) = (x.nums(i), x.cats(i));
        let exps: Vec<f64> = (0..self.data.len())
            .map(|r| {
                let num: f64 = self
                    .data
                    .nums(r)
                    .iter()
                    .zip(xn)
                    .zip(&self.inv_h)
                    .map(|((y, x), ih)| {
                        let z = (x - y) * ih;
                        0.5 * z * z
                    })
                    .sum();
                let cat: f64 = self
                    .data
                    .cats(r)
                    .iter()
                    .zip(xc)
                    .zip(&self.half_ih2)
                    .filter(|((a, b), _)| a != b)
                    .map(|((&a, &b), w)| {
                        w.get(a as usize).copied().unwrap_or(0.0)
                            + w.get(b as usize).copied().unwrap_or(0.0)
                    })
                    .sum();
                -(num + cat)
            })
            .collect();
        let top = exps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            return f64::NEG_INFINITY;
        }
        top + exps.iter().map(|e| (e - top).exp()).sum::<f64>().ln() + self.log_norm
    }
}

/// DCR attack: minus the distance to the nearest synthetic row.
pub fn dcr_scores(targets: &Points, synth: &Points) -> Vec<f64> {
    nearest(targets, synth, None)
        .into_iter()
        .map(|d| -d)
        .collect()
}

/// Density-ratio attack: log p̂_synth − log p̂_reference at each target.
pub fn domias_scores(targets: &Points, synth: &Points, reference: &Points) -> Vec<f64> {
    let (ks, kr) = (Kde::fitted(synth), Kde::fitted(reference));
    par_map(targets.len(), |i| {
        ks.log_density(targets, i) - kr.log_density(targets, i)
    })
}

/// Both attacks of one generator (or of the control's stand-in) against the same targets.
fn attacks(members: &Points, non: &Points, generator: &Points, reference: &Points) -> Value {
    let targets = members.concat(non);
    let split = |s: Vec<f64>| {
        let (a, b) = s.split_at(members.len());
        roc(a, b)
    };
    json!({
        "dcr": split(dcr_scores(&targets, generator)).to_json(),
        "density_ratio": split(domias_scores(&targets, generator, reference)).to_json(),
    })
}

/// The membership-inference audit: members from `train`, non-members, reference and the
/// control's stand-in generator from disjoint random parts of `holdout`.
pub fn membership_audit(train: &Points, synth: &Points, holdout: &Points, seed: u64) -> Value {
    if holdout.len() < MIN_HOLDOUT || train.is_empty() || synth.is_empty() {
        return json!({"skipped": format!(
            "needs at least {MIN_HOLDOUT} holdout rows (real rows the generator never saw), \
             training rows and synthetic rows; have {}, {} and {}",
            holdout.len(), train.len(), synth.len())});
    }
    let mut rng = SecureRng::from_seed(seed ^ 0x6d69_615f_6175_6474);
    let order = sample_indices(holdout.len(), holdout.len(), &mut rng);
    let third = holdout.len() / 3;
    let targets = third.min(MAX_TARGETS).min(train.len());
    let non = holdout.select(&order[..targets]);
    let reference = holdout.select(&order[third..2 * third]);
    let stand_in = holdout.select(&order[2 * third..]);
    let members = train.select(&sample_indices(train.len(), targets, &mut rng));
    let pool = synth.select(&sample_indices(synth.len(), MAX_POOL, &mut rng));
    json!({
        "members": members.len(),
        "non_members": non.len(),
        "reference_rows": reference.len(),
        "synthetic_rows": pool.len(),
        "attacks": attacks(&members, &non, &pool, &reference),
        "control": attacks(&members, &non, &stand_in, &reference),
    })
}

/// Identifiability: the share of real rows whose nearest synthetic row is closer than their
/// nearest other real row, beside the same share with holdout rows in place of synthetic ones
/// (the baseline: what data that never saw the row achieves). The three pools (other real
/// rows, synthetic rows, holdout rows) are random samples of one size, so the shares compare:
/// data independent of the training rows scores ≈ 0.5, a copy of them 1.
pub fn identifiability(
    train: &Points,
    synth: &Points,
    holdout: Option<&Points>,
    seed: u64,
) -> Value {
    let mut pool = train.len().saturating_sub(1).min(synth.len()).min(MAX_POOL);
    if let Some(h) = holdout {
        pool = pool.min(h.len());
    }
    if pool == 0 {
        return json!({"skipped": "needs at least two training rows and one synthetic row"});
    }
    let mut rng = SecureRng::from_seed(seed ^ 0x6964_656e_7469_6679);
    let queries_idx = sample_indices(train.len(), MAX_TARGETS, &mut rng);
    let queries = train.select(&queries_idx);
    // One more real row than the others, so that each query still has `pool` others.
    let real_idx = sample_indices(train.len(), pool + 1, &mut rng);
    let skip: Vec<Option<usize>> = queries_idx
        .iter()
        .map(|q| real_idx.iter().position(|r| r == q))
        .collect();
    let d_real = nearest(&queries, &train.select(&real_idx), Some(&skip));
    let share = |other: &Points| {
        let d = nearest(
            &queries,
            &other.select(&sample_indices(
                other.len(),
                pool,
                &mut SecureRng::from_seed(seed),
            )),
            None,
        );
        d.iter().zip(&d_real).filter(|(a, b)| a < b).count() as f64 / d.len().max(1) as f64
    };
    json!({
        "share": share(synth),
        "holdout_baseline": holdout.map(share),
        "query_rows": queries.len(),
        "pool_rows": pool,
    })
}

/// k-anonymity of the synthetic table on quasi-identifier columns (values as text, one
/// vector per column), beside the real table's.
pub fn k_anonymity(names: &[String], real: &[Vec<String>], synth: &[Vec<String>]) -> Value {
    fn classes(cols: &[Vec<String>]) -> HashMap<Vec<&str>, usize> {
        let n = cols.first().map_or(0, Vec::len);
        let mut m: HashMap<Vec<&str>, usize> = HashMap::new();
        for i in 0..n {
            *m.entry(cols.iter().map(|c| c[i].as_str()).collect())
                .or_default() += 1;
        }
        m
    }
    let (rc, sc) = (classes(real), classes(synth));
    let summary = |m: &HashMap<Vec<&str>, usize>| {
        let rows: usize = m.values().sum();
        json!({
            "k": m.values().copied().min().unwrap_or(0),
            "classes": m.len(),
            "rows_in_classes_below_5": m.values().filter(|&&c| c < 5).sum::<usize>() as f64
                / rows.max(1) as f64,
        })
    };
    // A synthetic row whose combination is unique among the real rows points at one person.
    let synth_rows: usize = sc.values().sum();
    let unique_matches: usize = sc
        .iter()
        .filter(|(k, _)| rc.get(*k) == Some(&1))
        .map(|(_, c)| c)
        .sum();
    json!({
        "quasi_identifiers": names,
        "synthetic": summary(&sc),
        "real": summary(&rc),
        "synthetic_rows_matching_a_unique_real_row": unique_matches as f64 / synth_rows.max(1) as f64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// Rows of a fixed mixture: two numeric coordinates and a two-level category.
    fn draw(n: usize, rng: &mut SecureRng) -> Points {
        let z = Normal::new(0.0, 1.0).unwrap();
        let (mut num, mut cat) = (Vec::with_capacity(n * 2), Vec::with_capacity(n));
        for _ in 0..n {
            let a: f64 = z.sample(rng);
            num.extend_from_slice(&[a, 0.6 * a + z.sample(rng) * 0.8]);
            cat.push(u32::from(rng.random_bool(0.3)));
        }
        Points::new(n, num, cat, vec![2])
    }

    #[test]
    fn roc_matches_hand_computed_auc_and_rates() {
        // members 3, 2, 1; non-members 2.5, 0.5, 0: 7 of 9 pairs ordered right.
        let r = roc(&[3.0, 2.0, 1.0], &[2.5, 0.5, 0.0]);
        assert!((r.auc - 7.0 / 9.0).abs() < 1e-12);
        // Ties count one half.
        let t = roc(&[1.0, 1.0], &[1.0, 0.0]);
        assert!((t.auc - 0.75).abs() < 1e-12);
        let perfect = roc(&[5.0, 4.0], &[1.0, 0.0]);
        assert_eq!((perfect.auc, perfect.tpr_at_1), (1.0, 1.0));
        assert_eq!(perfect.curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(perfect.curve.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn attacks_find_a_generator_that_copies_its_training_rows() {
        // A small table (the density ratio's signal is one copy's kernel against n of them).
        let mut rng = SecureRng::from_seed(1);
        let train = draw(200, &mut rng);
        let holdout = draw(600, &mut rng);
        // A memorising generator: the training rows, slightly jittered.
        let z = Normal::new(0.0, 0.01).unwrap();
        let mut copies = train.clone();
        copies.num.iter_mut().for_each(|v| *v += z.sample(&mut rng));
        let audit = membership_audit(&train, &copies, &holdout, 3);
        // Copies sit on their training rows: the distance attack separates them almost
        // perfectly (0.996 here); the density ratio, smoothed, clearly but less (0.78).
        for (attack, floor) in [("dcr", 0.9), ("density_ratio", 0.7)] {
            let a = &audit["attacks"][attack];
            let (auc, se) = (a["auc"].as_f64().unwrap(), a["auc_se"].as_f64().unwrap());
            assert!(
                auc > floor && auc > 0.5 + 3.0 * se,
                "{attack}: AUC {auc} ± {se}"
            );
            let control = audit["control"][attack]["auc"].as_f64().unwrap();
            assert!(
                (control - 0.5).abs() < 0.1,
                "{attack} control: AUC {control}"
            );
        }
        assert!(audit["attacks"]["dcr"]["tpr_at_1pct_fpr"].as_f64().unwrap() > 0.5);
        let id = identifiability(&train, &copies, Some(&holdout), 3);
        assert!(id["share"].as_f64().unwrap() > 0.95, "{id}");
        let base = id["holdout_baseline"].as_f64().unwrap();
        assert!((base - 0.5).abs() < 0.1, "{id}");
    }

    #[test]
    fn attacks_stay_near_chance_for_a_generator_independent_of_its_training_rows() {
        let mut rng = SecureRng::from_seed(2);
        let train = draw(600, &mut rng);
        let holdout = draw(600, &mut rng);
        let fresh = draw(600, &mut rng);
        let audit = membership_audit(&train, &fresh, &holdout, 4);
        for attack in ["dcr", "density_ratio"] {
            let a = &audit["attacks"][attack];
            let (auc, se) = (a["auc"].as_f64().unwrap(), a["auc_se"].as_f64().unwrap());
            assert!(
                (auc - 0.5).abs() < 3.0 * se + 0.01,
                "{attack}: AUC {auc} ± {se}"
            );
        }
        let id = identifiability(&train, &fresh, Some(&holdout), 4);
        assert!((id["share"].as_f64().unwrap() - 0.5).abs() < 0.1, "{id}");
    }

    #[test]
    fn control_exposes_members_and_non_members_that_differ_in_distribution() {
        // Non-members from a shifted population (a holdout cut from the end of a sorted
        // file): the control, whose stand-in knows nothing of the members, is far from 0.5.
        let mut rng = SecureRng::from_seed(5);
        let train = draw(600, &mut rng);
        let mut holdout = draw(600, &mut rng);
        for i in 0..holdout.len() {
            holdout.num[i * 2] += 1.5;
        }
        let fresh = draw(600, &mut rng);
        let audit = membership_audit(&train, &fresh, &holdout, 6);
        let control = audit["control"]["dcr"]["auc"].as_f64().unwrap();
        assert!((control - 0.5).abs() > 0.1, "control AUC {control}");
    }

    #[test]
    fn a_small_holdout_skips_the_audit_with_a_reason() {
        let mut rng = SecureRng::from_seed(7);
        let train = draw(100, &mut rng);
        let audit = membership_audit(&train, &train, &draw(10, &mut rng), 0);
        assert!(
            audit["skipped"]
                .as_str()
                .unwrap()
                .contains("30 holdout rows")
        );
    }

    #[test]
    fn k_anonymity_counts_classes_and_unique_matches() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let real = vec![s(&["a", "a", "b", "c"]), s(&["1", "1", "2", "3"])];
        let synth = vec![s(&["a", "b", "b", "z"]), s(&["1", "2", "2", "9"])];
        let k = k_anonymity(&s(&["x", "y"]), &real, &synth);
        assert_eq!(k["synthetic"]["k"], 1);
        assert_eq!(k["real"]["k"], 1);
        assert_eq!(k["real"]["classes"], 3);
        // (b, 2) is unique among the real rows and makes up two of the four synthetic rows.
        assert_eq!(k["synthetic_rows_matching_a_unique_real_row"], 0.5);
    }
}
