//! Known-answer tests for the accountants against Google dp_accounting's reference values
//! (`tests/data/dp_accounting.json`), properties of ε, calibration, and a cross-check of the
//! single Gaussian release against OpenDP.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use fedsynth_privacy::pld::PldAccountant;
use fedsynth_privacy::rdp::RdpAccountant;
use fedsynth_privacy::{
    AccountantKind, Delta, DpEvent, Epsilon, SamplingRate, Steps, calibrate_noise,
};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("data/dp_accounting.json");
    serde_json::from_str(text).expect("vector file parses")
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing"))
}

#[test]
fn rdp_matches_dp_accounting_within_one_percent() {
    let v = vectors();
    let orders: Vec<f64> = v["rdp_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_f64().unwrap())
        .collect();
    for case in v["subsampled_gaussian"].as_array().unwrap() {
        let mut acc = RdpAccountant::with_orders(orders.clone()).unwrap();
        let event = DpEvent::subsampled_gaussian(
            f(case, "sampling_rate"),
            f(case, "noise_multiplier"),
            f(case, "steps") as u64,
        )
        .unwrap();
        acc.compose(&event).unwrap();
        let got = acc.epsilon(f(case, "delta"));
        let want = f(case, "epsilon_rdp");
        let rel = (got - want).abs() / want;
        assert!(
            rel < 0.01,
            "{case}: rdp ε {got} vs {want} ({:.3}%)",
            rel * 100.0
        );
    }
}

#[test]
fn pld_matches_dp_accounting_within_two_percent_and_never_under_reports() {
    let v = vectors();
    for case in v["subsampled_gaussian"].as_array().unwrap() {
        let event = DpEvent::subsampled_gaussian(
            f(case, "sampling_rate"),
            f(case, "noise_multiplier"),
            f(case, "steps") as u64,
        )
        .unwrap();
        let got = PldAccountant::default()
            .epsilon(&[event], f(case, "delta"))
            .unwrap();
        let want = f(case, "epsilon_pld");
        let rel = (got - want) / want;
        assert!(
            rel.abs() < 0.02,
            "{case}: pld ε {got} vs {want} ({:+.3}%)",
            rel * 100.0
        );
        assert!(
            got >= want * 0.98,
            "{case}: pld under-reports: {got} vs {want}"
        );
    }
}

#[test]
fn single_gaussian_release_is_exact() {
    let v = vectors();
    for case in v["gaussian_single"].as_array().unwrap() {
        let event = DpEvent::gaussian(f(case, "l2_sensitivity"), f(case, "sigma"), 1).unwrap();
        let got = PldAccountant::default()
            .epsilon(&[event], f(case, "delta"))
            .unwrap();
        let want = f(case, "epsilon_exact");
        assert!((got - want).abs() / want < 0.005, "{case}: {got} vs {want}");
        assert!(got >= want * (1.0 - 1e-4), "under-reports: {got} vs {want}");
    }
}

#[test]
fn rdp_calibration_matches_reference_and_meets_target() {
    let v = vectors();
    for case in v["sigma_calibration"].as_array().unwrap() {
        let target = Epsilon::new(f(case, "target_epsilon")).unwrap();
        let q = SamplingRate::new(f(case, "sampling_rate")).unwrap();
        let steps = Steps::new(f(case, "steps") as u64).unwrap();
        let delta = Delta::new(f(case, "delta")).unwrap();
        let sigma = calibrate_noise(AccountantKind::Rdp, target, q, steps, delta, &[]).unwrap();
        let want = f(case, "noise_multiplier_rdp");
        assert!(
            (sigma.get() - want).abs() / want < 0.01,
            "{case}: σ {sigma} vs {want}"
        );
        let eps =
            fedsynth_privacy::dpsgd_epsilon(AccountantKind::Rdp, q, sigma, steps, delta).unwrap();
        assert!(
            eps <= target.get(),
            "calibrated σ overspends: {eps} > {target}"
        );
    }
}

#[test]
fn pld_calibration_round_trips() {
    let target = Epsilon::new(2.0).unwrap();
    let q = SamplingRate::new(0.01).unwrap();
    let steps = Steps::new(1000).unwrap();
    let delta = Delta::new(1e-5).unwrap();
    let sigma = calibrate_noise(AccountantKind::Pld, target, q, steps, delta, &[]).unwrap();
    let eps = fedsynth_privacy::dpsgd_epsilon(AccountantKind::Pld, q, sigma, steps, delta).unwrap();
    assert!(eps <= 2.0 && eps > 1.98, "ε at calibrated σ={sigma}: {eps}");
    // PLD is tighter than RDP, so it needs less noise for the same target.
    let rdp_sigma = calibrate_noise(AccountantKind::Rdp, target, q, steps, delta, &[]).unwrap();
    assert!(sigma.get() < rdp_sigma.get(), "{sigma} vs {rdp_sigma}");
}

#[test]
fn epsilon_grows_with_steps_and_rate_and_shrinks_with_noise() {
    let delta = Delta::new(1e-5).unwrap();
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let eps = |q: f64, s: f64, t: u64| {
            kind.epsilon(&[DpEvent::subsampled_gaussian(q, s, t).unwrap()], delta)
                .unwrap()
        };
        let base = eps(0.01, 1.0, 500);
        assert!(eps(0.01, 1.0, 1000) > base, "{kind:?} steps");
        assert!(eps(0.02, 1.0, 500) > base, "{kind:?} rate");
        assert!(eps(0.01, 1.5, 500) < base, "{kind:?} noise");
    }
}

#[test]
fn pld_is_never_looser_than_rdp() {
    let v = vectors();
    let delta = 1e-5;
    for case in v["subsampled_gaussian"].as_array().unwrap() {
        let event = DpEvent::subsampled_gaussian(
            f(case, "sampling_rate"),
            f(case, "noise_multiplier"),
            f(case, "steps") as u64,
        )
        .unwrap();
        let pld = PldAccountant::default()
            .epsilon(std::slice::from_ref(&event), delta)
            .unwrap();
        let mut rdp = RdpAccountant::default();
        rdp.compose(&event).unwrap();
        assert!(pld <= rdp.epsilon(delta) * 1.001, "{case}");
    }
}

/// The exact ε at `delta` of one Gaussian mechanism of sensitivity/σ = `mu` (Balle & Wang's
/// analytic curve δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ), solved by bisection).
fn gaussian_epsilon_exact(mu: f64, delta: f64) -> f64 {
    use fedsynth_privacy::special::ndtr;
    let curve = |e: f64| ndtr(mu / 2.0 - e / mu) - e.exp() * ndtr(-mu / 2.0 - e / mu);
    let (mut lo, mut hi) = (0.0_f64, 100.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if curve(mid) > delta {
            lo = mid
        } else {
            hi = mid
        }
    }
    hi
}

#[test]
fn gaussian_releases_compose_as_one_gaussian() {
    // A plan's statistics: histograms, discoveries at a smaller σ, a row count of its own.
    // Gaussian losses add up exactly (μ² = Σ count·(Δ/σ)²): the composed ε is the single
    // Gaussian's, never under it, and within the grid's rounding of it.
    let events = [
        DpEvent::gaussian(1.0, 50.9, 170).unwrap(),
        DpEvent::gaussian(1.0, 7.8, 2).unwrap(),
        DpEvent::gaussian(2.0, 100.0, 1).unwrap(),
        DpEvent::gaussian(1.0, 244.7, 86).unwrap(),
    ];
    let mu2: f64 = 170.0 / 50.9_f64.powi(2)
        + 2.0 / 7.8_f64.powi(2)
        + (2.0_f64 / 100.0).powi(2)
        + 86.0 / 244.7_f64.powi(2);
    for delta in [1e-5, 3.16e-6, 1e-9] {
        let want = gaussian_epsilon_exact(mu2.sqrt(), delta);
        let got = PldAccountant::default().epsilon(&events, delta).unwrap();
        assert!(got >= want * (1.0 - 1e-6), "under-reports: {got} vs {want}");
        assert!(
            (got - want) / want < 0.002,
            "{got} vs {want} at δ = {delta}"
        );
    }
    // With DP-SGD after them: the same as one merged Gaussian release before it.
    let sgd = DpEvent::subsampled_gaussian(0.1, 3.3, 330).unwrap();
    let merged = DpEvent::gaussian(1.0, mu2.sqrt().recip(), 1).unwrap();
    let pld = PldAccountant::default();
    let mut all = events.to_vec();
    all.push(sgd.clone());
    let a = pld.epsilon(&all, 1e-5).unwrap();
    let b = pld.epsilon(&[merged, sgd], 1e-5).unwrap();
    assert!((a - b).abs() < 1e-9, "{a} vs {b}");
}

#[test]
fn heterogeneous_composition() {
    // Preprocessing statistics (Laplace and Gaussian releases) then DP-SGD.
    let stats = vec![
        DpEvent::laplace(1.0, 10.0, 3).unwrap(),
        DpEvent::gaussian(1.0, 20.0, 2).unwrap(),
    ];
    let sgd = DpEvent::subsampled_gaussian(0.01, 1.0, 1000).unwrap();
    let pld = PldAccountant::default();
    let training_only = pld.epsilon(std::slice::from_ref(&sgd), 1e-5).unwrap();
    let mut all = stats.clone();
    all.push(sgd);
    let total = pld.epsilon(&all, 1e-5).unwrap();
    let laplace_pure = 3.0 * 0.1;
    assert!(total > training_only, "{total} vs {training_only}");
    // Tighter than adding the parts (basic composition), yet above training alone.
    let gauss = pld
        .epsilon(&[DpEvent::gaussian(1.0, 20.0, 2).unwrap()], 1e-5)
        .unwrap();
    assert!(total < training_only + laplace_pure + gauss, "{total}");
    // Laplace alone: pure ε = count·Δ/b, reached at δ → 0 and not exceeded.
    let lap = pld
        .epsilon(&[DpEvent::laplace(1.0, 10.0, 3).unwrap()], 1e-12)
        .unwrap();
    assert!(lap <= laplace_pure + 1e-3 && lap > 0.25, "{lap}");
    // An (ε, δ) release composes too, and its δ is carried.
    let ad = pld
        .epsilon(&[DpEvent::approx_dp(0.5, 1e-6, 1).unwrap()], 2e-6)
        .unwrap();
    assert!((ad - 0.5).abs() < 1e-3, "{ad}");
    assert!(
        pld.epsilon(&[DpEvent::approx_dp(0.5, 1e-6, 1).unwrap()], 5e-7)
            .unwrap()
            .is_infinite()
    );
}

/// OpenDP cross-check: the exact ε of one Gaussian release must not exceed OpenDP's
/// zCDP-based bound for the same mechanism, and should be close to it.
#[test]
fn single_gaussian_agrees_with_opendp() {
    use opendp::combinators::make_zCDP_to_approxDP;
    use opendp::domains::AtomDomain;
    use opendp::measurements::make_gaussian;
    use opendp::metrics::AbsoluteDistance;

    for (sens, sigma, delta) in [(1.0, 1.0, 1e-5), (1.0, 5.0, 1e-6), (2.0, 3.0, 1e-5)] {
        let meas = make_gaussian(
            AtomDomain::<f64>::new_non_nan(),
            AbsoluteDistance::<f64>::default(),
            sigma,
            None,
        )
        .expect("gaussian measurement");
        let approx = make_zCDP_to_approxDP(meas).expect("zCDP to approx-DP");
        let profile = approx.map(&sens).expect("privacy map");
        let opendp_eps = profile.epsilon(delta).expect("epsilon");
        let ours = PldAccountant::default()
            .epsilon(&[DpEvent::gaussian(sens, sigma, 1).unwrap()], delta)
            .unwrap();
        assert!(
            ours <= opendp_eps * 1.0001,
            "ours {ours} > opendp {opendp_eps}"
        );
        assert!(
            ours >= 0.75 * opendp_eps,
            "ours {ours} far below opendp {opendp_eps}"
        );
    }
}
