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
    let mut f_hi = eps_at(hi)? - target;
    let mut f_lo = None;
    while f_hi > 0.0 {
        (lo, f_lo) = (hi, Some(f_hi));
        hi *= 2.0;
        guard += 1;
        if guard > 20 {
            return Err(PrivacyError::Calibration(format!(
                "no σ up to {hi} meets ε={target} at δ={delta}"
            )));
        }
        f_hi = eps_at(hi)? - target;
    }
    let mut f_lo = match f_lo {
        Some(f) => f,
        None => eps_at(lo)? - target,
    };
    while f_lo <= 0.0 {
        // The smallest σ supported already meets the target.
        if lo <= 0.05 {
            return NoiseMultiplier::new(lo);
        }
        (hi, f_hi) = (lo, f_lo);
        lo *= 0.7;
        f_lo = eps_at(lo)? - target;
    }
    narrow(lo, f_lo, hi, f_hi, &|sigma| Ok(eps_at(sigma)? - target)).and_then(NoiseMultiplier::new)
}

/// Relative width of the bracket [`calibrate_with`] narrows to.
const CALIBRATION_TOLERANCE: f64 = 1e-4;

/// The meeting end `hi` of a bracket narrowed to [`CALIBRATION_TOLERANCE`] of it, where
/// `f(lo) = f_lo > 0` (the target failed) and `f(hi) = f_hi ≤ 0` (met), `f` decreasing:
/// regula falsi with the Illinois rule (an end kept twice has its value halved, so both
/// ends move), each probe at least half the tolerance inside the bracket, so that once the
/// estimate is within the tolerance of the root a probe beside it closes the bracket. ε(σ)
/// is smooth, and this takes about half the evaluations of bisection (each a composition
/// of the whole plan under the PLD accountant). The end returned met the target when
/// evaluated, as bisection's did.
fn narrow(
    mut lo: f64,
    f_lo: f64,
    mut hi: f64,
    f_hi: f64,
    f: &dyn Fn(f64) -> Result<f64>,
) -> Result<f64> {
    // The ends' values as regula falsi weighs them (halved by the Illinois rule), and which
    // end the last probe replaced (`Some(true)`: hi).
    let (mut w_lo, mut w_hi) = (f_lo, f_hi);
    let mut last_hi = None;
    while (hi - lo) / hi > CALIBRATION_TOLERANCE {
        let margin = 0.5 * CALIBRATION_TOLERANCE * hi;
        let secant = hi - w_hi * (hi - lo) / (w_hi - w_lo);
        let x = if secant.is_finite() && (w_lo - w_hi).is_finite() {
            secant.clamp(lo + margin, hi - margin)
        } else {
            0.5 * (lo + hi)
        };
        let fx = f(x)?;
        let met = fx <= 0.0;
        if met {
            (hi, w_hi) = (x, fx);
        } else {
            (lo, w_lo) = (x, fx);
        }
        match (last_hi, met) {
            (Some(true), true) => w_lo *= 0.5,
            (Some(false), false) => w_hi *= 0.5,
            _ => {}
        }
        last_hi = Some(met);
    }
    debug_assert!(w_hi <= 0.0 && w_lo > 0.0);
    Ok(hi)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The bracket closes to the tolerance around the root, its meeting end returned, in
    /// fewer evaluations than bisection's 15 on a smooth curve shaped like ε(σ), and still
    /// closes on a step (no slope to follow).
    #[test]
    fn narrowing_closes_the_bracket_around_the_root() {
        let calls = Cell::new(0);
        let smooth = |s: f64| -> Result<f64> {
            calls.set(calls.get() + 1);
            Ok(1.0 / (s * s) - 0.25)
        };
        let (lo, hi) = (1.0, 4.0);
        let got = narrow(lo, smooth(lo).unwrap(), hi, smooth(hi).unwrap(), &smooth).unwrap();
        assert!((2.0..=2.0 * (1.0 + 1e-4)).contains(&got), "{got}");
        assert!(calls.get() <= 2 + 10, "{} evaluations", calls.get());
        let step = |s: f64| -> Result<f64> { Ok(if s < 2.5 { 1.0 } else { -1.0 }) };
        let got = narrow(lo, 1.0, hi, -1.0, &step).unwrap();
        assert!((2.5..=2.5 * (1.0 + 1e-4)).contains(&got), "{got}");
    }

    /// The σ calibrated for DP-SGD after a plan's statistics is the smallest that meets the
    /// target to the tolerance: it meets it, and 10⁻⁴ less noise does not.
    #[test]
    fn the_calibrated_noise_is_the_smallest_that_meets_the_target() {
        let delta = Delta::new(1e-6).unwrap();
        let prior = [DpEvent::gaussian(1.0, 40.0, 200).unwrap()];
        let q = SamplingRate::new(0.1).unwrap();
        let steps = Steps::new(330).unwrap();
        for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
            let target = Epsilon::new(3.0).unwrap();
            let sigma = calibrate_noise(kind, target, q, steps, delta, &prior).unwrap();
            let eps = |s: f64| {
                let mut events = prior.to_vec();
                events.push(DpEvent::subsampled_gaussian(0.1, s, 330).unwrap());
                kind.epsilon(&events, delta).unwrap()
            };
            assert!(eps(sigma.get()) <= 3.0, "{kind:?}: σ {sigma}");
            assert!(
                eps(sigma.get() * (1.0 - 1e-4)) > 3.0,
                "{kind:?}: σ {sigma} not the least"
            );
        }
    }
}
