//! One face for both accountants, and noise calibration: the smallest noise multiplier that
//! meets a target (ε, δ) for a sampling rate and a number of steps.

use serde::{Deserialize, Serialize};

use crate::error::{PrivacyError, Result};
use crate::event::DpEvent;
use crate::params::{Delta, Epsilon, NoiseMultiplier, SamplingRate, Steps};
use crate::pld::PldAccountant;
use crate::rdp::RdpAccountant;

/// Which accountant composes the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    /// Rényi DP over dp_accounting's default orders.
    Rdp,
    /// Privacy loss distributions (tighter; the default).
    #[default]
    Pld,
}

impl AccountantKind {
    /// The accountant's name as shown to users (`rdp` or `pld`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
        }
    }

    /// ε at δ for the composition of `events` (0 for no events).
    pub fn epsilon(self, events: &[DpEvent], delta: Delta) -> Result<f64> {
        if events.is_empty() {
            return Ok(0.0);
        }
        match self {
            Self::Rdp => {
                let mut acc = RdpAccountant::default();
                for e in events {
                    acc.compose(e)?;
                }
                Ok(acc.epsilon(delta.get()))
            }
            // A mechanism with a Rényi curve only (secure aggregation's Skellam noise) takes
            // the whole composition to RDP: a valid, slightly looser bound for the others.
            // Releases known only by (ε, δ) (a discovery's threshold) have no Rényi curve:
            // they are added by basic composition, their δ taken out of the RDP's.
            Self::Pld if events.iter().any(DpEvent::rdp_only) => {
                let (approx, rest): (Vec<&DpEvent>, Vec<&DpEvent>) = events
                    .iter()
                    .partition(|e| matches!(e, DpEvent::ApproxDp { .. }));
                let (mut eps_a, mut delta_a) = (0.0, 0.0);
                for e in approx {
                    if let DpEvent::ApproxDp {
                        epsilon,
                        delta,
                        count,
                    } = e
                    {
                        eps_a += epsilon.get() * count.get() as f64;
                        delta_a += delta * count.get() as f64;
                    }
                }
                if delta_a >= delta.get() {
                    return Err(PrivacyError::Calibration(format!(
                        "the (ε, δ) releases spend δ = {delta_a:e}, not below the target {}",
                        delta.get()
                    )));
                }
                let rest: Vec<DpEvent> = rest.into_iter().cloned().collect();
                let rdp = Self::Rdp.epsilon(&rest, Delta::new(delta.get() - delta_a)?)?;
                Ok(rdp + eps_a)
            }
            Self::Pld => PldAccountant::default().epsilon(events, delta.get()),
        }
    }
}

impl std::str::FromStr for AccountantKind {
    type Err = PrivacyError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rdp" => Ok(Self::Rdp),
            "pld" => Ok(Self::Pld),
            other => Err(crate::error::invalid(
                "accountant",
                other,
                "must be rdp or pld",
            )),
        }
    }
}

/// ε spent by `steps` DP-SGD steps with rate q and noise multiplier σ, at δ.
pub fn dpsgd_epsilon(
    kind: AccountantKind,
    q: SamplingRate,
    sigma: NoiseMultiplier,
    steps: Steps,
    delta: Delta,
) -> Result<f64> {
    let event = DpEvent::SubsampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
        steps,
    };
    kind.epsilon(&[event], delta)
}

/// The smallest noise multiplier σ (to a relative tolerance of 10⁻⁴) such that `steps`
/// DP-SGD steps at rate q, composed after the `prior` events, stay within ε at δ.
/// The σ returned has been checked: its ε never exceeds the target.
pub fn calibrate_noise(
    kind: AccountantKind,
    target: Epsilon,
    q: SamplingRate,
    steps: Steps,
    delta: Delta,
    prior: &[DpEvent],
) -> Result<NoiseMultiplier> {
    calibrate_with(kind, target, delta, prior, &|sigma| {
        Ok(DpEvent::SubsampledGaussian {
            sampling_rate: q,
            noise_multiplier: NoiseMultiplier::new(sigma)?,
            steps,
        })
    })
}

/// The smallest σ (to a relative tolerance of 10⁻⁴) such that the event `release(σ)`,
/// composed after the `prior` events, stays within ε at δ; `release` must grow more private
/// as σ grows (any noise-multiplier mechanism: DP-SGD, distributed DP-SGD). Checked: the ε
/// of the σ returned never exceeds the target.
pub fn calibrate_with(
    kind: AccountantKind,
    target: Epsilon,
    delta: Delta,
    prior: &[DpEvent],
    release: &dyn Fn(f64) -> Result<DpEvent>,
) -> Result<NoiseMultiplier> {
    let eps_at = |sigma: f64| -> Result<f64> {
        let mut events = prior.to_vec();
        events.push(release(sigma)?);
        kind.epsilon(&events, delta)
    };
    let target = target.get();
    if target <= 0.0 {
        return Err(PrivacyError::Calibration(
            "a target ε of 0 needs infinite noise".into(),
        ));
    }
    let prior_eps = kind.epsilon(prior, delta)?;
    if prior_eps >= target {
        return Err(PrivacyError::Calibration(format!(
            "the earlier releases already spend ε={prior_eps:.4}, at or over the target {target}"
        )));
    }
    // Bracket: lo fails the target, hi meets it. RDP is cheap and never tighter than PLD,
    // so its σ is a good upper end for PLD and keeps PLD away from tiny σ (huge supports).
    let (mut lo, mut hi) = match kind {
        AccountantKind::Rdp => (0.05_f64, 1.0_f64),
        AccountantKind::Pld => {
            // The bracket ignores the prior events (RDP cannot express (ε, δ) ones); the
            // doubling below widens it when they need more noise.
            let rdp = calibrate_with(
                AccountantKind::Rdp,
                Epsilon::new(target - prior_eps)?,
                delta,
                &[],
                release,
            )?;
            (0.7 * rdp.get(), rdp.get())
        }
    };
    if kind == AccountantKind::Rdp && eps_at(lo)? <= target {
        return Err(PrivacyError::Calibration(format!(
            "target ε={target} is met even with σ={lo}; such little noise is not supported"
        )));
    }
    let mut guard = 0;
    while eps_at(hi)? > target {
        lo = hi;
        hi *= 2.0;
        guard += 1;
        if guard > 20 {
            return Err(PrivacyError::Calibration(format!(
                "no σ up to {hi} meets ε={target} at δ={delta}"
            )));
        }
    }
    while lo > 0.05 && eps_at(lo)? <= target {
        hi = lo;
        lo *= 0.7;
    }
    while (hi - lo) / hi > 1e-4 {
        let mid = 0.5 * (lo + hi);
        if eps_at(mid)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    debug_assert!(eps_at(hi)? <= target);
    NoiseMultiplier::new(hi)
}
