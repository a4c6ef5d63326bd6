//! Privacy planning for one synthesis run, before any row is touched: the noise of the
//! preprocessing statistics (a share of ε chosen from the table's size and width, see
//! [`auto_share`]), then the DP-SGD noise multiplier
//! calibrated so that preprocessing and training *composed* stay within (ε, δ).
//!
//! The exact row count never shapes a private run: a Gaussian-noised count
//! ([`noisy_row_count`], σ = [`ROW_COUNT_NOISE`], charged as the plan's first event) sets the
//! sampling rate q, the number of steps, the default δ and the number of output rows. Every
//! later use of it is post-processing.

use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::{
    AccountantKind, Delta, DpEvent, Epsilon, SamplingRate, Steps, calibrate_noise,
};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{Result, SynthError};
use crate::stats::{Noise, Plan};
use crate::train::TrainConfig;

/// Standard deviation of the Gaussian noise on a table's row count. One row moves the count
/// by 1, so this costs zCDP ρ = 1/(2·50²) = 0.0002, about 1% of the budget at ε = 1; an
/// error of ±50 rows in q and the output size is immaterial even for a table of 700 rows.
pub const ROW_COUNT_NOISE: f64 = 50.0;

/// The default δ for `rows` (noisy) rows: 1/n^1.5, and never above 10⁻⁵, so that it stays
/// far below 1/n even for tiny tables (1/n^1.5 is 0.19 for 3 rows).
pub fn default_delta(rows: usize) -> f64 {
    (1.0 / (rows.max(1) as f64).powf(1.5)).min(1e-5)
}

/// The run's δ: the one asked for, else [`default_delta`] of the (noisy) row count.
pub fn target_delta(delta: Option<f64>, rows: usize) -> Result<Delta> {
    Ok(Delta::new(delta.unwrap_or_else(|| default_delta(rows)))?)
}

/// The default expected batch for `rows` (noisy) rows: a tenth of them, between 64 and
/// 1,000. Large tables keep batches of 1,000 (q = 1000/n); a table of 600 rows gets 64
/// (q ≈ 0.1, 300 steps over 30 epochs) instead of full batches (30 steps, too few to learn).
pub fn default_batch_size(rows: usize) -> usize {
    (rows / 10).clamp(64, 1000)
}

/// Epochs a table gets by default, when that stays within [`MAX_DEFAULT_STEPS`].
pub const DEFAULT_EPOCHS: usize = 30;

/// The most DP-SGD steps a run takes by default: a large table gets fewer epochs instead of
/// more steps (each step sees a batch of about 1,000 rows; 2,400 steps of the TVAE converge
/// on every shared table, and a table of 337,000 rows fits in minutes instead of 8,100 steps).
pub const MAX_DEFAULT_STEPS: usize = 2_400;

/// The default epochs for `rows` (noisy) rows in expected batches of `batch`: 30, fewer for
/// a large table so that the run stays within [`MAX_DEFAULT_STEPS`] steps, at least one. The
/// training plan scales with the table; the time and memory of a step are those of a batch.
pub fn default_epochs(rows: usize, batch: usize) -> usize {
    let per_epoch = (rows.max(1) as f64 / batch.max(1) as f64).ceil().max(1.0) as usize;
    (MAX_DEFAULT_STEPS / per_epoch).clamp(1, DEFAULT_EPOCHS)
}

/// A DP release of a row count: n + N(0, [`ROW_COUNT_NOISE`]²), rounded, at least 1. The
/// caller charges `DpEvent::gaussian(1.0, ROW_COUNT_NOISE, 1)` (a plan with
/// `count_noise = Some(ROW_COUNT_NOISE)` includes it) and draws `rng` from
/// [`SecureRng::for_dp_noise`].
pub fn noisy_row_count(rows: usize, rng: &mut SecureRng) -> usize {
    let z: f64 = rng.sample(StandardNormal);
    let noisy = (rows as f64 + ROW_COUNT_NOISE * z).round();
    if noisy < 1.0 { 1 } else { noisy as usize }
}

/// The privacy side of a run.
#[derive(Debug, Clone)]
pub struct PrivacyPlan {
    /// Target (ε, δ); `None` for a run without differential privacy.
    pub target: Option<(Epsilon, Delta)>,
    /// Noise of the preprocessing statistics (σ = 0: exact, no DP).
    pub preprocess: Noise,
    /// Training settings, with the calibrated noise multiplier.
    pub training: TrainConfig,
    /// Events of the row count (when noised), the kinds (when released), preprocessing, then
    /// training, in the order they happen.
    pub events: Vec<DpEvent>,
    /// What each of `events` releases, in the same order (for reports).
    pub purposes: Vec<&'static str>,
    /// ε of the row count, the kinds and preprocessing alone at δ.
    pub epsilon_preprocess: f64,
    /// The share of ε given to the preprocessing statistics (0 when nothing was estimated).
    pub preprocess_share: f64,
    /// Whether the statistics' noise stays above [`AUTO_NOISE_FRACTION`] of the rows even
    /// at the largest automatic share: expect coarse bins and rare categories lost.
    pub statistics_coarse: bool,
    /// ε of everything composed at δ.
    pub epsilon_total: f64,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanRequest {
    /// Target ε (`None` or ∞: no DP).
    pub epsilon: Option<f64>,
    /// Target δ (`None`: [`default_delta`]); must be below 1/rows.
    pub delta: Option<f64>,
    /// Rows in the table: a noisy count ([`noisy_row_count`]) for a private run.
    pub rows: usize,
    /// σ of the noise on `rows` (`Some(ROW_COUNT_NOISE)` for a private run): the count is
    /// charged as the plan's first event.
    pub count_noise: Option<f64>,
    /// The release that typed the CSV's columns, when one was made: its noise σ and the
    /// columns it covered (see [`crate::stats::kind_noise`]); charged after the row count.
    pub kind_noise: Option<(f64, u64)>,
    /// The distinct counts released with the kinds, when made: their noise σ and how many
    /// (see [`crate::stats::release_distinct`]); charged after the kinds.
    pub distinct_noise: Option<(f64, u64)>,
    /// The mean count of the values of the widest column marked wide (see
    /// [`crate::stats::mark_wide`]): the wide discoveries' threshold is set there
    /// ([`crate::stats::wide_noise`]) when the plan has any.
    pub wide_mean: Option<f64>,
    /// Epochs.
    pub epochs: usize,
    /// Expected batch size.
    pub batch_size: usize,
    /// Share of ε for preprocessing statistics (`None`: chosen by [`auto_share`]).
    pub preprocess_share: Option<f64>,
    /// Learning rate.
    pub learning_rate: f64,
    /// Clipping norm.
    pub clip_norm: f64,
}

/// Plans a run.
pub fn plan(req: &PlanRequest, stats: Plan) -> Result<PrivacyPlan> {
    if req.rows == 0 {
        return Err(SynthError::Setting("no rows".into()));
    }
    if req.epochs == 0 || req.epochs > 100_000 {
        return Err(SynthError::Setting(format!(
            "epochs must be between 1 and 100000, not {}",
            req.epochs
        )));
    }
    if !(req.clip_norm.is_finite() && req.clip_norm > 0.0) {
        return Err(SynthError::Setting(format!(
            "the clipping norm must be a positive number, not {}",
            req.clip_norm
        )));
    }
    if !(req.learning_rate.is_finite() && req.learning_rate > 0.0) {
        return Err(SynthError::Setting(format!(
            "the learning rate must be a positive number, not {}",
            req.learning_rate
        )));
    }
    if req.batch_size == 0 {
        return Err(SynthError::Setting(
            "the batch size must be at least 1".into(),
        ));
    }
    let q = (req.batch_size as f64 / req.rows as f64).min(1.0);
    let mut training = TrainConfig {
        epochs: req.epochs,
        sampling_rate: q,
        clip_norm: req.clip_norm,
        noise_multiplier: None,
        learning_rate: req.learning_rate,
    };
    let Some(eps) = req.epsilon.filter(|e| e.is_finite()) else {
        return Ok(PrivacyPlan {
            target: None,
            preprocess: Noise::exact(),
            training,
            events: vec![],
            purposes: vec![],
            epsilon_preprocess: f64::INFINITY,
            preprocess_share: 0.0,
            statistics_coarse: false,
            epsilon_total: f64::INFINITY,
        });
    };
    let epsilon = Epsilon::new(eps)?;
    if eps <= 0.0 {
        return Err(SynthError::Setting(
            "ε must be > 0 (or inf for no privacy)".into(),
        ));
    }
    let delta = target_delta(req.delta, req.rows)?;
    if delta.get() * req.rows as f64 >= 1.0 {
        return Err(SynthError::Setting(format!(
            "δ = {} is not below 1/n for a table of about {} rows: such a δ allows releasing \
             a whole row; use a δ well below 1/n (the default is 1/n^1.5, at most 1e-5)",
            delta.get(),
            req.rows
        )));
    }
    if req
        .preprocess_share
        .is_some_and(|s| !(0.0..1.0).contains(&s))
    {
        return Err(SynthError::Setting(
            "the preprocessing share must be in [0, 1)".into(),
        ));
    }
    let count_events = look_events(req)?;
    let (preprocess, mut labelled, share, statistics_coarse) = if stats.is_free() {
        (Noise::exact(), vec![], 0.0, false)
    } else {
        let (share, noise, coarse) = match req.preprocess_share {
            Some(share) if share <= 0.0 => {
                return Err(SynthError::Setting(
                    "the schema needs private statistics, so the preprocessing share must be > 0"
                        .into(),
                ));
            }
            Some(share) => {
                let noise = Noise::calibrate(stats, Epsilon::new(eps * share)?, delta)?;
                (share, noise, false)
            }
            None => {
                let prior: Vec<DpEvent> = count_events.iter().map(|(_, e)| e.clone()).collect();
                auto_share_after(stats, eps, delta, req.rows, &prior)?
            }
        };
        below_floor(stats, &noise, share, req.rows)?;
        let mut noise = noise;
        if stats.wide > 0 {
            // The wide discoveries' own noise, charged beside the statistics' share (and
            // never above the other discoveries', where there are any: without them the
            // calibrated category noise measures nothing, and capping by it charged a table
            // of one identifier column ε = 24 at σ = 0.25).
            let mean = req.wide_mean.unwrap_or(1.0);
            let own = crate::stats::wide_noise(stats.wide, mean, noise.threshold_delta, eps, delta);
            noise.sigma_wide = if stats.discoveries > 0 {
                own.min(noise.sigma_categories)
            } else {
                own
            };
        }
        let events = noise.labelled_events(stats)?;
        (noise, events, share, coarse)
    };
    labelled.splice(0..0, count_events);
    let (mut purposes, pre_events): (Vec<&'static str>, Vec<DpEvent>) =
        labelled.into_iter().unzip();
    purposes.push("DP-SGD training");
    let steps = Steps::new(training.steps())?;
    let sigma = calibrate_noise(
        AccountantKind::Pld,
        epsilon,
        SamplingRate::new(q)?,
        steps,
        delta,
        &pre_events,
    )?;
    training.noise_multiplier = Some(sigma.get());
    let mut events = pre_events.clone();
    events.push(DpEvent::SubsampledGaussian {
        sampling_rate: SamplingRate::new(q)?,
        noise_multiplier: sigma,
        steps,
    });
    let epsilon_preprocess = AccountantKind::Pld.epsilon(&pre_events, delta)?;
    let epsilon_total = AccountantKind::Pld.epsilon(&events, delta)?;
    Ok(PrivacyPlan {
        target: Some((epsilon, delta)),
        preprocess,
        training,
        events,
        purposes,
        epsilon_preprocess,
        preprocess_share: share,
        statistics_coarse,
        epsilon_total,
    })
}

/// The releases a run makes before its plan, each with what it releases: the noisy row
/// count, the column kinds and the text columns' distinct counts, where the request has
/// them. A plan charges them first; a run refused after them ([`SynthError::TooFewRows`])
/// charges them alone, since its refusal is a function of them.
pub fn look_events(req: &PlanRequest) -> Result<Vec<(&'static str, DpEvent)>> {
    let mut events = match req.count_noise {
        Some(sigma) => vec![("row count", DpEvent::gaussian(1.0, sigma, 1)?)],
        None => vec![],
    };
    if let Some((sigma, columns)) = req.kind_noise {
        events.extend(
            crate::stats::kind_events(sigma, columns)?
                .into_iter()
                .map(|e| ("column kinds (numbers, text, dates counted)", e)),
        );
    }
    if let Some((sigma, columns)) = req.distinct_noise
        && columns > 0
    {
        events.push((
            "text columns' distinct-value counts",
            DpEvent::gaussian(1.0, sigma, columns)?,
        ));
    }
    Ok(events)
}

/// The fewest rows, in units of the statistics' noise σ, a table needs for its statistics to
/// say anything: a category is released above about 1 + 5σ rows and a value range needs an
/// octave of 5σ (`stats::OCTAVE_Z`), so under 5σ rows not even a column whose rows all
/// share one value clears a threshold, and the output would be drawn from noise.
pub const ROWS_FLOOR_Z: f64 = 5.0;

/// What a refusal for too few rows (or too many columns) says the user can do.
const TOO_FEW_ROWS_HELP: &str = "declare the columns in a --schema with their edges or \
     categories and their frequencies (nothing is then estimated), raise --epsilon, or keep \
     fewer columns";

/// Refuses a table of fewer than [`ROWS_FLOOR_Z`]·σ (noisy) rows, σ the smallest noise of the
/// statistics `stats` plans (numeric histograms or category discoveries), with one line
/// that says what a schema would spare.
fn below_floor(stats: Plan, noise: &Noise, share: f64, rows: usize) -> Result<()> {
    let sigmas = [
        (stats.releases > 0).then_some(noise.sigma),
        (stats.discoveries > 0).then_some(noise.sigma_categories),
    ];
    let Some(sigma) = sigmas.into_iter().flatten().reduce(f64::min) else {
        return Ok(());
    };
    let floor = ROWS_FLOOR_Z * sigma;
    if (rows as f64) < floor {
        return Err(SynthError::TooFewRows(format!(
            "about {rows} rows are too few for this table's statistics at this ε: with {:.0}% \
             of ε their noise is σ = {sigma:.1} rows, and a value or a range needs about \
             {floor:.0} rows to be released ({ROWS_FLOOR_Z}σ); {TOO_FEW_ROWS_HELP}",
            100.0 * share
        )));
    }
    Ok(())
}

/// Shares of ε that the automatic split tries for the preprocessing statistics, smallest
/// first.
///
/// Up to four fifths: on a table too small for its width (noise above 1% of the rows at
/// half of ε), the statistics carry more of the output than the model does (the sampler
/// draws that share of its proposals from them, and calibrates every row to them), so
/// their noise costs more than the training's. Measured with the reference evaluator,
/// noise seeds 1–3 (`FEDSYNTH_INSECURE_REPRODUCIBLE_NOISE_SEED=s fedsynth synth --seed s
/// --preprocess-share 0.5 | 0.65 | 0.8`), mean column shapes / 3-way error: psid1976 at
/// ε = 3 0.889 / 0.835 → 0.914 / 0.767 → 0.920 / 0.758 (0.9: 0.911 / 0.761), at ε = 1
/// 0.706 / 1.357 → 0.735 / 1.257 → 0.798 / 1.098 (independent columns 1.373); Wage at
/// ε = 1 0.946 / 0.479 → 0.961 / 0.417 → 0.967 / 0.384; nmes1988 at ε = 1 0.965 / 0.235 →
/// 0.967 / 0.227 → 0.971 / 0.211; caravan at ε = 3 0.978 / 0.237 → 0.981 / 0.226 →
/// 0.983 / 0.220, at ε = 1 0.946 / 0.346 → 0.958 / 0.301 → 0.963 / 0.288. A table that meets the noise
/// bound at half of ε or less (diamonds, flights, Wage and nmes1988 at ε = 3) is planned
/// as before.
pub const AUTO_SHARES: [f64; 8] = [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8];

/// The automatic split takes the smallest share at which the statistics' noise σ is at most
/// this fraction of the rows: at 1%, a bucket of about 4% of the rows clears the strong
/// threshold of a support histogram and a bin's share is known to about ±1%.
pub const AUTO_NOISE_FRACTION: f64 = 0.01;

/// ... and the category discovery threshold at most this fraction of the rows: a class of 2%
/// of the rows (a failure outcome, a rare diagnosis) then clears it with probability about
/// 0.96, one of 3% all but surely. A class that misses it can never be generated.
pub const AUTO_CLASS_FRACTION: f64 = 0.015;

/// The largest share the class criterion alone may ask for: beyond it, the training noise it
/// costs weighs on every column more than a rarer class gains (Wage's 2,400 rows at ε = 3
/// would give half of ε to its statistics).
pub const AUTO_CLASS_SHARE_MAX: f64 = 0.2;

/// The preprocessing share chosen from the table's size and width: the statistics' noise
/// is a function of how many histograms the schema needs (its width) and of ε, their signal
/// of the row count, so the share grows until σ ≤ [`AUTO_NOISE_FRACTION`] × rows and the
/// discovery threshold ≤ [`AUTO_CLASS_FRACTION`] × rows (this one up to
/// [`AUTO_CLASS_SHARE_MAX`]), up to the largest of
/// [`AUTO_SHARES`] (then the statistics are coarse: the flag says so). A table of 750 rows
/// and 21 columns gets four fifths.
pub fn auto_share(stats: Plan, eps: f64, delta: Delta, rows: usize) -> Result<(f64, Noise, bool)> {
    auto_share_after(stats, eps, delta, rows, &[])
}

/// The least share of ε the DP-SGD training keeps whatever the automatic split chooses:
/// a share of the statistics that, composed after the releases made before the plan
/// (`prior`: the row count, the kinds), leaves less is not taken, nor any larger one.
pub const TRAINING_SHARE_MIN: f64 = 0.1;

/// [`auto_share`] after the releases `prior`: no share that leaves the training less than
/// [`TRAINING_SHARE_MIN`] of ε (at ε = 0.1, psid1976's 80% with its row count and kinds
/// spent 0.105 before the training, and the run stopped on a calibration error instead
/// of the floor's line that says what a schema spares). Where even the smallest leaves
/// less, the smallest is taken, and the plan says what fails.
pub fn auto_share_after(
    stats: Plan,
    eps: f64,
    delta: Delta,
    rows: usize,
    prior: &[DpEvent],
) -> Result<(f64, Noise, bool)> {
    let mut last = None;
    for share in AUTO_SHARES {
        // A share too small for the plan's every event (thousands of histograms) is skipped.
        let Ok(noise) = Noise::calibrate(stats, Epsilon::new(eps * share)?, delta) else {
            continue;
        };
        let mut events = prior.to_vec();
        events.extend(noise.labelled_events(stats)?.into_iter().map(|(_, e)| e));
        if AccountantKind::Pld.epsilon(&events, delta)? > (1.0 - TRAINING_SHARE_MIN) * eps {
            if last.is_none() {
                last = Some((share, noise));
            }
            break;
        }
        if noise.sigma <= AUTO_NOISE_FRACTION * rows as f64
            && (stats.discoveries == 0
                || share >= AUTO_CLASS_SHARE_MAX
                || noise.threshold() <= AUTO_CLASS_FRACTION * rows as f64)
        {
            return Ok((share, noise, false));
        }
        last = Some((share, noise));
    }
    let (share, noise) = last.ok_or_else(|| {
        SynthError::TooFewRows(format!(
            "this table has too many columns for its statistics at ε = {eps}: even {:.0}% of \
             ε cannot pay for their {} histograms; {TOO_FEW_ROWS_HELP}",
            100.0 * AUTO_SHARES[AUTO_SHARES.len() - 1],
            stats.releases + stats.discoveries
        ))
    })?;
    Ok((share, noise, true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(rows: usize, delta: Option<f64>) -> PlanRequest {
        PlanRequest {
            epsilon: Some(1.0),
            delta,
            rows,
            count_noise: Some(ROW_COUNT_NOISE),
            kind_noise: None,
            distinct_noise: None,
            wide_mean: None,
            epochs: 2,
            batch_size: 100,
            preprocess_share: Some(0.1),
            learning_rate: 1e-3,
            clip_norm: 1.0,
        }
    }

    #[test]
    fn the_default_delta_stays_far_below_one_over_n() {
        assert!((default_delta(43_152) - 1.0 / 43_152f64.powf(1.5)).abs() < 1e-15);
        // δ·n = min(1/√n, 10⁻⁵·n): largest (0.0215) where the two meet, at n ≈ 2,154.
        for n in [1, 3, 10, 100, 753, 2154, 3000, 1_000_000] {
            let d = default_delta(n);
            assert!(d <= 1e-5 && d * (n as f64) < 0.022, "{n}");
        }
        let p = plan(&request(3, None), Plan::default()).unwrap();
        assert!(p.target.unwrap().1.get() <= 1e-5);
    }

    #[test]
    fn a_delta_of_one_over_n_or_more_is_refused() {
        for delta in [1.0 / 3.0, 0.5] {
            let err = plan(&request(3, Some(delta)), Plan::default()).unwrap_err();
            assert!(err.to_string().contains("below 1/n"), "{err}");
        }
        assert!(plan(&request(1000, Some(1e-3)), Plan::default()).is_err());
        assert!(plan(&request(1000, Some(1e-4)), Plan::default()).is_ok());
    }

    /// A table whose statistics' noise would hide every value is refused with one line that
    /// names the floor and what a schema spares; the releases made before the plan are what a
    /// refusal charges.
    #[test]
    fn a_table_under_five_sigma_of_its_statistics_noise_is_refused() {
        let stats = Plan {
            releases: 24,
            discoveries: 6,
            ..Plan::default()
        };
        let mut req = request(5000, None);
        req.preprocess_share = Some(0.5);
        req.kind_noise = Some((300.0, 30));
        let p = plan(&req, stats).unwrap();
        let sigma = p.preprocess.sigma_categories.min(p.preprocess.sigma);
        // The same table, fewer rows: refused just under ROWS_FLOOR_Z·σ (σ is set by ε and
        // the plan's width, and barely by the rows through δ).
        let floor = ROWS_FLOOR_Z * sigma;
        for (rows, refused) in [(floor * 0.8, true), (floor * 1.25, false)] {
            req.rows = rows as usize;
            let got = plan(&req, stats);
            assert_eq!(
                matches!(got, Err(SynthError::TooFewRows(_))),
                refused,
                "{} rows, floor {floor:.0}",
                req.rows
            );
            if let Err(e) = got {
                let line = e.to_string();
                assert!(!line.contains('\n') && line.contains("--schema"), "{line}");
            }
        }
        // What it charges: the count and the kinds, nothing of the statistics.
        let looks = look_events(&req).unwrap();
        assert_eq!(
            looks.iter().map(|(what, _)| *what).collect::<Vec<_>>(),
            vec!["row count", "column kinds (numbers, text, dates counted)"]
        );
        // A schema that needs no statistics is never refused for its size.
        req.rows = 3;
        assert!(plan(&req, Plan::default()).is_ok());
    }

    #[test]
    fn the_row_count_is_charged_first_and_everything_composes_to_epsilon() {
        let stats = Plan {
            releases: 3,
            discoveries: 1,
            ..Plan::default()
        };
        let p = plan(&request(5000, None), stats).unwrap();
        assert_eq!(
            p.events[0],
            DpEvent::gaussian(1.0, ROW_COUNT_NOISE, 1).unwrap()
        );
        assert!((p.epsilon_total - 1.0).abs() < 2e-3, "{}", p.epsilon_total);
        let mut without = request(5000, None);
        without.count_noise = None;
        let q = plan(&without, stats).unwrap();
        assert_eq!(q.events.len() + 1, p.events.len());
        assert_eq!(p.purposes.len(), p.events.len());
        assert_eq!(p.purposes.last(), Some(&"DP-SGD training"));
        // The count's share is small: σ barely moves.
        let (a, b) = (
            p.training.noise_multiplier.unwrap(),
            q.training.noise_multiplier.unwrap(),
        );
        assert!(a >= b && a < b * 1.03, "{a} vs {b}");
        // The kinds of a CSV's columns are charged right after the count, and the whole
        // still composes to ε.
        let mut typed = request(5000, None);
        typed.kind_noise = Some((800.0, 12));
        let k = plan(&typed, stats).unwrap();
        assert_eq!(k.events[1], DpEvent::gaussian(1.0, 800.0, 12).unwrap());
        assert_eq!(k.events.len(), p.events.len() + 1);
        assert!((k.epsilon_total - 1.0).abs() < 2e-3, "{}", k.epsilon_total);
        assert!(k.epsilon_preprocess > p.epsilon_preprocess);
    }

    #[test]
    fn distinct_counts_and_wide_discoveries_are_charged_and_compose_to_epsilon() {
        // Flights' shape at ε = 3: 31 histograms, 4 discoveries, one of them wide (4,000
        // tail numbers of about 67 flights each).
        let rows = 269_000;
        let mut req = request(rows, None);
        req.epsilon = Some(3.0);
        req.batch_size = 1000;
        req.epochs = 8;
        req.distinct_noise = Some((41.0, 4));
        let ordinary = Plan {
            releases: 31,
            discoveries: 5,
            ..Plan::default()
        };
        let base = plan(&req, ordinary).unwrap();
        assert!(
            base.events
                .contains(&DpEvent::gaussian(1.0, 41.0, 4).unwrap())
        );
        assert!(
            (base.epsilon_total - 3.0).abs() < 5e-3,
            "{}",
            base.epsilon_total
        );
        let threshold = base.preprocess.threshold();
        assert!(threshold > 200.0, "{threshold}");
        let wide = Plan {
            discoveries: 4,
            wide: 1,
            ..ordinary
        };
        req.wide_mean = Some(67.0);
        let p = plan(&req, wide).unwrap();
        let noise = p.preprocess;
        assert!((p.epsilon_total - 3.0).abs() < 5e-3, "{}", p.epsilon_total);
        // The wide discovery releases values seen about 67 times, and stays within its
        // share of ρ: the training noise grows by a few percent only.
        assert!(
            (60.0..75.0).contains(&noise.threshold_wide()),
            "{}",
            noise.threshold_wide()
        );
        assert!(noise.sigma_wide < noise.sigma_categories);
        let rho_wide = 1.0 / (2.0 * noise.sigma_wide.powi(2));
        let rho = crate::stats::rho_of(3.0, p.target.unwrap().1);
        assert!(
            rho_wide <= crate::stats::WIDE_SHARE_MAX * rho * 1.001,
            "{rho_wide} of {rho}"
        );
        assert!(
            p.events
                .contains(&DpEvent::gaussian(1.0, noise.sigma_wide, 1).unwrap())
        );
        assert!(
            p.events
                .contains(&DpEvent::approx_dp(0.0, noise.threshold_delta, 1).unwrap())
        );
        let (a, b) = (
            p.training.noise_multiplier.unwrap(),
            base.training.noise_multiplier.unwrap(),
        );
        assert!(a >= b && a < b * 1.05, "{a} vs {b}");
        // A mean count the ρ cap cannot reach: the cap holds instead.
        req.wide_mean = Some(3.0);
        let capped = plan(&req, wide).unwrap().preprocess;
        let rho_capped = 1.0 / (2.0 * capped.sigma_wide.powi(2));
        assert!((rho_capped / (crate::stats::WIDE_SHARE_MAX * rho) - 1.0).abs() < 1e-3);
        assert!(
            capped.threshold_wide() > 20.0,
            "{}",
            capped.threshold_wide()
        );
    }

    #[test]
    fn a_table_of_identifiers_only_plans_within_its_budget() {
        // One text column of 800 distinct values and nothing else to estimate: the wide
        // discovery's noise is its own (within its share of ρ), not the uncalibrated category
        // noise of a plan with no other statistic, which left nothing for training.
        let mut req = request(800, None);
        req.epsilon = Some(3.0);
        req.preprocess_share = None;
        req.distinct_noise = Some((17.0, 1));
        req.wide_mean = Some(1.0);
        let wide = Plan {
            wide: 1,
            ..Plan::default()
        };
        let p = plan(&req, wide).unwrap();
        assert!((p.epsilon_total - 3.0).abs() < 5e-3, "{}", p.epsilon_total);
        let rho_wide = 1.0 / (2.0 * p.preprocess.sigma_wide.powi(2));
        let rho = crate::stats::rho_of(3.0, p.target.unwrap().1);
        assert!(
            rho_wide <= crate::stats::WIDE_SHARE_MAX * rho * 1.001,
            "σ {} costs ρ {rho_wide} of {rho}",
            p.preprocess.sigma_wide
        );
        assert!(p.epsilon_preprocess < 1.5, "{}", p.epsilon_preprocess);
    }

    #[test]
    fn the_preprocessing_share_adapts_to_the_tables_size_and_width() {
        let delta = |n: usize| Delta::new(default_delta(n)).unwrap();
        // Diamonds' shape (43k rows: 7 numeric columns, 3 categorical) keeps 10% at ε = 1.
        let diamonds = Plan {
            releases: 14,
            discoveries: 3,
            ..Plan::default()
        };
        let (share, noise, coarse) = auto_share(diamonds, 1.0, delta(43_152), 43_152).unwrap();
        assert_eq!((share, coarse), (0.1, false));
        assert!(noise.sigma <= 431.52, "{}", noise.sigma);
        // A small table (750 rows, 17 numeric and 4 categorical columns) takes more, and at
        // ε = 1 says its statistics are coarse.
        let small = Plan {
            releases: 34,
            discoveries: 4,
            ..Plan::default()
        };
        let (s3, _, c3) = auto_share(small, 3.0, delta(750), 750).unwrap();
        let (s1, n1, c1) = auto_share(small, 1.0, delta(750), 750).unwrap();
        assert!(s3 > 0.1 && s1 >= s3, "{s3} {s1}");
        assert_eq!(s1, 0.8);
        assert!(c1 && n1.sigma > 7.5, "{c1} {}", n1.sigma);
        let _ = c3;
        // A wider table needs more noise at the same share, so no smaller a share.
        let wide = Plan {
            releases: 170,
            discoveries: 1,
            ..Plan::default()
        };
        let (sw, _, _) = auto_share(wide, 3.0, delta(4658), 4658).unwrap();
        let (sn, _, _) = auto_share(diamonds, 3.0, delta(4658), 4658).unwrap();
        assert!(sw >= sn, "{sw} {sn}");
        // The plan records the share, and a given share is kept.
        let mut req = request(5000, None);
        req.preprocess_share = None;
        let p = plan(&req, small).unwrap();
        assert!(AUTO_SHARES.contains(&p.preprocess_share));
        req.preprocess_share = Some(0.25);
        assert_eq!(plan(&req, small).unwrap().preprocess_share, 0.25);
    }

    #[test]
    fn the_automatic_share_leaves_the_training_a_tenth_of_epsilon() {
        // psid1976's shape (600 rows, 21 columns, their kinds released) at a small ε: 80%
        // for the statistics with the row count and the kinds spent 0.105 of ε = 0.1
        // before the training, and the plan failed on its calibration.
        // (At ε = 0.1-0.2 the kinds release reads most of its columns as numbers.)
        let shapes = [(34, 5), (56, 2), (60, 1)].map(|(releases, discoveries)| Plan {
            releases,
            discoveries,
            ..Plan::default()
        });
        let small = shapes[0];
        for (eps, stats) in [0.1, 0.15, 0.2, 0.3, 0.5, 1.0]
            .into_iter()
            .flat_map(|e| shapes.map(|s| (e, s)))
        {
            let mut req = request(600, None);
            req.epsilon = Some(eps);
            req.preprocess_share = None;
            let delta = Delta::new(default_delta(600)).unwrap();
            req.kind_noise = Some((crate::stats::kind_noise(21, 600, eps, delta), 21));
            match plan(&req, stats) {
                Ok(p) => {
                    let pre = p.epsilon_preprocess;
                    assert!(pre <= 0.9 * eps * 1.0001, "ε {eps}: {pre}");
                    assert!(p.epsilon_total <= eps * 1.0001, "ε {eps}");
                }
                // Too small for its statistics: the floor's line, never a calibration error.
                Err(e) => assert!(matches!(e, SynthError::TooFewRows(_)), "ε {eps}: {e}"),
            }
        }
        // A share that fits is still taken whole: 80% at ε = 1.
        let mut req = request(600, None);
        req.preprocess_share = None;
        assert_eq!(plan(&req, small).unwrap().preprocess_share, 0.8);
    }

    #[test]
    fn a_rare_class_in_a_wide_table_keeps_a_third_of_the_preprocessing() {
        use crate::stats::category_weight;
        let wide = Plan {
            releases: 170,
            discoveries: 1,
            ..Plan::default()
        };
        assert_eq!(category_weight(wide), 85.0);
        let narrow = Plan {
            releases: 14,
            discoveries: 3,
            ..Plan::default()
        };
        assert_eq!(category_weight(narrow), crate::stats::CATEGORY_WEIGHT);
        // With the weight, the 6% class of a 4,658-row table clears its threshold at ε = 1.
        let d = Delta::new(default_delta(4658)).unwrap();
        let (_, noise, _) = auto_share(wide, 1.0, d, 4658).unwrap();
        assert!(noise.threshold() < 0.06 * 4658.0, "{}", noise.threshold());
    }

    #[test]
    fn noisy_counts_are_noisy_and_at_least_one() {
        let mut rng = SecureRng::from_seed(1);
        let draws: Vec<usize> = (0..2000)
            .map(|_| noisy_row_count(10_000, &mut rng))
            .collect();
        let mean = draws.iter().sum::<usize>() as f64 / 2000.0;
        let var = draws
            .iter()
            .map(|&d| (d as f64 - mean).powi(2))
            .sum::<f64>()
            / 1999.0;
        assert!((mean - 10_000.0).abs() < 5.0, "{mean}");
        assert!((var.sqrt() - ROW_COUNT_NOISE).abs() < 4.0, "{}", var.sqrt());
        assert!((0..200).all(|_| noisy_row_count(0, &mut rng) >= 1));
    }
}
