//! Privacy planning for one synthesis run, before any row is touched: the noise of the
//! preprocessing statistics (a share of ε, default 10%), then the DP-SGD noise multiplier
//! calibrated so that preprocessing and training *composed* stay within (ε, δ). The row
//! count is treated as public (it sets q and the default δ).

use fedsynth_privacy::{
    AccountantKind, Delta, DpEvent, Epsilon, SamplingRate, Steps, calibrate_noise,
};

use crate::error::{Result, SynthError};
use crate::stats::{Noise, Plan};
use crate::train::TrainConfig;

/// The privacy side of a run.
#[derive(Debug, Clone)]
pub struct PrivacyPlan {
    /// Target (ε, δ); `None` for a run without differential privacy.
    pub target: Option<(Epsilon, Delta)>,
    /// Noise of the preprocessing statistics (σ = 0: exact, no DP).
    pub preprocess: Noise,
    /// Training settings, with the calibrated noise multiplier.
    pub training: TrainConfig,
    /// Events of preprocessing, then training, in the order they happen.
    pub events: Vec<DpEvent>,
    /// ε of preprocessing alone at δ.
    pub epsilon_preprocess: f64,
    /// ε of everything composed at δ.
    pub epsilon_total: f64,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanRequest {
    /// Target ε (`None` or ∞: no DP).
    pub epsilon: Option<f64>,
    /// Target δ (`None`: 1/n^1.5).
    pub delta: Option<f64>,
    /// Rows in the table.
    pub rows: usize,
    /// Epochs.
    pub epochs: usize,
    /// Expected batch size.
    pub batch_size: usize,
    /// Share of ε for preprocessing statistics.
    pub preprocess_share: f64,
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
            epsilon_preprocess: f64::INFINITY,
            epsilon_total: f64::INFINITY,
        });
    };
    let epsilon = Epsilon::new(eps)?;
    if eps <= 0.0 {
        return Err(SynthError::Setting(
            "ε must be > 0 (or inf for no privacy)".into(),
        ));
    }
    let delta = Delta::new(
        req.delta
            .unwrap_or_else(|| 1.0 / (req.rows as f64).powf(1.5)),
    )?;
    if !(0.0..1.0).contains(&req.preprocess_share) {
        return Err(SynthError::Setting(
            "the preprocessing share must be in [0, 1)".into(),
        ));
    }
    let (preprocess, pre_events) = if stats.is_free() {
        (Noise::exact(), vec![])
    } else {
        if req.preprocess_share <= 0.0 {
            return Err(SynthError::Setting(
                "the schema needs private statistics, so the preprocessing share must be > 0"
                    .into(),
            ));
        }
        let noise = Noise::calibrate(stats, Epsilon::new(eps * req.preprocess_share)?, delta)?;
        let events = noise.events(stats)?;
        (noise, events)
    };
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
        epsilon_preprocess,
        epsilon_total,
    })
}
