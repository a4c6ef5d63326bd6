//! Marginal calibration of generated rows: the generator proposes more rows than asked for,
//! raking (iterative proportional fitting) weights them so that every column with known
//! frequencies (public, or the DP estimates made while completing the schema) has the
//! shares it should, and systematic resampling keeps as many rows as asked for.
//!
//! The weights are bounded by the oversampling factor, so no proposed row is kept twice:
//! the output is a subset of the proposals, and what the model learned about the
//! dependencies between columns is kept while the marginals it got wrong under DP noise are
//! mended. It reads no real row: pure post-processing, at no privacy cost.

use fedsynth_privacy::rng::SecureRng;
use rand::Rng;

/// Most sweeps of iterative proportional fitting.
const SWEEPS: usize = 25;
/// Raking stops early once a whole sweep moves no slot's weight by more than this factor
/// (relative): every margin is then met as closely as the cap allows, and further sweeps
/// change the kept rows only where a weight sits within this factor of a resampling step.
const CONVERGED: f64 = 1e-4;
/// Smallest weight relative to the mean (keeps every slot reachable while raking).
const MIN_WEIGHT: f64 = 1e-3;

/// A column to calibrate: the slot of each proposed row, and the target share of each of
/// the first `target.len()` slots (bins or categories, then the null slot where the schema
/// has a noisy null count, then an id's pseudonyms where it has their count). Rows in later
/// slots, or in a slot whose target is NaN (a null slot between an id's categories and its
/// pseudonyms), keep their total weight.
#[derive(Clone, Copy)]
pub struct Margin<'a> {
    /// Slot of each proposed row.
    pub slots: &'a [usize],
    /// Target shares (any scale; normalised here).
    pub target: &'a [f64],
}

impl Margin<'_> {
    /// Per slot, the sum of `weight(row)` over the rows in it; 0 in the slots without a
    /// finite target (free, like the slots past the end).
    fn held(&self, weight: impl Fn(usize) -> f64) -> Vec<f64> {
        let k = self.target.len();
        let mut held = vec![0.0; k];
        for (r, &s) in self.slots.iter().enumerate() {
            if s < k && self.target[s].is_finite() {
                held[s] += weight(r);
            }
        }
        held
    }

    /// The slot of each row as a u32, the free ones (past the targets, or without a finite
    /// target) all at `target.len()`.
    fn folded(&self) -> Vec<u32> {
        let k = self.target.len();
        self.slots
            .iter()
            .map(|&s| {
                if s < k && self.target[s].is_finite() {
                    s as u32
                } else {
                    k as u32
                }
            })
            .collect()
    }

    /// The sum of the finite targets.
    fn target_total(&self) -> f64 {
        self.target.iter().filter(|t| t.is_finite()).sum()
    }

    /// The slots raking aims at, given what the rows `held` of each: a finite target that
    /// weights up to `max_weight` can reach. A slot the rows hold too little of is left
    /// free: chasing it would pin every other row at the floor and undo the other margins
    /// (a constant year whose noisy bins spread its mass over 16 years asked for 94% of the
    /// rows in years the model never proposes).
    fn reachable(&self, held: &[f64], max_weight: f64) -> Vec<bool> {
        let all_held: f64 = held.iter().sum();
        let all_target = self.target_total();
        (0..self.target.len())
            .map(|s| {
                let t = self.target[s];
                t.is_finite() && held[s] > 0.0 && t / all_target <= max_weight * held[s] / all_held
            })
            .collect()
    }
}

/// E|Z| for a standard normal Z, √(2/π): the mean absolute error, per unit of σ, of a
/// Gaussian-noised count.
pub const MEAN_ABS_NORMAL: f64 = 0.797_884_560_802_865_4;

/// Whether the unweighted proposals of a two-way margin `m` stand farther from its target
/// than the target's own noise explains: their total variation exceeds what Gaussian noise
/// of `sigma` rows per cell and the prior of [`pair_shares`] (about σ per cell) move a
/// target, `cells · σ · (√(2/π) + 1) / 2` rows over the target's total. A margin the model
/// already meets within that is left out of raking, which would only move the rows toward
/// the noise (caravan's demographic columns, whose links the model learns). Always true of
/// exact margins (`sigma` 0). Reads released targets and generated rows only.
pub fn pair_informative(m: &Margin<'_>, sigma: f64) -> bool {
    if !(sigma > 0.0) {
        return true;
    }
    let proposed = m.held(|_| 1.0);
    let (held, want): (f64, f64) = (proposed.iter().sum(), m.target_total());
    if !(held > 0.0) || !(want > 0.0) {
        return false;
    }
    let gap: f64 = proposed
        .iter()
        .zip(m.target)
        .map(|(&h, &t)| (h / held - t.max(0.0) / want).abs())
        .sum::<f64>()
        / 2.0;
    let cells = m.target.len() as f64;
    let noise = cells * sigma * (MEAN_ABS_NORMAL + 1.0) / 2.0 / want;
    gap > noise
}

/// Target shares of a two-way margin (`rows` × `cols` cells, row-major) from its noisy
/// counts (Gaussian noise of standard deviation `sigma` on each): negative counts become 0,
/// then every cell gets a prior mass of `sigma` on average, spread as the product of the two
/// one-way margins, so a cell whose count the noise hides is pulled toward independence
/// rather than to 0 (which would leave its rows unreachable). Exact counts (`sigma` 0) are
/// kept as they are. Post-processing of the noisy counts only.
pub fn pair_shares(counts: &[f64], rows: usize, cols: usize, sigma: f64) -> Vec<f64> {
    let clamped: Vec<f64> = counts
        .iter()
        .map(|&c| if c.is_finite() { c.max(0.0) } else { 0.0 })
        .collect();
    let total: f64 = clamped.iter().sum();
    if !(sigma > 0.0) || rows * cols != clamped.len() {
        return clamped;
    }
    if !(total > 0.0) {
        return vec![1.0; clamped.len()];
    }
    let mut row_sums = vec![0.0; rows];
    let mut col_sums = vec![0.0; cols];
    for (i, &c) in clamped.iter().enumerate() {
        row_sums[i / cols] += c;
        col_sums[i % cols] += c;
    }
    let prior = sigma * (rows * cols) as f64 / (total * total);
    clamped
        .iter()
        .enumerate()
        .map(|(i, &c)| c + prior * row_sums[i / cols] * col_sums[i % cols])
        .collect()
}

/// Most sweeps of [`fit_to_one_way`] ...
const FIT_SWEEPS: usize = 200;
/// ... which stops once a sweep moves no cell by more than this factor (relative).
const FIT_CONVERGED: f64 = 1e-10;

/// A two-way margin's shares (`row_shares.len()` × `col_shares.len()` cells, row-major)
/// fitted by iterative proportional fitting to its two columns' one-way shares (per group of
/// slots; `None` where the column's release gives the group no share: its mass stays as it
/// is). The margin's own row and column sums carry the noise of every cell in them (σ·√k for
/// k cells), its columns' one-way releases far less, and raking aims at both: an
/// inconsistent pair of targets leaves the output wherever the last sweep put it (a target
/// class 5 points off its released share, its 1-way error eight times the
/// independent-columns baseline's, in Wage at ε = 1). Fitting keeps the margin's odds ratios,
/// its dependence, and takes its one-way sums from the releases that measure them best.
/// Post-processing of released shares only.
pub fn fit_to_one_way(shares: &mut [f64], row_shares: &[Option<f64>], col_shares: &[Option<f64>]) {
    let (rows, cols) = (row_shares.len(), col_shares.len());
    if rows * cols != shares.len() || shares.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return;
    }
    // One side's factors: each group with a share gets the part of the mass of all such
    // groups that its share asks for.
    let factors = |sums: &[f64], want: &[Option<f64>]| -> Vec<f64> {
        let fixed: Vec<usize> = (0..sums.len())
            .filter(|&i| want[i].is_some_and(|w| w.is_finite() && w >= 0.0))
            .collect();
        let mass: f64 = fixed.iter().map(|&i| sums[i]).sum();
        let asked: f64 = fixed.iter().map(|&i| want[i].unwrap_or(0.0)).sum();
        let mut f = vec![1.0; sums.len()];
        if mass > 0.0 && asked > 0.0 {
            for &i in &fixed {
                if sums[i] > 0.0 {
                    f[i] = want[i].unwrap_or(0.0) / asked * mass / sums[i];
                }
            }
        }
        f
    };
    for _ in 0..FIT_SWEEPS {
        let mut moved: f64 = 0.0;
        let row_sums: Vec<f64> = shares.chunks(cols).map(|r| r.iter().sum()).collect();
        let fr = factors(&row_sums, row_shares);
        let mut col_sums = vec![0.0; cols];
        for (i, s) in shares.iter_mut().enumerate() {
            *s *= fr[i / cols];
            col_sums[i % cols] += *s;
        }
        let fc = factors(&col_sums, col_shares);
        for (i, s) in shares.iter_mut().enumerate() {
            *s *= fc[i % cols];
        }
        for f in fr.iter().chain(&fc) {
            moved = moved.max((f - 1.0).abs());
        }
        if moved <= FIT_CONVERGED {
            break;
        }
    }
}

/// Raking weights for `rows` proposals: scaled to mean 1 after each sweep, then each clamped
/// to [`MIN_WEIGHT`, `max_weight`] (so their mean falls below 1 where the cap binds); at
/// most [`SWEEPS`] sweeps, fewer once one changes no weight by more than [`CONVERGED`].
pub fn raking_weights(rows: usize, margins: &[Margin<'_>], max_weight: f64) -> Vec<f64> {
    // Each margin's slot per row as a u32, every free slot (past the targets, or without a
    // finite one) folded into one slot past the end whose ratio stays 1: the sweeps' loops
    // then run without branches.
    let folded: Vec<Vec<u32>> = margins.iter().map(Margin::folded).collect();
    let mut w = vec![1.0; rows];
    let mut before = vec![1.0; rows];
    for _ in 0..SWEEPS {
        before.copy_from_slice(&w);
        for (m, slots) in margins.iter().zip(&folded) {
            let k = m.target.len();
            let mut current = held_by(slots, k + 1, &w);
            current.truncate(k);
            let all_current: f64 = current.iter().sum();
            if k == 0 || !(m.target_total() > 0.0) || !(all_current > 0.0) {
                continue;
            }
            let reachable = m.reachable(&current, max_weight);
            let target_total: f64 = (0..k).filter(|&s| reachable[s]).map(|s| m.target[s]).sum();
            let total: f64 = (0..k).filter(|&s| reachable[s]).map(|s| current[s]).sum();
            if !(target_total > 0.0) {
                continue;
            }
            let ratio: Vec<f64> = (0..=k)
                .map(|s| {
                    if s < k && reachable[s] {
                        m.target[s] / target_total * total / current[s]
                    } else {
                        1.0
                    }
                })
                .collect();
            for (x, &s) in w.iter_mut().zip(slots) {
                *x *= ratio[s as usize];
            }
        }
        let mean = w.iter().sum::<f64>() / rows.max(1) as f64;
        for x in &mut w {
            *x = (*x / mean).clamp(MIN_WEIGHT, max_weight);
        }
        let moved = w
            .iter()
            .zip(&before)
            .map(|(a, b)| (a / b - 1.0).abs())
            .fold(0.0, f64::max);
        if moved <= CONVERGED {
            break;
        }
    }
    w
}

/// A margin's target moved only part of the way from where the rows stand: per slot,
/// `(1 − part)` times the share the rows hold under `weights` plus `part` times the target's
/// share (non-finite targets, the free slots, kept as they are). Raking to it asks for
/// weights between the ones given (`part` 0) and the full margin's (`part` 1): where the
/// proposals are too far from a margin to meet it whole, a part of its dependence can still
/// be kept (see [`crate::encoder::Encoder::calibrate_keeping`]).
pub fn tempered(m: &Margin<'_>, weights: &[f64], part: f64) -> Vec<f64> {
    let held = m.held(|r| weights[r]);
    let (now, want) = (held.iter().sum::<f64>(), m.target_total());
    if !(now > 0.0) || !(want > 0.0) {
        return m.target.to_vec();
    }
    m.target
        .iter()
        .zip(&held)
        .map(|(&t, &h)| {
            if t.is_finite() {
                (1.0 - part) * h / now + part * t.max(0.0) / want
            } else {
                t
            }
        })
        .collect()
}

/// Kish's effective sample size of `weights`: (Σw)² / Σw².
pub fn effective_rows(weights: &[f64]) -> f64 {
    let sum: f64 = weights.iter().sum();
    let squares: f64 = weights.iter().map(|w| w * w).sum();
    if squares > 0.0 {
        sum * sum / squares
    } else {
        0.0
    }
}

/// Per slot (of `slots` slots), the sum of the weights `w` of the rows in it. Four partial
/// sums, added in a fixed order: rows of one slot in a run (a constant column's) would
/// otherwise wait on each other's addition.
fn held_by(rows: &[u32], slots: usize, w: &[f64]) -> Vec<f64> {
    let mut parts = vec![0.0; 4 * slots];
    let (quads, rest) = (rows.chunks_exact(4), rows.len() / 4 * 4);
    for (s, x) in quads.zip(w.chunks_exact(4)) {
        parts[s[0] as usize] += x[0];
        parts[slots + s[1] as usize] += x[1];
        parts[2 * slots + s[2] as usize] += x[2];
        parts[3 * slots + s[3] as usize] += x[3];
    }
    for (s, x) in rows[rest..].iter().zip(&w[rest..]) {
        parts[*s as usize] += x;
    }
    (0..slots)
        .map(|s| parts[s] + parts[slots + s] + parts[2 * slots + s] + parts[3 * slots + s])
        .collect()
}

/// How many times the mean total variation that noise alone gives a margin its gap must
/// exceed to be more than noise: for k cells the noise's share of the gap has mean
/// 0.4·k·σ / total and standard deviation about 0.3·√k·σ / total, and clamping negative
/// counts at zero adds up to its mean again; three means stand above both at ten cells.
pub const BEYOND: f64 = 3.0;

/// Whether some margin's shares under `weights` stand farther from its target shares than
/// the noise of the target's counts explains: [`excess_gap`] above 0 for one of them.
/// Margins whose counts carry more noise than signal are met as well as they can be;
/// chasing them further fits their noise.
pub fn beyond_noise(margins: &[Margin<'_>], weights: &[f64], max_weight: f64, sigma: f64) -> bool {
    margins
        .iter()
        .any(|m| excess_gap(m, weights, max_weight, sigma) > 0.0)
}

/// How far margin `m`'s shares under `weights` stand from its target shares (total
/// variation over the slots raking aims at with weights up to `max_weight`) beyond
/// [`BEYOND`] times the mean the noise of its counts gives: Gaussian noise of σ = `sigma`
/// rows on each of its k aimed cells moves the shares by 0.4·k·σ / total (E|N(0, σ)| =
/// σ·√(2/π), halved). Negative where the gap is within that; 0 for an empty margin.
pub fn excess_gap(m: &Margin<'_>, weights: &[f64], max_weight: f64, sigma: f64) -> f64 {
    let current = m.held(|r| weights[r]);
    let proposed = m.held(|_| 1.0);
    if !(proposed.iter().sum::<f64>() > 0.0) || !(m.target_total() > 0.0) {
        return 0.0;
    }
    // The slots raking aims at: a target that no weight within the cap reaches (a column
    // whose noisy bins put mass where the model never goes) is no reason for more
    // proposals.
    let reachable = m.reachable(&proposed, max_weight);
    let aimed: Vec<usize> = (0..m.target.len()).filter(|&s| reachable[s]).collect();
    let now: f64 = aimed.iter().map(|&s| current[s]).sum();
    let want: f64 = aimed.iter().map(|&s| m.target[s]).sum();
    if !(now > 0.0) || !(want > 0.0) {
        return 0.0;
    }
    let gap: f64 = aimed
        .iter()
        .map(|&s| (current[s] / now - m.target[s] / want).abs())
        .sum::<f64>()
        / 2.0;
    let noise = MEAN_ABS_NORMAL / 2.0 * aimed.len() as f64 * sigma / want;
    gap - BEYOND * noise
}

/// Systematic resampling: `n` distinct indices (whenever at least `n` weights are positive)
/// drawn with probability proportional to `weights` capped so that none exceeds the step,
/// in increasing order.
pub fn resample(weights: &[f64], n: usize, rng: &mut SecureRng) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    if n == 0 || weights.is_empty() || !(total > 0.0) {
        return Vec::new();
    }
    let capped = capped(weights, n);
    let step = capped.iter().sum::<f64>() / n as f64;
    let weights = &capped[..];
    let mut next = rng.random::<f64>() * step;
    let mut out = Vec::with_capacity(n);
    let mut run = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        run += w;
        while next < run && out.len() < n {
            out.push(i);
            next += step;
        }
    }
    // Rounding may leave the last draw just past the end.
    while out.len() < n {
        out.push(weights.len() - 1);
    }
    out
}

/// `weights` capped so that none exceeds the step of [`resample`] drawing `n` rows: no row
/// may be drawn twice, so the weights are capped at the level c where the k heaviest rows
/// hold c each and the rest their own weight, with n·c the new total (water-filling; exists
/// whenever n ≤ the rows with weight > 0). Each row's capped weight over their total, times
/// `n`, is its chance of being drawn.
pub fn capped(weights: &[f64], n: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = weights.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut rest: f64 = weights.iter().sum();
    let mut cap = f64::INFINITY;
    for (k, &w) in sorted.iter().enumerate().take(n) {
        let c = rest / (n - k) as f64;
        if w <= c {
            cap = c;
            break;
        }
        rest -= w;
    }
    weights.iter().map(|&w| w.min(cap)).collect()
}

/// Per row, its chance of being among the `n` drawn by [`resample_within`] with these
/// `weights`, `strata` and `shares` (times `n`, up to rounding): each stratum's rows to
/// draw, and within it the [`capped`] weights over their total.
pub fn drawn_within(weights: &[f64], strata: &[usize], shares: &[f64], n: usize) -> Vec<f64> {
    let (members, take) = allocate(weights, strata, shares, n);
    let mut out = vec![0.0; weights.len()];
    for (rows, &t) in members.iter().zip(&take) {
        let w: Vec<f64> = rows.iter().map(|&i| weights[i]).collect();
        let c = capped(&w, t);
        let total: f64 = c.iter().sum();
        if total > 0.0 {
            for (&i, &x) in rows.iter().zip(&c) {
                out[i] = x / total * t as f64;
            }
        }
    }
    out
}

/// [`resample`] within strata: `n` distinct indices (whenever each stratum holds enough rows
/// of positive weight), stratum `g` (`strata[i]` of row i) given its share of them
/// (`shares[g]`, any scale; the largest remainders get the rows rounding leaves) and its rows
/// drawn by their `weights`, in increasing order. A stratum with fewer rows of positive
/// weight than its share gives them all and the rest go to the others in proportion to
/// their shares. Raking to a declared target's two-way margins may leave its rare class's
/// weight on the few rows that fit them all (a 6% class at 1.1% of the weight on caravan at
/// ε = 3); drawn within strata, the class keeps its one-way release's share, and the rows
/// that fit the margins come first within it.
pub fn resample_within(
    weights: &[f64],
    strata: &[usize],
    shares: &[f64],
    n: usize,
    rng: &mut SecureRng,
) -> Vec<usize> {
    let (members, take) = allocate(weights, strata, shares, n);
    let mut out = Vec::with_capacity(n);
    for (rows, &t) in members.iter().zip(&take) {
        let w: Vec<f64> = rows.iter().map(|&i| weights[i]).collect();
        out.extend(resample(&w, t, rng).into_iter().map(|j| rows[j]));
    }
    out.sort_unstable();
    out
}

/// [`resample_within`]'s rows of positive weight per stratum, and how many of the `n` each
/// stratum gives.
fn allocate(
    weights: &[f64],
    strata: &[usize],
    shares: &[f64],
    n: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let k = shares.len();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, (&g, &w)) in strata.iter().zip(weights).enumerate() {
        if g < k && w > 0.0 {
            members[g].push(i);
        }
    }
    // Rows per stratum: proportional to the shares of the strata with room, the largest
    // remainders rounded up, each capped at its rows; what a cap leaves goes round again.
    let mut take = vec![0usize; k];
    let mut open: Vec<usize> = (0..k)
        .filter(|&g| shares[g].is_finite() && shares[g] > 0.0 && !members[g].is_empty())
        .collect();
    let mut left = n.min(open.iter().map(|&g| members[g].len()).sum());
    while left > 0 && !open.is_empty() {
        let total: f64 = open.iter().map(|&g| shares[g]).sum();
        let exact: Vec<f64> = open
            .iter()
            .map(|&g| left as f64 * shares[g] / total)
            .collect();
        let mut given: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut order: Vec<usize> = (0..open.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        // The fractional parts sum to fewer than the strata: one more row each for the
        // largest.
        let spare = left - given.iter().sum::<usize>();
        for &j in order.iter().take(spare) {
            given[j] += 1;
        }
        for (j, &g) in open.iter().enumerate() {
            let room = members[g].len() - take[g];
            let t = given[j].min(room);
            take[g] += t;
            left -= t;
        }
        open.retain(|&g| take[g] < members[g].len());
    }
    (members, take)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shares(slots: &[usize], idx: &[usize], k: usize) -> Vec<f64> {
        let mut c = vec![0.0; k];
        let mut n = 0.0;
        for &i in idx {
            if slots[i] < k {
                c[slots[i]] += 1.0;
                n += 1.0;
            }
        }
        c.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn calibration_matches_the_targets_and_keeps_the_dependence() {
        let mut rng = SecureRng::from_seed(5);
        // Column a is skewed towards slot 0 (70/30, target 40/60); column b copies a,
        // except for 10% nulls (slot 2), and has the same target.
        let rows = 30_000;
        let a: Vec<usize> = (0..rows)
            .map(|_| usize::from(rng.random::<f64>() >= 0.7))
            .collect();
        let b: Vec<usize> = a
            .iter()
            .map(|&x| if rng.random::<f64>() < 0.1 { 2 } else { x })
            .collect();
        let margins = [
            Margin {
                slots: &a,
                target: &[4.0, 6.0],
            },
            Margin {
                slots: &b,
                target: &[0.4, 0.6],
            },
        ];
        let w = raking_weights(rows, &margins, 3.0);
        assert!(w.iter().all(|&x| (MIN_WEIGHT..=3.0).contains(&x)));
        let keep = resample(&w, rows / 3, &mut rng);
        assert_eq!(keep.len(), rows / 3);
        assert!(keep.windows(2).all(|p| p[0] < p[1]), "a row was kept twice");
        let sa = shares(&a, &keep, 2);
        let sb = shares(&b, &keep, 2);
        assert!((sa[0] - 0.4).abs() < 0.02, "{sa:?}");
        assert!((sb[0] - 0.4).abs() < 0.02, "{sb:?}");
        // The dependence survives: where b is not null it still equals a.
        assert!(keep.iter().all(|&i| b[i] == 2 || b[i] == a[i]));
        // Nulls keep their share.
        let nulls = keep.iter().filter(|&&i| b[i] == 2).count() as f64 / keep.len() as f64;
        assert!((nulls - 0.1).abs() < 0.02, "{nulls}");
    }

    #[test]
    fn independent_columns_reach_their_targets() {
        let mut rng = SecureRng::from_seed(9);
        let rows = 60_000;
        let a: Vec<usize> = (0..rows).map(|_| rng.random_range(0..4)).collect();
        let b: Vec<usize> = (0..rows).map(|_| rng.random_range(0..3)).collect();
        let ta = [0.1, 0.2, 0.3, 0.4];
        let tb = [0.6, 0.3, 0.1];
        let margins = [
            Margin {
                slots: &a,
                target: &ta,
            },
            Margin {
                slots: &b,
                target: &tb,
            },
        ];
        let w = raking_weights(rows, &margins, 3.0);
        let keep = resample(&w, rows / 3, &mut rng);
        for (got, want) in shares(&a, &keep, 4).iter().zip(ta) {
            assert!((got - want).abs() < 0.015, "{got} vs {want}");
        }
        for (got, want) in shares(&b, &keep, 3).iter().zip(tb) {
            assert!((got - want).abs() < 0.015, "{got} vs {want}");
        }
    }

    #[test]
    fn an_unreachable_target_does_not_undo_the_other_margins() {
        // Column a: 99.9% in slot 0, its (wrong) target 6% there and 94% in slots the
        // proposals hardly hold; column b: proposed 50/50, target 90/10. b must still be met.
        let mut rng = SecureRng::from_seed(4);
        let rows = 60_000;
        let a: Vec<usize> = (0..rows)
            .map(|_| {
                if rng.random::<f64>() < 0.999 {
                    0
                } else {
                    rng.random_range(1..16)
                }
            })
            .collect();
        let b: Vec<usize> = (0..rows).map(|_| rng.random_range(0..2)).collect();
        let ta: Vec<f64> = (0..16)
            .map(|s| if s == 0 { 0.06 } else { 0.94 / 15.0 })
            .collect();
        let tb = [0.9, 0.1];
        let margins = [
            Margin {
                slots: &b,
                target: &tb,
            },
            Margin {
                slots: &a,
                target: &ta,
            },
        ];
        let w = raking_weights(rows, &margins, 5.0);
        let keep = resample(&w, rows / 5, &mut rng);
        let got = shares(&b, &keep, 2);
        assert!((got[0] - 0.9).abs() < 0.015, "{got:?}");
    }

    #[test]
    fn a_free_slot_between_targets_keeps_its_weight() {
        // An id's slots: two released values, a null slot without a target (NaN), the
        // pseudonyms. Proposed 25% each; targets 10% / 10% / free / 60% of the aimed rows.
        let mut rng = SecureRng::from_seed(3);
        let rows = 60_000;
        let a: Vec<usize> = (0..rows).map(|_| rng.random_range(0..4)).collect();
        let target = [1.0, 1.0, f64::NAN, 6.0];
        let w = raking_weights(
            rows,
            &[Margin {
                slots: &a,
                target: &target,
            }],
            3.0,
        );
        let keep = resample(&w, rows / 3, &mut rng);
        let got = shares(&a, &keep, 4);
        // The null slot keeps its quarter; the rest split 1 : 1 : 6.
        assert!((got[2] - 0.25).abs() < 0.015, "{got:?}");
        for (g, want) in [
            (got[0], 0.75 / 8.0),
            (got[1], 0.75 / 8.0),
            (got[3], 0.75 * 6.0 / 8.0),
        ] {
            assert!((g - want).abs() < 0.015, "{got:?}");
        }
    }

    /// Each stratum gets its share of the rows kept, drawn by weight within it: a stratum
    /// whose weight sits on three rows still gives its share (the three first), one with
    /// too few rows gives them all and the rest go to the others, never a row twice.
    #[test]
    fn resampling_within_strata_keeps_their_shares() {
        let mut rng = SecureRng::from_seed(8);
        // 1,000 rows: stratum 1 holds every tenth, three of them heavy, the rest at the
        // floor; stratum 0 the others; stratum 2 two rows.
        let rows = 1000;
        let mut strata: Vec<usize> = (0..rows).map(|r| usize::from(r % 10 == 0)).collect();
        strata[1] = 2;
        strata[2] = 2;
        let weights: Vec<f64> = (0..rows)
            .map(|r| match r {
                0 | 10 | 20 => 5.0,
                _ if r % 10 == 0 => MIN_WEIGHT,
                _ => 1.0,
            })
            .collect();
        // The chances of being drawn: the same rows per stratum, heavy rows certain, none
        // above 1, and the draws (over many seeds) at those chances.
        let chance = drawn_within(&weights, &strata, &[0.8, 0.15, 0.05], 200);
        let sum = |g: usize| -> f64 {
            (0..rows)
                .filter(|&i| strata[i] == g)
                .map(|i| chance[i])
                .sum()
        };
        for (g, want) in [(0, 167.0), (1, 31.0), (2, 2.0)] {
            assert!((sum(g) - want).abs() < 1e-9, "stratum {g}: {}", sum(g));
        }
        assert!(chance.iter().all(|&c| c <= 1.0 + 1e-12));
        for heavy in [0, 10, 20, 1, 2] {
            assert!(
                (chance[heavy] - 1.0).abs() < 1e-12,
                "row {heavy}: {}",
                chance[heavy]
            );
        }
        let mut seen = vec![0usize; rows];
        for _ in 0..400 {
            for i in resample_within(&weights, &strata, &[0.8, 0.15, 0.05], 200, &mut rng) {
                seen[i] += 1;
            }
        }
        for i in [3, 30, 40] {
            let rate = seen[i] as f64 / 400.0;
            assert!(
                (rate - chance[i]).abs() < 0.1,
                "row {i}: {rate} against {}",
                chance[i]
            );
        }
        let keep = resample_within(&weights, &strata, &[0.8, 0.15, 0.05], 200, &mut rng);
        assert_eq!(keep.len(), 200);
        assert!(keep.windows(2).all(|p| p[0] < p[1]), "a row was kept twice");
        let count = |g: usize| keep.iter().filter(|&&i| strata[i] == g).count();
        // 160 : 30 : 10 asked; stratum 2 gives both its rows, and the 8 left go 7 : 1
        // (6.7 : 1.3, the larger remainder rounded up).
        assert_eq!(count(2), 2);
        assert_eq!(count(1), 31, "{keep:?}");
        assert_eq!(count(0), 167);
        for heavy in [0, 10, 20] {
            assert!(keep.contains(&heavy));
        }
        // A share of 0, or a stratum past the shares, takes no row.
        let keep = resample_within(&weights, &strata, &[1.0, 0.0], 100, &mut rng);
        assert!(keep.iter().all(|&i| strata[i] == 0));
        assert_eq!(keep.len(), 100);
        assert!(resample_within(&weights, &strata, &[], 10, &mut rng).is_empty());
    }

    #[test]
    fn resampling_handles_edge_cases() {
        let mut rng = SecureRng::from_seed(1);
        assert!(resample(&[], 3, &mut rng).is_empty());
        assert!(resample(&[1.0, 1.0], 0, &mut rng).is_empty());
        assert!(resample(&[0.0, 0.0], 2, &mut rng).is_empty());
        assert_eq!(resample(&[1.0, 1.0, 1.0], 3, &mut rng), vec![0, 1, 2]);
        // One heavy weight is kept once, never twice, and the rest fill the draw.
        for _ in 0..50 {
            let keep = resample(&[10.0, 1.0, 1.0, 1.0, 0.5, 0.5], 3, &mut rng);
            assert_eq!(keep.len(), 3);
            assert!(keep.windows(2).all(|p| p[0] < p[1]), "{keep:?}");
            assert_eq!(keep[0], 0);
        }
    }

    /// A two-way margin restores a dependence the proposals lost: a rare class (5%) drawn
    /// independently of its predictor is raked to the joint where it sits mostly in the
    /// predictor's top slot, and its one-way share is kept.
    #[test]
    fn a_two_way_margin_restores_a_rare_class_dependence() {
        let mut rng = SecureRng::from_seed(9);
        let rows = 40_000;
        let y: Vec<usize> = (0..rows)
            .map(|_| usize::from(rng.random::<f64>() < 0.05))
            .collect();
        let x: Vec<usize> = (0..rows).map(|_| rng.random_range(0..4usize)).collect();
        // Real joint: the class is 5% of rows, 80% of it in x = 3.
        let mut joint = vec![0.0; 8];
        for b in 0..4 {
            joint[b] = 0.95 / 4.0;
        }
        for b in 0..3 {
            joint[4 + b] = 0.05 * 0.2 / 3.0;
        }
        joint[7] = 0.05 * 0.8;
        let counts: Vec<f64> = joint.iter().map(|p| p * 10_000.0).collect();
        let target = pair_shares(&counts, 2, 4, 0.0);
        assert_eq!(target, counts);
        let pair: Vec<usize> = y.iter().zip(&x).map(|(&a, &b)| a * 4 + b).collect();
        let margins = [Margin {
            slots: &pair,
            target: &target,
        }];
        let w = raking_weights(rows, &margins, 5.0);
        let keep = resample(&w, rows / 5, &mut rng);
        let got = shares(&pair, &keep, 8);
        let class: f64 = got[4..].iter().sum();
        assert!((class - 0.05).abs() < 0.01, "{got:?}");
        assert!(got[7] / class > 0.7, "{got:?}");
    }

    /// Fitted to its columns' one-way shares, a noisy two-way margin takes their sums and
    /// keeps its odds ratio; a group without a share keeps its mass.
    #[test]
    fn a_two_way_margin_is_fitted_to_its_columns_one_way_shares() {
        // 2 x 3, its row sums 0.5/0.5 where the one-way release says 0.3/0.7.
        let mut shares = vec![0.30, 0.10, 0.10, 0.10, 0.20, 0.20];
        let odds = |s: &[f64]| (s[0] * s[4]) / (s[1] * s[3]);
        let before = odds(&shares);
        let rows = [Some(3.0), Some(7.0)];
        let cols = [Some(0.4), Some(0.3), Some(0.3)];
        fit_to_one_way(&mut shares, &rows, &cols);
        let total: f64 = shares.iter().sum();
        let row0: f64 = shares[..3].iter().sum::<f64>() / total;
        assert!((row0 - 0.3).abs() < 1e-9, "{shares:?}");
        for (c, want) in [0.4, 0.3, 0.3].iter().enumerate() {
            let got = (shares[c] + shares[3 + c]) / total;
            assert!((got - want).abs() < 1e-9, "{shares:?}");
        }
        assert!((odds(&shares) - before).abs() < 1e-9 * before, "{shares:?}");
        // A column group without a share keeps its mass; the others share the rest.
        let mut shares = vec![0.25, 0.25, 0.25, 0.25];
        fit_to_one_way(&mut shares, &[Some(1.0), Some(1.0)], &[None, Some(1.0)]);
        assert!((shares[0] + shares[2] - 0.5).abs() < 1e-12, "{shares:?}");
        let mut shares = vec![0.4, 0.1, 0.1, 0.4];
        fit_to_one_way(&mut shares, &[Some(0.9), Some(0.1)], &[None, None]);
        assert!((shares[0] + shares[1] - 0.9).abs() < 1e-12, "{shares:?}");
        assert!((shares[0] / shares[1] - 4.0).abs() < 1e-9, "{shares:?}");
        // Shapes that do not fit, and non-finite shares, are left as they are.
        let mut odd = vec![0.5, f64::NAN];
        fit_to_one_way(&mut odd, &[Some(1.0)], &[Some(1.0), Some(1.0)]);
        assert!(odd[1].is_nan());
    }

    #[test]
    fn a_tempered_margin_lies_between_the_rows_and_the_target() {
        // Three proposals in slot 0, one in slot 1, one in a free slot (past the targets);
        // the target asks for the reverse, and a NaN slot stays free.
        let slots = [0, 0, 0, 1, 3];
        let target = [1.0, 3.0, f64::NAN];
        let m = Margin {
            slots: &slots,
            target: &target,
        };
        let weights = [1.0; 5];
        let shares = |part: f64| tempered(&m, &weights, part);
        assert_eq!(shares(0.0)[..2], [0.75, 0.25]);
        assert_eq!(shares(1.0)[..2], [0.25, 0.75]);
        assert_eq!(shares(0.5)[..2], [0.5, 0.5]);
        assert!(shares(0.5)[2].is_nan());
        // Where the rows stand is read under the weights given.
        let heavy = tempered(&m, &[1.0, 1.0, 1.0, 3.0, 1.0], 0.0);
        assert_eq!(heavy[..2], [0.5, 0.5]);
    }

    #[test]
    fn noisy_pair_counts_are_clamped_and_pulled_toward_independence() {
        // Two by two, one cell pushed below zero by the noise.
        let shares = pair_shares(&[500.0, 300.0, -12.0, 200.0], 2, 2, 10.0);
        assert!(shares.iter().all(|&s| s > 0.0), "{shares:?}");
        // The prior adds about σ per cell in all.
        let added: f64 = shares.iter().sum::<f64>() - 1000.0;
        assert!((added - 40.0).abs() < 1e-9, "{added}");
        // The hidden cell gets its independent share of the prior: 40 · (200/1000) · (500/1000).
        assert!((shares[2] - 4.0).abs() < 1e-9, "{shares:?}");
        assert_eq!(pair_shares(&[f64::NAN, 1.0], 1, 2, 0.0), vec![0.0, 1.0]);
        assert_eq!(pair_shares(&[-1.0, -1.0], 1, 2, 3.0), vec![1.0, 1.0]);
    }
}
