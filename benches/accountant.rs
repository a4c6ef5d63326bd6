//! Accountant benchmarks: PLD and RDP for 10,000 DP-SGD steps, and noise calibration.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, criterion_group, criterion_main};
use fedsynth_privacy::pld::PldAccountant;
use fedsynth_privacy::rdp::RdpAccountant;
use fedsynth_privacy::{
    AccountantKind, Delta, DpEvent, Epsilon, SamplingRate, Steps, calibrate_noise,
};

fn accountants(c: &mut Criterion) {
    let event = DpEvent::subsampled_gaussian(0.004, 1.1, 10_000).expect("valid event");
    let mut g = c.benchmark_group("accountant");
    g.sample_size(20);
    g.bench_function("pld_10000_steps", |b| {
        b.iter(|| {
            PldAccountant::default()
                .epsilon(std::slice::from_ref(&event), 1e-5)
                .expect("pld")
        })
    });
    g.bench_function("rdp_10000_steps", |b| {
        b.iter(|| {
            let mut acc = RdpAccountant::default();
            acc.compose(&event).expect("rdp");
            acc.epsilon(1e-5)
        })
    });
    let stats_then_training = vec![
        DpEvent::laplace(1.0, 10.0, 10).expect("valid"),
        DpEvent::gaussian(1.0, 20.0, 5).expect("valid"),
        event.clone(),
    ];
    g.bench_function("pld_stats_then_10000_steps", |b| {
        b.iter(|| {
            PldAccountant::default()
                .epsilon(&stats_then_training, 1e-5)
                .expect("pld")
        })
    });
    // A plan as `fedsynth synth` composes it for caravan at ε = 3 (the row count, 86 kinds,
    // 170 histograms, 2 discoveries, then DP-SGD), which calibrating its statistics' share
    // and then its DP-SGD noise evaluates dozens of times.
    let plan = vec![
        DpEvent::gaussian(1.0, 50.0, 1).expect("valid"),
        DpEvent::gaussian(1.0, 244.7, 86).expect("valid"),
        DpEvent::gaussian(1.0, 50.9, 170).expect("valid"),
        DpEvent::gaussian(1.0, 7.8, 2).expect("valid"),
        DpEvent::subsampled_gaussian(0.1, 3.34, 330).expect("valid"),
    ];
    g.bench_function("pld_plan_statistics_then_330_steps", |b| {
        b.iter(|| {
            PldAccountant::default()
                .epsilon(&plan, 3.16e-6)
                .expect("pld")
        })
    });
    let (target, q, steps, delta) = (
        Epsilon::new(3.0).expect("valid"),
        SamplingRate::new(0.01).expect("valid"),
        Steps::new(2_000).expect("valid"),
        Delta::new(1e-5).expect("valid"),
    );
    g.bench_function("calibrate_pld_2000_steps", |b| {
        b.iter(|| {
            calibrate_noise(AccountantKind::Pld, target, q, steps, delta, &[]).expect("calibrate")
        })
    });
    g.finish();
}

criterion_group!(benches, accountants);
criterion_main!(benches);
