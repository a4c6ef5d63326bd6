//! `fedsynth budget`: ε of DP-SGD from (q, σ, T, δ), or σ from a target ε.

use anyhow::Result;
use fedsynth_privacy::{
    AccountantKind, Delta, Epsilon, NoiseMultiplier, SamplingRate, Steps, calibrate_noise,
    dpsgd_epsilon,
};
use serde_json::json;

use crate::BudgetArgs;

pub fn run(args: &BudgetArgs) -> Result<()> {
    let kind: AccountantKind = args.accountant.parse()?;
    let q = SamplingRate::new(args.sampling_rate)?;
    let steps = Steps::new(args.steps)?;
    let delta = Delta::new(args.delta)?;
    if args.calibrate {
        let target = Epsilon::new(args.epsilon.unwrap_or(f64::NAN))?;
        let sigma = calibrate_noise(kind, target, q, steps, delta, &[])?;
        let achieved = dpsgd_epsilon(kind, q, sigma, steps, delta)?;
        if args.json {
            println!(
                "{}",
                json!({"noise_multiplier": sigma.get(), "epsilon": achieved, "target_epsilon": target.get(),
                       "accountant": kind.name(), "sampling_rate": q.get(), "steps": steps.get(), "delta": delta.get()})
            );
        } else {
            println!(
                "noise multiplier σ = {:.6}  (ε = {achieved:.6} ≤ {target} at δ = {:e}; {} accountant, {steps} steps at q = {q})",
                sigma.get(),
                delta.get(),
                kind.name()
            );
        }
        return Ok(());
    }
    let sigma = NoiseMultiplier::new(args.noise_multiplier.unwrap_or(f64::NAN))?;
    let eps = dpsgd_epsilon(kind, q, sigma, steps, delta)?;
    if args.json {
        println!(
            "{}",
            json!({"epsilon": eps, "accountant": kind.name(), "sampling_rate": q.get(),
                   "noise_multiplier": sigma.get(), "steps": steps.get(), "delta": delta.get()})
        );
    } else {
        println!(
            "ε = {eps:.6} at δ = {:e}  ({} accountant; {steps} steps of the Poisson-subsampled Gaussian, q = {q}, σ = {sigma})",
            delta.get(),
            kind.name()
        );
    }
    Ok(())
}
