//! Quality, utility and privacy metrics of a synthetic table against the real one, defined
//! as in fedsynth's reference evaluator (`shared/eval/synth_eval.py`):
//!
//! - column shapes: 1 − KS statistic (numeric), 1 − TVD (categorical), averaged;
//! - column pair trends: 1 − |ρ_real − ρ_synth|/2 for numeric pairs (Pearson), contingency
//!   similarity 1 − TVD/… for pairs with a categorical side (numerics in 10 real-quantile
//!   bins), averaged;
//! - workload: mean L1 error of all 1-, 2- and 3-way marginals after that binning;
//! - utility: train on synthetic, test on the real holdout, beside train on real (bagged
//!   decision trees from smartcore): accuracy and macro one-vs-rest ROC AUC, or R²;
//! - privacy: distance to the closest real record (standardised numerics + one-hot
//!   categoricals), against the holdout as a baseline, and the share of exact copies.
//!
//! A column with at most 10 distinct values in the real table is treated as categorical.

use std::collections::{BTreeMap, HashMap, HashSet};

use fedsynth_privacy::rng::SecureRng;
use rand::Rng;
use serde_json::{Value, json};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::tree::decision_tree_classifier::{
    DecisionTreeClassifier, DecisionTreeClassifierParameters,
};
use smartcore::tree::decision_tree_regressor::{
    DecisionTreeRegressor, DecisionTreeRegressorParameters,
};

use crate::error::{Result, SynthError};
use crate::mia;
use crate::table::{ColumnData, Table};

const NA: &str = "<NA>";

/// Evaluation settings.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Column to predict for the utility score.
    pub target: Option<String>,
    /// Numeric columns with at most this many distinct values count as categorical.
    pub max_cat_levels: usize,
    /// Rows sampled for distance-to-closest-record.
    pub dcr_sample: usize,
    /// Cap on the number of 3-way marginals (sampled above it).
    pub max_triples: usize,
    /// Seed for sampling.
    pub seed: u64,
    /// Columns an adversary could know about a person (age, sex, postcode…): the output's
    /// k-anonymity on them is reported.
    pub quasi_identifiers: Vec<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            target: None,
            max_cat_levels: 10,
            dcr_sample: 5000,
            max_triples: 2000,
            seed: 0,
            quasi_identifiers: Vec::new(),
        }
    }
}

/// One column as the metrics see it.
#[derive(Debug, Clone)]
enum Col {
    Num(Vec<f64>),
    Cat(Vec<String>),
}

impl Col {
    fn len(&self) -> usize {
        match self {
            Col::Num(v) => v.len(),
            Col::Cat(v) => v.len(),
        }
    }
}

fn canon(data: &ColumnData) -> Vec<String> {
    (0..data.len())
        .map(|i| match data {
            ColumnData::Text(v) => v[i]
                .as_deref()
                .map_or_else(|| NA.to_string(), |s| s.trim().to_string()),
            ColumnData::Int(v) => v[i].map_or_else(|| NA.to_string(), |x| x.to_string()),
            ColumnData::Float(v) => v[i].map_or_else(
                || NA.to_string(),
                |x| {
                    if x.fract() == 0.0 && x.abs() < 1e15 {
                        format!("{}", x as i64)
                    } else {
                        format!("{x}")
                    }
                },
            ),
        })
        .collect()
}

fn numbers(data: &ColumnData, name: &str) -> Result<Vec<f64>> {
    (0..data.len())
        .map(|i| match data {
            ColumnData::Text(v) => match v[i].as_deref().map(str::trim) {
                None | Some("" | "nan" | "NaN" | "NA" | "null" | "None") => Ok(f64::NAN),
                Some(s) => s.parse::<f64>().map_err(|_| SynthError::Column {
                    column: name.to_string(),
                    message: format!("numeric in the real data but '{s}' here"),
                }),
            },
            _ => Ok(data.number(i).unwrap_or(f64::NAN)),
        })
        .collect()
}

fn distinct(data: &ColumnData) -> usize {
    canon(data)
        .into_iter()
        .filter(|s| s != NA)
        .collect::<HashSet<_>>()
        .len()
}

/// Which real columns are categorical.
fn infer_kinds(real: &Table, opts: &EvalOptions, classification: bool) -> Vec<bool> {
    real.names
        .iter()
        .zip(&real.columns)
        .map(|(name, data)| {
            matches!(data, ColumnData::Text(_))
                || distinct(data) <= opts.max_cat_levels
                || (classification && opts.target.as_deref() == Some(name))
        })
        .collect()
}

fn aligned(table: &Table, real: &Table, is_cat: &[bool], what: &str) -> Result<Vec<Col>> {
    real.names
        .iter()
        .zip(is_cat)
        .map(|(name, &cat)| {
            let data = table.column(name).ok_or_else(|| {
                SynthError::Schema(format!("the {what} table lacks column '{name}'"))
            })?;
            Ok(if cat {
                Col::Cat(canon(data))
            } else {
                Col::Num(numbers(data, name)?)
            })
        })
        .collect()
}

/// numpy's default (linear) quantile of sorted data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - f) + sorted[i + 1] * f
    } else {
        sorted[i]
    }
}

/// Integer codes per column: numeric → 10 real-quantile bins (+ a NaN bin); categorical →
/// real categories (+ one bucket for unseen values).
struct Discretizer {
    specs: Vec<Spec>,
}

enum Spec {
    Num(Vec<f64>),
    Cat(HashMap<String, usize>),
}

impl Discretizer {
    fn new(real: &[Col]) -> Self {
        let specs = real
            .iter()
            .map(|c| match c {
                Col::Num(x) => {
                    let mut v: Vec<f64> = x.iter().copied().filter(|x| !x.is_nan()).collect();
                    v.sort_by(f64::total_cmp);
                    let mut edges: Vec<f64> = if v.is_empty() {
                        vec![]
                    } else {
                        (1..10).map(|k| quantile(&v, k as f64 / 10.0)).collect()
                    };
                    edges.dedup();
                    Spec::Num(edges)
                }
                Col::Cat(s) => {
                    let cats: std::collections::BTreeSet<&String> = s.iter().collect();
                    Spec::Cat(
                        cats.into_iter()
                            .enumerate()
                            .map(|(i, c)| (c.clone(), i))
                            .collect(),
                    )
                }
            })
            .collect();
        Self { specs }
    }

    fn sizes(&self) -> Vec<usize> {
        self.specs
            .iter()
            .map(|s| match s {
                Spec::Num(e) => e.len() + 2,
                Spec::Cat(m) => m.len() + 1,
            })
            .collect()
    }

    fn codes(&self, cols: &[Col]) -> Vec<Vec<usize>> {
        cols.iter()
            .zip(&self.specs)
            .map(|(c, s)| match (c, s) {
                (Col::Num(x), Spec::Num(edges)) => x
                    .iter()
                    .map(|&v| {
                        if v.is_nan() {
                            edges.len() + 1
                        } else {
                            edges.partition_point(|&e| e <= v)
                        }
                    })
                    .collect(),
                (Col::Cat(x), Spec::Cat(map)) => x
                    .iter()
                    .map(|v| map.get(v).copied().unwrap_or(map.len()))
                    .collect(),
                _ => vec![],
            })
            .collect()
    }
}

fn marginal_l1(cr: &[Vec<usize>], cs: &[Vec<usize>], sizes: &[usize], idx: &[usize]) -> f64 {
    let key = |codes: &[Vec<usize>], r: usize| {
        idx.iter().fold(0usize, |k, &j| k * sizes[j] + codes[j][r])
    };
    let count = |codes: &[Vec<usize>]| {
        let n = codes.first().map_or(0, Vec::len);
        let mut m: HashMap<usize, f64> = HashMap::new();
        for r in 0..n {
            *m.entry(key(codes, r)).or_default() += 1.0 / n as f64;
        }
        m
    };
    let (a, b) = (count(cr), count(cs));
    let keys: HashSet<&usize> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|k| (a.get(k).unwrap_or(&0.0) - b.get(k).unwrap_or(&0.0)).abs())
        .sum()
}

fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut x: Vec<f64> = a.iter().copied().filter(|v| !v.is_nan()).collect();
    let mut y: Vec<f64> = b.iter().copied().filter(|v| !v.is_nan()).collect();
    if x.is_empty() || y.is_empty() {
        return 1.0;
    }
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < x.len() && j < y.len() {
        let v = x[i].min(y[j]);
        while i < x.len() && x[i] <= v {
            i += 1;
        }
        while j < y.len() && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / x.len() as f64 - j as f64 / y.len() as f64).abs());
    }
    d
}

fn freq(v: &[String]) -> HashMap<&str, f64> {
    let mut m: HashMap<&str, f64> = HashMap::new();
    for s in v.iter().filter(|s| *s != NA) {
        *m.entry(s.as_str()).or_default() += 1.0;
    }
    let n: f64 = m.values().sum();
    m.values_mut().for_each(|c| *c /= n.max(1.0));
    m
}

fn tvd(a: &[String], b: &[String]) -> f64 {
    let (fa, fb) = (freq(a), freq(b));
    let keys: HashSet<&&str> = fa.keys().chain(fb.keys()).collect();
    0.5 * keys
        .into_iter()
        .map(|k| (fa.get(*k).unwrap_or(&0.0) - fb.get(*k).unwrap_or(&0.0)).abs())
        .sum::<f64>()
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| !a.is_nan() && !b.is_nan())
        .map(|(a, b)| (*a, *b))
        .collect();
    let n = pairs.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in pairs {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

fn combinations(d: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    if k > d {
        return out;
    }
    loop {
        out.push(idx.clone());
        let mut i = k;
        while i > 0 && idx[i - 1] == d - k + i - 1 {
            i -= 1;
        }
        if i == 0 {
            return out;
        }
        idx[i - 1] += 1;
        for j in i..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

fn workload(cr: &[Vec<usize>], cs: &[Vec<usize>], sizes: &[usize], opts: &EvalOptions) -> Value {
    let mut out = serde_json::Map::new();
    for k in 1..=3 {
        let mut combos = combinations(cr.len(), k);
        let sampled = k == 3 && combos.len() > opts.max_triples;
        if sampled {
            let mut rng = SecureRng::from_seed(opts.seed);
            while combos.len() > opts.max_triples {
                let i = rng.random_range(0..combos.len());
                combos.swap_remove(i);
            }
        }
        if combos.is_empty() {
            out.insert(format!("{k}way"), Value::Null);
            continue;
        }
        let errs: Vec<f64> = combos
            .iter()
            .map(|c| marginal_l1(cr, cs, sizes, c))
            .collect();
        out.insert(
            format!("{k}way"),
            json!({"mean_l1": errs.iter().sum::<f64>() / errs.len() as f64,
                   "max_l1": errs.iter().copied().fold(0.0, f64::max),
                   "n_marginals": errs.len(), "sampled": sampled}),
        );
    }
    Value::Object(out)
}

/// Rows as feature vectors for the trees: numerics (NaN → real median), categoricals as
/// ordinal codes of the real categories (unseen → −1).
fn features(cols: &[Col], real: &[Col], skip: usize) -> (Vec<f64>, usize) {
    let n = cols.first().map_or(0, |c| match c {
        Col::Num(v) => v.len(),
        Col::Cat(v) => v.len(),
    });
    let mut per_col: Vec<Vec<f64>> = Vec::new();
    for (j, (c, r)) in cols.iter().zip(real).enumerate() {
        if j == skip {
            continue;
        }
        per_col.push(match (c, r) {
            (Col::Num(v), Col::Num(rv)) => {
                let mut s: Vec<f64> = rv.iter().copied().filter(|x| !x.is_nan()).collect();
                s.sort_by(f64::total_cmp);
                let med = if s.is_empty() { 0.0 } else { quantile(&s, 0.5) };
                v.iter()
                    .map(|x| if x.is_nan() { med } else { *x })
                    .collect()
            }
            (Col::Cat(v), Col::Cat(rv)) => {
                let cats: BTreeMap<&String, usize> = rv
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| (c, i))
                    .collect();
                v.iter()
                    .map(|x| cats.get(x).map_or(-1.0, |&i| i as f64))
                    .collect()
            }
            _ => vec![0.0; n],
        });
    }
    let d = per_col.len();
    let mut x = Vec::with_capacity(n * d);
    for r in 0..n {
        for c in &per_col {
            x.push(c[r]);
        }
    }
    (x, d)
}

const TREES: usize = 8;

fn bootstrap(n: usize, rng: &mut SecureRng) -> Vec<usize> {
    let m = n.min(20_000);
    (0..m).map(|_| rng.random_range(0..n)).collect()
}

fn rows(x: &[f64], d: usize, idx: &[usize]) -> Result<DenseMatrix<f64>> {
    let mut v = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        v.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    DenseMatrix::new(idx.len(), d, v, false)
        .map_err(|e| SynthError::Setting(format!("utility model: {e}")))
}

/// Macro one-vs-rest ROC AUC from class probabilities.
fn macro_auc(y: &[usize], p: &[Vec<f64>], classes: usize) -> Option<f64> {
    let mut aucs = Vec::new();
    for k in 0..classes {
        let pos = y.iter().filter(|&&c| c == k).count();
        let neg = y.len() - pos;
        if pos == 0 || neg == 0 {
            continue;
        }
        let mut scored: Vec<(f64, bool)> =
            p.iter().zip(y).map(|(pr, &c)| (pr[k], c == k)).collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Mann–Whitney U with average ranks for ties.
        let (mut rank_sum, mut i) = (0.0, 0);
        while i < scored.len() {
            let mut j = i;
            while j < scored.len() && scored[j].0 == scored[i].0 {
                j += 1;
            }
            let avg = (i + j + 1) as f64 / 2.0;
            rank_sum += scored[i..j].iter().filter(|s| s.1).count() as f64 * avg;
            i = j;
        }
        aucs.push((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64);
    }
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

fn classify(train: &[Col], test: &[Col], real: &[Col], t: usize, seed: u64) -> Result<Value> {
    let Col::Cat(labels_real) = &real[t] else {
        return Ok(Value::Null);
    };
    let classes: Vec<&String> = labels_real
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let label = |v: &Vec<String>| -> Vec<usize> {
        v.iter()
            .map(|s| {
                classes
                    .iter()
                    .position(|c| *c == s)
                    .unwrap_or(classes.len())
            })
            .collect()
    };
    let (Col::Cat(ytr), Col::Cat(yte)) = (&train[t], &test[t]) else {
        return Ok(Value::Null);
    };
    let (ytr, yte) = (label(ytr), label(yte));
    let (xtr, d) = features(train, real, t);
    let (xte, _) = features(test, real, t);
    let test_idx: Vec<usize> = (0..yte.len()).collect();
    let xte_m = rows(&xte, d, &test_idx)?;
    let mut rng = SecureRng::from_seed(seed);
    let k = classes.len() + 1;
    let mut proba = vec![vec![0.0; k]; yte.len()];
    for _ in 0..TREES {
        let idx = bootstrap(ytr.len(), &mut rng);
        let y: Vec<u32> = idx.iter().map(|&i| ytr[i] as u32).collect();
        let present: Vec<u32> = y
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let params = DecisionTreeClassifierParameters::default()
            .with_max_depth(14)
            .with_min_samples_leaf(5);
        let tree = DecisionTreeClassifier::fit(&rows(&xtr, d, &idx)?, &y, params)
            .map_err(|e| SynthError::Setting(format!("utility model: {e}")))?;
        let p = tree
            .predict_proba(&xte_m)
            .map_err(|e| SynthError::Setting(format!("utility model: {e}")))?;
        use smartcore::linalg::basic::arrays::Array;
        for (r, row) in proba.iter_mut().enumerate() {
            for (ci, &cls) in present.iter().enumerate() {
                row[cls as usize] += *p.get((r, ci)) / TREES as f64;
            }
        }
    }
    let pred: Vec<usize> = proba
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect();
    let accuracy =
        pred.iter().zip(&yte).filter(|(a, b)| a == b).count() as f64 / yte.len().max(1) as f64;
    let norm: Vec<Vec<f64>> = proba
        .iter()
        .map(|p| {
            let s: f64 = p[..classes.len()].iter().sum();
            p[..classes.len()]
                .iter()
                .map(|v| {
                    if s > 0.0 {
                        v / s
                    } else {
                        1.0 / classes.len() as f64
                    }
                })
                .collect()
        })
        .collect();
    Ok(json!({"accuracy": accuracy, "roc_auc": macro_auc(&yte, &norm, classes.len())}))
}

fn regress(train: &[Col], test: &[Col], real: &[Col], t: usize, seed: u64) -> Result<Value> {
    let (Col::Num(ytr), Col::Num(yte)) = (&train[t], &test[t]) else {
        return Ok(Value::Null);
    };
    let (xtr, d) = features(train, real, t);
    let (xte, _) = features(test, real, t);
    let keep_tr: Vec<usize> = (0..ytr.len()).filter(|&i| !ytr[i].is_nan()).collect();
    let keep_te: Vec<usize> = (0..yte.len()).filter(|&i| !yte[i].is_nan()).collect();
    let xte_m = rows(&xte, d, &keep_te)?;
    let mut rng = SecureRng::from_seed(seed);
    let mut pred = vec![0.0; keep_te.len()];
    for _ in 0..TREES {
        let idx: Vec<usize> = bootstrap(keep_tr.len(), &mut rng)
            .into_iter()
            .map(|i| keep_tr[i])
            .collect();
        let y: Vec<f64> = idx.iter().map(|&i| ytr[i]).collect();
        let params = DecisionTreeRegressorParameters::default()
            .with_max_depth(14)
            .with_min_samples_leaf(5);
        let tree = DecisionTreeRegressor::fit(&rows(&xtr, d, &idx)?, &y, params)
            .map_err(|e| SynthError::Setting(format!("utility model: {e}")))?;
        let p = tree
            .predict(&xte_m)
            .map_err(|e| SynthError::Setting(format!("utility model: {e}")))?;
        for (a, b) in pred.iter_mut().zip(p) {
            *a += b / TREES as f64;
        }
    }
    let y: Vec<f64> = keep_te.iter().map(|&i| yte[i]).collect();
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let ss_res: f64 = y.iter().zip(&pred).map(|(a, b)| (a - b).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    Ok(json!({"r2": 1.0 - ss_res / ss_tot.max(1e-300)}))
}

/// The privacy metrics' embedding of rows: numerics standardised by the real table's mean
/// and standard deviation (missing → real median), categoricals as codes of the real
/// categories (one-hot distances; unseen → [`mia::UNSEEN`]).
struct Embedder {
    /// (mean, sd, median) of each numeric column.
    num: Vec<(f64, f64, f64)>,
    cats: Vec<BTreeMap<String, u32>>,
}

impl Embedder {
    fn new(real: &[Col]) -> Self {
        let (mut num, mut cats) = (Vec::new(), Vec::new());
        for c in real {
            match c {
                Col::Num(rv) => {
                    let mut ok: Vec<f64> = rv.iter().copied().filter(|x| !x.is_nan()).collect();
                    let mu = ok.iter().sum::<f64>() / ok.len().max(1) as f64;
                    let sd = (ok.iter().map(|x| (x - mu).powi(2)).sum::<f64>()
                        / ok.len().max(1) as f64)
                        .sqrt();
                    ok.sort_by(f64::total_cmp);
                    let med = if ok.is_empty() {
                        0.0
                    } else {
                        quantile(&ok, 0.5)
                    };
                    num.push((mu, if sd > 0.0 { sd } else { 1.0 }, med));
                }
                Col::Cat(rv) => cats.push(
                    rv.iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| (c.clone(), i as u32))
                        .collect(),
                ),
            }
        }
        Self { num, cats }
    }

    /// The rows of `cols`.
    fn embed(&self, cols: &[Col]) -> mia::Points {
        let n = cols.first().map_or(0, Col::len);
        let (mut num, mut cat) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (mut jn, mut jc) = (0, 0);
            for c in cols {
                match c {
                    Col::Num(v) => {
                        let (mu, sd, med) = self.num[jn];
                        num.push(((if v[i].is_nan() { med } else { v[i] }) - mu) / sd);
                        jn += 1;
                    }
                    Col::Cat(v) => {
                        cat.push(self.cats[jc].get(&v[i]).copied().unwrap_or(mia::UNSEEN));
                        jc += 1;
                    }
                }
            }
        }
        mia::Points::new(n, num, cat, self.cats.iter().map(BTreeMap::len).collect())
    }
}

fn dcr(query: &mia::Points, real: &mia::Points, sample: usize, seed: u64) -> Value {
    let take = mia::sample_indices(query.len(), sample, &mut SecureRng::from_seed(seed));
    let mut dist = mia::nearest(&query.select(&take), real, None);
    dist.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if dist.is_empty() {
            f64::NAN
        } else {
            quantile(&dist, p)
        }
    };
    json!({"n_rows_used": dist.len(), "p5": pct(0.05), "median": pct(0.5),
           "share_zero": dist.iter().filter(|&&x| x < 1e-9).count() as f64 / dist.len().max(1) as f64})
}

/// Bins of a numeric column's plot: equal widths between the real 0.5% and 99.5% quantiles.
const PLOT_BINS: usize = 30;
/// Categories drawn per column (the rest as one bar).
const PLOT_CATEGORIES: usize = 20;

/// Shares of each column's values, real and synthetic, for the report's plots: numerics in
/// [`PLOT_BINS`] bins (the tails gathered in the end bins), categoricals by the real
/// frequency (the [`PLOT_CATEGORIES`] most frequent, the rest together). Missing values are
/// a share of their own.
fn distributions(names: &[String], rc: &[Col], sc: &[Col]) -> Value {
    let mut out = serde_json::Map::new();
    for ((name, r), s) in names.iter().zip(rc).zip(sc) {
        let v = match (r, s) {
            (Col::Num(a), Col::Num(b)) => {
                let mut sorted: Vec<f64> = a.iter().copied().filter(|x| !x.is_nan()).collect();
                sorted.sort_by(f64::total_cmp);
                let (mut lo, mut hi) = if sorted.is_empty() {
                    (0.0, 1.0)
                } else {
                    (quantile(&sorted, 0.005), quantile(&sorted, 0.995))
                };
                if hi <= lo {
                    (lo, hi) = (
                        sorted.first().copied().unwrap_or(0.0),
                        sorted.last().copied().unwrap_or(1.0),
                    );
                }
                if hi <= lo {
                    (lo, hi) = (lo - 0.5, lo + 0.5);
                }
                let width = (hi - lo) / PLOT_BINS as f64;
                let shares = |v: &[f64]| {
                    let mut bins = vec![0.0; PLOT_BINS];
                    let mut missing = 0.0;
                    for &x in v {
                        if x.is_nan() {
                            missing += 1.0;
                        } else {
                            let k = ((x - lo) / width)
                                .floor()
                                .clamp(0.0, (PLOT_BINS - 1) as f64);
                            bins[k as usize] += 1.0;
                        }
                    }
                    let n = v.len().max(1) as f64;
                    bins.iter_mut().for_each(|b| *b /= n);
                    (bins, missing / n)
                };
                let ((rb, rm), (sb, sm)) = (shares(a), shares(b));
                json!({"kind": "numerical",
                       "edges": (0..=PLOT_BINS).map(|k| lo + width * k as f64).collect::<Vec<_>>(),
                       "real": rb, "synth": sb, "missing": {"real": rm, "synth": sm}})
            }
            (Col::Cat(a), Col::Cat(b)) => {
                let (fa, fb) = (freq_all(a), freq_all(b));
                let mut labels: Vec<&str> = fa.keys().copied().collect();
                labels.sort_by(|x, y| fa[y].total_cmp(&fa[x]).then(x.cmp(y)));
                let other = labels.len() > PLOT_CATEGORIES;
                labels.truncate(PLOT_CATEGORIES);
                let mut real: Vec<f64> = labels.iter().map(|l| fa[l]).collect();
                let mut synth: Vec<f64> = labels
                    .iter()
                    .map(|l| fb.get(l).copied().unwrap_or(0.0))
                    .collect();
                let shown_s: f64 = synth.iter().sum();
                let mut names: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
                if other || shown_s < 1.0 - 1e-9 {
                    names.push(if other {
                        "(other)".into()
                    } else {
                        "(not in the real table)".into()
                    });
                    real.push(1.0 - real.iter().sum::<f64>());
                    synth.push(1.0 - shown_s);
                }
                json!({"kind": "categorical", "labels": names, "real": real, "synth": synth})
            }
            _ => Value::Null,
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// Shares of every value, missing ones included.
fn freq_all(v: &[String]) -> HashMap<&str, f64> {
    let mut m: HashMap<&str, f64> = HashMap::new();
    for s in v {
        *m.entry(s.as_str()).or_default() += 1.0 / v.len().max(1) as f64;
    }
    m
}

/// Cramér's V between two coded columns (0: independent, 1: one determines the other).
fn cramers_v(a: &[usize], b: &[usize]) -> f64 {
    let mut cells: HashMap<(usize, usize), f64> = HashMap::new();
    let (mut rows, mut cols): (HashMap<usize, f64>, HashMap<usize, f64>) = Default::default();
    for (&x, &y) in a.iter().zip(b) {
        *cells.entry((x, y)).or_default() += 1.0;
        *rows.entry(x).or_default() += 1.0;
        *cols.entry(y).or_default() += 1.0;
    }
    let k = rows.len().min(cols.len());
    if k < 2 {
        return 0.0;
    }
    let phi2 = cells
        .iter()
        .map(|((x, y), c)| c * c / (rows[x] * cols[y]))
        .sum::<f64>()
        - 1.0;
    (phi2.max(0.0) / (k - 1) as f64).sqrt().min(1.0)
}

/// Cramér's V of every pair of columns on the workload's codes (numerics in 10 real-quantile
/// bins), real and synthetic: the report's heatmaps.
fn associations(names: &[String], cr: &[Vec<usize>], cs: &[Vec<usize>]) -> Value {
    let matrix = |codes: &[Vec<usize>]| -> Vec<Vec<f64>> {
        let d = codes.len();
        let mut m = vec![vec![1.0; d]; d];
        for c in combinations(d, 2) {
            let v = cramers_v(&codes[c[0]], &codes[c[1]]);
            (m[c[0]][c[1]], m[c[1]][c[0]]) = (v, v);
        }
        m
    };
    json!({"columns": names, "measure": "Cramér's V (numerics in 10 real-quantile bins)",
           "real": matrix(cr), "synth": matrix(cs)})
}

fn row_keys(cols: &[Col]) -> Vec<String> {
    let n = match cols.first() {
        Some(Col::Num(v)) => v.len(),
        Some(Col::Cat(v)) => v.len(),
        None => 0,
    };
    (0..n)
        .map(|i| {
            cols.iter()
                .map(|c| match c {
                    Col::Num(v) => format!("{:.6}", v[i]),
                    Col::Cat(v) => v[i].clone(),
                })
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect()
}

/// Scores `synth` against `real` (and the `holdout` for utility and baselines).
pub fn evaluate(
    real: &Table,
    synth: &Table,
    holdout: Option<&Table>,
    opts: &EvalOptions,
) -> Result<Value> {
    if let Some(t) = &opts.target
        && real.column(t).is_none()
    {
        return Err(SynthError::Schema(format!(
            "target column '{t}' is not in the real table"
        )));
    }
    if let Some(q) = opts
        .quasi_identifiers
        .iter()
        .find(|q| real.column(q).is_none())
    {
        return Err(SynthError::Schema(format!(
            "quasi-identifier '{q}' is not a column of the real table (its columns: {})",
            real.names.join(", ")
        )));
    }
    let classification = opts.target.as_ref().is_some_and(|t| {
        real.column(t)
            .is_some_and(|c| matches!(c, ColumnData::Text(_)) || distinct(c) <= opts.max_cat_levels)
    });
    let is_cat = infer_kinds(real, opts, classification);
    let rc = aligned(real, real, &is_cat, "real")?;
    let sc = aligned(synth, real, &is_cat, "synthetic")?;
    let hc = holdout
        .map(|h| aligned(h, real, &is_cat, "holdout"))
        .transpose()?;
    let disc = Discretizer::new(&rc);
    let sizes = disc.sizes();
    let (cr, cs) = (disc.codes(&rc), disc.codes(&sc));
    let emb = Embedder::new(&rc);
    let train_pts = emb.embed(&rc);
    let synth_pts = emb.embed(&sc);
    let hold_pts = hc.as_ref().map(|h| emb.embed(h));

    let mut per_column = serde_json::Map::new();
    let mut shapes = Vec::new();
    for ((name, r), s) in real.names.iter().zip(&rc).zip(&sc) {
        let score = match (r, s) {
            (Col::Num(a), Col::Num(b)) => 1.0 - ks_statistic(a, b),
            (Col::Cat(a), Col::Cat(b)) => 1.0 - tvd(a, b),
            _ => 0.0,
        };
        shapes.push(score);
        per_column.insert(name.clone(), json!(score));
    }
    let mut per_pair = serde_json::Map::new();
    let mut pairs = Vec::new();
    for c in combinations(rc.len(), 2) {
        let (i, j) = (c[0], c[1]);
        let (score, metric) = match (&rc[i], &rc[j], &sc[i], &sc[j]) {
            (Col::Num(a), Col::Num(b), Col::Num(x), Col::Num(y)) => (
                1.0 - (pearson(a, b) - pearson(x, y)).abs() / 2.0,
                "correlation",
            ),
            _ => (1.0 - 0.5 * marginal_l1(&cr, &cs, &sizes, &c), "contingency"),
        };
        if !score.is_nan() {
            pairs.push(score);
        }
        per_pair.insert(
            format!("{}|{}", real.names[i], real.names[j]),
            json!({"score": score, "metric": metric}),
        );
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut out = json!({
        "column_types": real.names.iter().zip(&is_cat).map(|(n, &c)| (n.clone(), json!(if c { "categorical" } else { "numerical" }))).collect::<serde_json::Map<_, _>>(),
        "quality": {"column_shapes": mean(&shapes), "column_pair_trends": mean(&pairs),
                    "per_column": per_column, "per_pair": per_pair},
        "workload": {"synth": workload(&cr, &cs, &sizes, opts)},
        "privacy": {"dcr_synth_to_train": dcr(&synth_pts, &train_pts, opts.dcr_sample, opts.seed)},
        "report": {"distributions": distributions(&real.names, &rc, &sc),
                   "associations": associations(&real.names, &cr, &cs)},
    });
    out["privacy"]["identifiability"] =
        mia::identifiability(&train_pts, &synth_pts, hold_pts.as_ref(), opts.seed);
    if let Some(h) = &hold_pts {
        out["privacy"]["membership_inference"] =
            mia::membership_audit(&train_pts, &synth_pts, h, opts.seed);
    }
    if !opts.quasi_identifiers.is_empty() {
        let pick = |t: &Table| -> Vec<Vec<String>> {
            opts.quasi_identifiers
                .iter()
                .filter_map(|q| t.column(q).map(canon))
                .collect()
        };
        out["privacy"]["k_anonymity"] =
            mia::k_anonymity(&opts.quasi_identifiers, &pick(real), &pick(synth));
    }
    let real_keys: HashSet<String> = row_keys(&rc).into_iter().collect();
    let copies = row_keys(&sc)
        .iter()
        .filter(|k| real_keys.contains(*k))
        .count() as f64
        / synth.rows().max(1) as f64;
    out["privacy"]["exact_copy_share"] = json!(copies);
    if let (Some(hc), Some(hold_pts)) = (&hc, &hold_pts) {
        let ch = disc.codes(hc);
        out["workload"]["holdout_baseline"] = workload(&cr, &ch, &sizes, opts);
        out["privacy"]["dcr_holdout_to_train_baseline"] =
            dcr(hold_pts, &train_pts, opts.dcr_sample, opts.seed);
        if let Some(t) = opts
            .target
            .as_ref()
            .and_then(|t| real.names.iter().position(|n| n == t))
        {
            let (tstr, trtr) = if classification {
                (
                    classify(&sc, hc, &rc, t, opts.seed)?,
                    classify(&rc, hc, &rc, t, opts.seed)?,
                )
            } else {
                (
                    regress(&sc, hc, &rc, t, opts.seed)?,
                    regress(&rc, hc, &rc, t, opts.seed)?,
                )
            };
            out["utility"] = json!({"task": if classification { "classification" } else { "regression" },
                "target": t_name(real, t), "model": format!("{TREES} bagged decision trees (smartcore), depth ≤ 14"),
                "tstr": tstr, "trtr": trtr});
        }
    }
    Ok(out)
}

fn t_name(real: &Table, t: usize) -> String {
    real.names[t].clone()
}
