//! Private statistics behind the encoder. Nothing learned from raw rows reaches the model's
//! encoding unaccounted: numeric ranges and quantile bins come from the schema (public) or
//! from Gaussian-noised histograms, and category sets from a Gaussian-noised histogram with a
//! release threshold (category discovery). Every histogram has L2 sensitivity 1 under
//! add/remove of a row, so the whole preprocessing is `releases` Gaussian mechanisms plus
//! one δ-only event per discovered category set, composed by the PLD accountant.
//!
//! Nullability is a fact about the rows too: when the schema leaves `nullable` open, the
//! null count is released with noise and a column is nullable when that count clears
//! [`NULL_THRESHOLD`] standard deviations. The null count rides along as one more bucket of
//! the column's first histogram (every row is still in exactly one bucket, so the
//! sensitivity stays 1) and costs nothing extra; only a column whose bins or categories are
//! all public needs a release of its own.

use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::special::ndtri;
use fedsynth_privacy::{AccountantKind, Delta, DpEvent, Epsilon, NoiseMultiplier, PrivacyError};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{Result, SynthError, column_err};
use crate::schema::{ColumnKind, ColumnSpec, Schema, Source};
use crate::table::{ColumnData, Table};

/// Quantile bins per numeric column when the schema gives none.
pub const DEFAULT_BINS: usize = 20;
/// Bins of the histograms that ranges are narrowed and quantiles read from. Few bins keep
/// the noise of running sums small (it grows like σ·√bins).
const FINE_BINS: usize = 64;
/// Powers of two spanned by the range-finding histogram: 2^-30 … 2^60 on each side of 0.
const LOG_MIN: i32 = -30;
const LOG_MAX: i32 = 60;

/// How many noise standard deviations a noisy null count must clear for a column whose
/// schema leaves `nullable` open to be treated as nullable. Below it, the few nulls a column
/// may have are encoded in its first slot (numbers) or its unseen slot (categories).
pub const NULL_THRESHOLD: f64 = 3.0;

/// How many private releases the schema needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Gaussian-noised histograms of numeric columns (sensitivity 1 each).
    pub releases: u64,
    /// Category discoveries: one Gaussian-noised histogram each (with its own, smaller
    /// noise, see [`CATEGORY_WEIGHT`]) plus a δ-only event for its threshold.
    pub discoveries: u64,
}

/// How much more of the preprocessing budget (in zCDP's ρ, so σ shrinks by its square root)
/// a category discovery gets than one numeric histogram. A category that misses the
/// discovery threshold can never be generated, and the threshold sits about 5.5σ above
/// zero, while a numeric histogram only places bin edges, which tolerate more noise: at
/// ε = 0.1 for preprocessing on 43,000 rows, the even split dropped a category of 3% of the
/// rows, this one keeps it.
pub const CATEGORY_WEIGHT: f64 = 4.0;

impl Plan {
    /// Counts the releases `schema` needs: three per numeric column without bounds (coarse
    /// range, narrowed range, quantiles), one per numeric column with bounds but no edges,
    /// one discovery per categorical column without a category set, and one null count per
    /// column whose `nullable` is open and whose facts are otherwise all public (elsewhere
    /// the null count is a bucket of the column's first histogram).
    pub fn for_schema(schema: &Schema) -> Self {
        let mut plan = Self::default();
        for c in &schema.columns {
            let open_nulls = u64::from(c.nullable.is_none());
            match c.kind {
                ColumnKind::Continuous | ColumnKind::Integer => {
                    plan.releases += match (&c.edges, c.min) {
                        (Some(_), _) => open_nulls,
                        (None, Some(_)) => 1,
                        (None, None) => 3,
                    };
                }
                ColumnKind::Categorical => {
                    if c.categories.is_none() {
                        plan.discoveries += 1;
                    } else {
                        plan.releases += open_nulls;
                    }
                }
            }
        }
        plan
    }

    /// Whether nothing private needs to be released.
    pub fn is_free(&self) -> bool {
        self.releases == 0 && self.discoveries == 0
    }
}

/// Noise settings of the preprocessing releases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    /// Standard deviation of the Gaussian noise on each numeric histogram count.
    pub sigma: f64,
    /// Standard deviation of the Gaussian noise on each category count.
    pub sigma_categories: f64,
    /// Probability bound δ for a category of one row to pass the discovery threshold.
    pub threshold_delta: f64,
}

impl Noise {
    /// Exact statistics (no DP: a run with ε = ∞, or nothing private to estimate).
    pub fn exact() -> Self {
        Self {
            sigma: 0.0,
            sigma_categories: 0.0,
            threshold_delta: 0.5,
        }
    }

    /// Numeric noise `sigma`, category noise `sigma / √CATEGORY_WEIGHT`.
    fn weighted(sigma: f64, threshold_delta: f64) -> Self {
        Self {
            sigma,
            sigma_categories: sigma / CATEGORY_WEIGHT.sqrt(),
            threshold_delta,
        }
    }

    /// The discovery threshold on noisy counts: a category seen once passes with
    /// probability at most `threshold_delta`.
    pub fn threshold(&self) -> f64 {
        if self.sigma_categories == 0.0 {
            return 0.5; // exact counts (no DP): every category seen at least once
        }
        1.0 + self.sigma_categories * -ndtri(self.threshold_delta)
    }

    /// The privacy events of a plan under these settings.
    pub fn events(&self, plan: Plan) -> Result<Vec<DpEvent>> {
        let mut events = Vec::new();
        if plan.releases > 0 {
            events.push(DpEvent::gaussian(1.0, self.sigma, plan.releases)?);
        }
        if plan.discoveries > 0 {
            events.push(DpEvent::gaussian(
                1.0,
                self.sigma_categories,
                plan.discoveries,
            )?);
            events.push(DpEvent::approx_dp(
                0.0,
                self.threshold_delta,
                plan.discoveries,
            )?);
        }
        Ok(events)
    }

    /// The smallest numeric σ (to 10⁻³ relative) for which the plan costs at most ε at δ
    /// (category noise following it, see [`CATEGORY_WEIGHT`]); the threshold δ is a tenth
    /// of δ spread over the discoveries.
    pub fn calibrate(plan: Plan, epsilon: Epsilon, delta: Delta) -> Result<Self> {
        let threshold_delta = delta.get() / 10.0 / plan.discoveries.max(1) as f64;
        let cost = |sigma: f64| -> Result<f64> {
            let noise = Self::weighted(sigma, threshold_delta);
            Ok(AccountantKind::Pld.epsilon(&noise.events(plan)?, delta)?)
        };
        let (mut lo, mut hi) = (0.5_f64, 4.0_f64);
        let mut guard = 0;
        while cost(hi)? > epsilon.get() {
            lo = hi;
            hi *= 2.0;
            guard += 1;
            if guard > 30 {
                return Err(PrivacyError::Calibration(format!(
                    "no noise level meets ε={epsilon} for preprocessing"
                ))
                .into());
            }
        }
        while (hi - lo) / hi > 1e-3 {
            let mid = 0.5 * (lo + hi);
            if cost(mid)? <= epsilon.get() {
                hi = mid
            } else {
                lo = mid
            }
        }
        NoiseMultiplier::new(hi)?;
        NoiseMultiplier::new(hi / CATEGORY_WEIGHT.sqrt())?;
        Ok(Self::weighted(hi, threshold_delta))
    }
}

fn noisy(count: f64, sigma: f64, rng: &mut SecureRng) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    count + sigma * z
}

/// Whether a column is nullable, from its null count released with noise `sigma` (exact
/// when `sigma` is 0).
fn nullable_from(nulls: usize, sigma: f64, rng: &mut SecureRng) -> bool {
    if sigma == 0.0 {
        return nulls > 0;
    }
    noisy(nulls as f64, sigma, rng) > NULL_THRESHOLD * sigma
}

/// Index of the range-finding bucket of a value: negative powers of two, zero, positive.
fn log_bucket(v: f64) -> usize {
    let span = (LOG_MAX - LOG_MIN + 1) as usize;
    if v.abs() < 2f64.powi(LOG_MIN) {
        return span;
    }
    let k = (v.abs().log2().floor() as i32).clamp(LOG_MIN, LOG_MAX);
    let idx = (k - LOG_MIN) as usize;
    if v < 0.0 {
        span - 1 - idx
    } else {
        span + 1 + idx
    }
}

/// The interval a range-finding bucket covers.
fn log_bucket_edges(b: usize) -> (f64, f64) {
    let span = (LOG_MAX - LOG_MIN + 1) as usize;
    if b == span {
        return (-(2f64.powi(LOG_MIN)), 2f64.powi(LOG_MIN));
    }
    if b < span {
        let k = LOG_MIN + (span - 1 - b) as i32;
        (-(2f64.powi(k + 1)), -(2f64.powi(k)))
    } else {
        let k = LOG_MIN + (b - span - 1) as i32;
        (2f64.powi(k), 2f64.powi(k + 1))
    }
}

/// DP range of a numeric column: the run of power-of-two buckets around the fullest one
/// (see [`contiguous_run`]; thresholds 4σ and σ).
fn private_range(
    name: &str,
    values: &[f64],
    noise: &Noise,
    rng: &mut SecureRng,
) -> Result<(f64, f64)> {
    let n_buckets = 2 * (LOG_MAX - LOG_MIN + 1) as usize + 1;
    let mut counts = vec![0.0; n_buckets];
    for &v in values {
        counts[log_bucket(v)] += 1.0;
    }
    let noisy_counts: Vec<f64> = counts.iter().map(|&c| noisy(c, noise.sigma, rng)).collect();
    let (strong, weak) = if noise.sigma == 0.0 {
        (0.0, 0.0)
    } else {
        (4.0 * noise.sigma, noise.sigma)
    };
    let Some((first, last)) = contiguous_run(&noisy_counts, strong, weak) else {
        return Err(column_err(
            name,
            "too few rows to estimate its range privately; give min and max in the schema",
        ));
    };
    Ok((log_bucket_edges(first).0, log_bucket_edges(last).1))
}

/// The run of bins around the fullest one: it grows through bins that clear `strong`
/// (bridging gaps of up to two bins), then through neighbours that clear `weak`. The weak
/// threshold keeps sparse but real tails; an isolated noisy bin far away is never reached.
fn contiguous_run(counts: &[f64], strong: f64, weak: f64) -> Option<(usize, usize)> {
    let n = counts.len();
    let peak = (0..n)
        .filter(|&i| counts[i] > strong)
        .max_by(|&a, &b| counts[a].total_cmp(&counts[b]))?;
    let (mut first, mut last) = (peak, peak);
    while let Some(g) = (1..=3).find(|&g| first >= g && counts[first - g] > strong) {
        first -= g;
    }
    while let Some(g) = (1..=3).find(|&g| last + g < n && counts[last + g] > strong) {
        last += g;
    }
    while first >= 1 && counts[first - 1] > weak {
        first -= 1;
    }
    while last + 1 < n && counts[last + 1] > weak {
        last += 1;
    }
    Some((first, last))
}

/// Noisy running sum of a `FINE_BINS` histogram of `values` over [lo, hi], made monotone.
fn noisy_cdf(values: &[f64], lo: f64, hi: f64, noise: &Noise, rng: &mut SecureRng) -> Vec<f64> {
    let width = (hi - lo) / FINE_BINS as f64;
    let mut counts = vec![0.0; FINE_BINS];
    for &v in values {
        let i = (((v.clamp(lo, hi) - lo) / width) as usize).min(FINE_BINS - 1);
        counts[i] += 1.0;
    }
    let mut cdf = Vec::with_capacity(FINE_BINS + 1);
    cdf.push(0.0_f64);
    let mut run = 0.0_f64;
    for c in &counts {
        run = (run + noisy(*c, noise.sigma, rng)).max(*cdf.last().unwrap_or(&0.0));
        cdf.push(run);
    }
    cdf
}

/// The running sum over [lo, hi] at `x` (linear within a bin).
fn cdf_at(cdf: &[f64], lo: f64, hi: f64, x: f64) -> f64 {
    let bins = cdf.len() - 1;
    let pos = ((x - lo) / (hi - lo) * bins as f64).clamp(0.0, bins as f64);
    let i = (pos.floor() as usize).min(bins - 1);
    cdf[i] + (pos - i as f64) * (cdf[i + 1] - cdf[i])
}

/// The point below which a share `q` of the mass of a running sum over [lo, hi] lies.
fn cdf_quantile(cdf: &[f64], lo: f64, hi: f64, q: f64) -> f64 {
    let bins = cdf.len() - 1;
    let width = (hi - lo) / bins as f64;
    let total = cdf[bins].max(1.0);
    let target = q * total;
    let i = cdf.partition_point(|&c| c < target).clamp(1, bins);
    let (c0, c1) = (cdf[i - 1], cdf[i]);
    let frac = if c1 > c0 {
        ((target - c0) / (c1 - c0)).clamp(0.0, 1.0)
    } else {
        0.5
    };
    lo + width * ((i - 1) as f64 + frac)
}

/// Bins of the histogram that narrows a coarse range: few, so that each holds enough rows
/// to clear the noise even in small tables.
const NARROW_BINS: usize = 16;

/// Narrows a coarse range to the run of histogram bins around the fullest one (see
/// [`contiguous_run`]; thresholds 3σ and σ), widened by one bin on each side.
fn narrow_range(
    values: &[f64],
    lo: f64,
    hi: f64,
    noise: &Noise,
    rng: &mut SecureRng,
) -> (f64, f64) {
    let width = (hi - lo) / NARROW_BINS as f64;
    let mut counts = vec![0.0; NARROW_BINS];
    for &v in values {
        counts[(((v.clamp(lo, hi) - lo) / width) as usize).min(NARROW_BINS - 1)] += 1.0;
    }
    let noisy_counts: Vec<f64> = counts.iter().map(|&c| noisy(c, noise.sigma, rng)).collect();
    let (strong, weak) = if noise.sigma == 0.0 {
        (0.0, 0.0)
    } else {
        (3.0 * noise.sigma, noise.sigma)
    };
    match contiguous_run(&noisy_counts, strong, weak) {
        Some((first, last)) => {
            let a = lo + width * first.saturating_sub(1) as f64;
            let b = lo + width * (last + 2).min(NARROW_BINS) as f64;
            (a, b)
        }
        None => (lo, hi),
    }
}

/// DP quantile edges of a numeric column within [lo, hi], read from a noisy histogram, and
/// the share of the rows in each bin read from the same histogram (post-processing).
fn private_edges(
    values: &[f64],
    lo: f64,
    hi: f64,
    bins: usize,
    integer: bool,
    noise: &Noise,
    rng: &mut SecureRng,
) -> (Vec<f64>, Vec<f64>) {
    let cdf = noisy_cdf(values, lo, hi, noise, rng);
    let mut edges: Vec<f64> = (0..=bins)
        .map(|j| {
            if j == 0 {
                lo
            } else if j == bins {
                hi
            } else {
                cdf_quantile(&cdf, lo, hi, j as f64 / bins as f64)
            }
        })
        .collect();
    if integer {
        for e in &mut edges {
            *e = e.round() - 0.5;
        }
        let last = edges.len() - 1;
        edges[last] = hi.round() + 0.5;
    }
    edges.dedup_by(|a, b| *a <= *b);
    if edges.len() < 2 {
        let mid = edges.first().copied().unwrap_or(lo);
        edges = vec![mid - 0.5, mid + 0.5];
    }
    // Every value was counted (clamped into [lo, hi]), as the encoder clamps it into the
    // outer bins: the first bin starts at 0 and the last one ends at the total.
    let last = edges.len() - 1;
    let mass = |j: usize| match j {
        0 => 0.0,
        j if j == last => cdf[cdf.len() - 1],
        j => cdf_at(&cdf, lo, hi, edges[j]),
    };
    let frequencies = (0..last)
        .map(|j| (mass(j + 1) - mass(j)).max(0.0))
        .collect();
    (edges, frequencies)
}

/// Private category discovery: noisy counts of the values present; those above the
/// threshold are released with their noisy counts, most frequent first.
fn private_categories(values: &[String], noise: &Noise, rng: &mut SecureRng) -> Vec<(String, f64)> {
    let mut counts: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v.as_str()).or_default() += 1.0;
    }
    let threshold = noise.threshold();
    let mut kept: Vec<(f64, String)> = counts
        .into_iter()
        .map(|(k, c)| (noisy(c, noise.sigma_categories, rng), k.to_string()))
        .filter(|(c, _)| *c > threshold)
        .collect();
    kept.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    kept.into_iter().map(|(c, k)| (k, c)).collect()
}

/// Text form of a categorical value (integers and floats declared categorical).
pub fn category_key(data: &ColumnData, i: usize) -> Option<String> {
    match data {
        ColumnData::Text(v) => v[i].clone(),
        ColumnData::Int(v) => v[i].map(|x| x.to_string()),
        ColumnData::Float(v) => v[i].map(|x| x.to_string()),
    }
}

/// Completes `schema` with the facts the encoder needs, estimating privately (with `noise`)
/// whatever the schema does not declare. Returns the completed schema.
pub fn complete_schema(
    table: &Table,
    schema: &Schema,
    noise: Option<Noise>,
    rng: &mut SecureRng,
) -> Result<Schema> {
    let need = |what: &str| -> Result<Noise> {
        noise.ok_or_else(|| {
            SynthError::Setting(format!(
                "{what} needs a privacy budget (ε > 0) or public values in the schema"
            ))
        })
    };
    let mut out = schema.clone();
    for spec in &mut out.columns {
        let data = table.column(&spec.name).ok_or_else(|| {
            SynthError::Schema(format!("column '{}' is not in the input", spec.name))
        })?;
        // An open `nullable` is decided from a noisy null count, in the column's first
        // histogram (same noise, one more bucket) or in a release of its own.
        let open_nulls = spec.nullable.is_none();
        let nulls = data.null_count();
        match spec.kind {
            ColumnKind::Categorical => {
                if spec.categories.is_none() {
                    let noise = need("discovering categories")?;
                    let values: Vec<String> = (0..data.len())
                        .filter_map(|i| category_key(data, i))
                        .collect();
                    let cats = private_categories(&values, &noise, rng);
                    if open_nulls {
                        spec.nullable = Some(nullable_from(nulls, noise.sigma_categories, rng));
                    }
                    if cats.is_empty() {
                        return Err(column_err(
                            &spec.name,
                            "no category is frequent enough to be released privately; list the categories in the schema",
                        ));
                    }
                    spec.frequencies = Some(cats.iter().map(|(_, c)| *c).collect());
                    spec.categories = Some(cats.into_iter().map(|(k, _)| k).collect());
                    spec.source = Source::Dp;
                } else if open_nulls {
                    let noise = need("estimating whether a column has nulls")?;
                    spec.nullable = Some(nullable_from(nulls, noise.sigma, rng));
                }
            }
            ColumnKind::Continuous | ColumnKind::Integer => {
                if open_nulls {
                    let noise = need("estimating whether a column has nulls")?;
                    spec.nullable = Some(nullable_from(nulls, noise.sigma, rng));
                }
                complete_numeric(spec, data, need, rng)?;
            }
        }
    }
    Ok(out)
}

fn complete_numeric(
    spec: &mut ColumnSpec,
    data: &ColumnData,
    need: impl Fn(&str) -> Result<Noise>,
    rng: &mut SecureRng,
) -> Result<()> {
    if spec.edges.is_some() {
        let edges = spec.edges.as_ref().map(Vec::clone).unwrap_or_default();
        spec.min = Some(edges[0]);
        spec.max = Some(edges[edges.len() - 1]);
        return Ok(());
    }
    let values: Vec<f64> = (0..data.len()).filter_map(|i| data.number(i)).collect();
    let noise = need("estimating numeric bins")?;
    let (lo, hi) = match (spec.min, spec.max) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => {
            spec.source = Source::Dp;
            let (lo, hi) = private_range(&spec.name, &values, &noise, rng)?;
            narrow_range(&values, lo, hi, &noise, rng)
        }
    };
    let integer = spec.kind == ColumnKind::Integer;
    let (edges, frequencies) = private_edges(&values, lo, hi, DEFAULT_BINS, integer, &noise, rng);
    spec.frequencies = (frequencies.iter().sum::<f64>() > 0.0).then_some(frequencies);
    spec.source = Source::Dp;
    spec.min = Some(edges[0]);
    spec.max = Some(edges[edges.len() - 1]);
    spec.edges = Some(edges);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_cover_their_values() {
        for v in [-1e9, -3.5, -1.0, 0.0, 1e-12, 0.3, 1.0, 2.0, 17.0, 5e12] {
            let (lo, hi) = log_bucket_edges(log_bucket(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
        }
    }

    #[test]
    fn private_edges_track_quantiles() {
        let mut rng = SecureRng::from_seed(3);
        let values: Vec<f64> = (0..20_000).map(|i| (i % 1000) as f64 / 10.0).collect();
        let noise = Noise {
            sigma: 20.0,
            sigma_categories: 10.0,
            threshold_delta: 1e-8,
        };
        let (lo, hi) = private_range("x", &values, &noise, &mut rng).unwrap();
        assert!(lo <= 0.5 && lo >= -1.0 && hi == 128.0, "{lo} {hi}");
        let (lo, hi) = narrow_range(&values, lo, hi, &noise, &mut rng);
        assert!(lo < 1.0 && hi > 99.0 && hi < 120.0, "{lo} {hi}");
        let (edges, frequencies) = private_edges(&values, lo, hi, 10, false, &noise, &mut rng);
        assert_eq!(edges.len(), 11);
        assert_eq!(frequencies.len(), 10);
        let total: f64 = frequencies.iter().sum();
        for f in &frequencies {
            assert!((f / total - 0.1).abs() < 0.01, "{f} of {total}");
        }
        for (j, e) in edges.iter().enumerate().skip(1).take(9) {
            assert!((e - 10.0 * j as f64).abs() < 2.0, "edge {j}: {e}");
        }
    }

    #[test]
    fn nullability_is_a_noisy_release_not_a_look() {
        // One null in 5,000 rows must not decide the schema (it would reveal that row); a
        // column that is 40% null must still be found nullable.
        let n = 5000;
        let one_null: Vec<Option<f64>> = (0..n)
            .map(|i| (i != 17).then_some(i as f64 % 97.0))
            .collect();
        let many_nulls: Vec<Option<String>> = (0..n)
            .map(|i| (i % 5 >= 2).then(|| ["a", "b"][i % 2].to_string()))
            .collect();
        let table = Table {
            names: vec!["x".into(), "c".into(), "k".into()],
            columns: vec![
                ColumnData::Float(one_null.clone()),
                ColumnData::Text(many_nulls),
                ColumnData::Float(one_null),
            ],
        };
        let mut schema = Schema::infer(&table);
        // Column k: public edges, so its null count is a release of its own.
        schema.columns[2].edges = Some(vec![0.0, 50.0, 100.0]);
        let plan = Plan::for_schema(&schema);
        assert_eq!(
            plan,
            Plan {
                releases: 4,
                discoveries: 1
            }
        );
        let noise = Noise {
            sigma: 20.0,
            sigma_categories: 10.0,
            threshold_delta: 1e-8,
        };
        for seed in 0..20 {
            let done = complete_schema(
                &table,
                &schema,
                Some(noise),
                &mut SecureRng::from_seed(seed),
            )
            .unwrap();
            assert_eq!(done.columns[0].nullable, Some(false), "seed {seed}");
            assert_eq!(done.columns[1].nullable, Some(true), "seed {seed}");
            assert_eq!(done.columns[2].nullable, Some(false), "seed {seed}");
        }
        // Without noise (ε = ∞) the exact answer; a declared value is kept as declared.
        let exact = complete_schema(
            &table,
            &schema,
            Some(Noise::exact()),
            &mut SecureRng::from_seed(1),
        )
        .unwrap();
        assert_eq!(exact.columns[0].nullable, Some(true));
        schema.columns[0].nullable = Some(true);
        assert_eq!(
            Plan::for_schema(&schema),
            Plan {
                releases: 4,
                discoveries: 1
            }
        );
        schema.columns[2].nullable = Some(false);
        assert_eq!(
            Plan::for_schema(&schema),
            Plan {
                releases: 3,
                discoveries: 1
            }
        );
        let done =
            complete_schema(&table, &schema, Some(noise), &mut SecureRng::from_seed(2)).unwrap();
        assert_eq!(done.columns[0].nullable, Some(true));
    }
}
