//! Privacy loss distribution (PLD) accountant.
//!
//! Each event's privacy loss distribution is discretised on a grid of step `Δ` (default
//! 10⁻⁴) with the pessimistic *connect-the-dots* construction (Doroshenko, Ghazi, Kamath,
//! Kumar, Manurangsi 2022): the discrete PLD matches the mechanism's hockey-stick curve
//! δ(ε) at every grid point and dominates it in between, so every ε reported is an upper
//! bound, without the per-step rounding bias of bucketed PLDs. Compositions are FFT
//! convolutions (exponentiation by squaring for repeated steps) with tails truncated
//! pessimistically: mass cut from the top goes to the infinite loss, mass cut from the
//! bottom moves up to the smallest kept loss. Both add and remove neighbouring relations
//! are tracked and the worse one is reported.

use realfft::RealFftPlanner;

use crate::error::{PrivacyError, Result};
use crate::event::DpEvent;
use crate::special::{ndtr, ndtri};

/// Discretised PMF of a privacy loss: `probs[k]` is the mass at loss `(lower + k)·Δ`;
/// `infinity_mass` is the mass at +∞.
#[derive(Debug, Clone)]
pub struct LossPmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

impl LossPmf {
    fn point(loss_index: i64) -> Self {
        Self {
            lower: loss_index,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    /// Number of grid points carried.
    pub fn len(&self) -> usize {
        self.probs.len()
    }

    /// Whether the PMF carries no finite mass.
    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }

    /// Hockey-stick divergence δ(ε) = p∞ + Σ p_k (1 − e^{ε − ℓ_k})₊.
    pub fn delta_for_epsilon(&self, epsilon: f64, d: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (k, &p) in self.probs.iter().enumerate() {
            let loss = (self.lower + k as i64) as f64 * d;
            if loss > epsilon {
                delta += -(epsilon - loss).exp_m1() * p;
            }
        }
        delta
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta` (∞ if the infinite mass alone exceeds it).
    pub fn epsilon_for_delta(&self, delta: f64, d: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let (mut upper, mut lower) = (self.infinity_mass, 0.0_f64);
        for (k, &p) in self.probs.iter().enumerate().rev() {
            let loss = (self.lower + k as i64) as f64 * d;
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= loss {
                break;
            }
            upper += p;
            lower += (-loss).exp() * p;
            if upper >= delta && lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if upper <= lower + delta {
            return 0.0;
        }
        ((upper - delta) / lower).ln().max(0.0)
    }

    fn compose(&self, other: &Self, tail: f64) -> Self {
        let probs = convolve(&self.probs, &other.probs);
        let inf =
            self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        let mut out = Self {
            lower: self.lower + other.lower,
            probs,
            infinity_mass: inf,
        };
        out.truncate(tail);
        out
    }

    /// The `times`-fold composition with itself, in one FFT: the PMF's spectrum is raised to
    /// the power `times` (by repeated squaring) on a window of losses that a Chernoff bound
    /// shows holds all but `tail` of the composed mass. Mass beyond the window's top is
    /// charged to the infinite loss, so the result stays pessimistic.
    fn self_compose(&self, times: u64, tail: f64) -> Self {
        if times == 1 {
            return self.clone();
        }
        let t = times as f64;
        let nz: Vec<(f64, f64)> = self
            .probs
            .iter()
            .enumerate()
            .filter(|(_, p)| **p > 0.0)
            .map(|(k, &p)| ((self.lower + k as i64) as f64, p.ln()))
            .collect();
        let (kmin, kmax) = (
            nz.first().map_or(0.0, |x| x.0),
            nz.last().map_or(0.0, |x| x.0),
        );
        // log E[exp(λ·k)] over grid indices k (losses in units of Δ).
        let log_mgf = |lambda: f64| {
            let m = nz
                .iter()
                .map(|&(k, lp)| lp + lambda * k)
                .fold(f64::NEG_INFINITY, f64::max);
            m + nz
                .iter()
                .map(|&(k, lp)| (lp + lambda * k - m).exp())
                .sum::<f64>()
                .ln()
        };
        let log_tail = (tail.max(1e-300) / 2.0).ln();
        let (mut upper, mut lower) = (t * kmax, t * kmin);
        let mut lambda = 1e-6;
        while lambda < 10.0 {
            upper = upper.min((t * log_mgf(lambda) - log_tail) / lambda);
            lower = lower.max(-(t * log_mgf(-lambda) - log_tail) / lambda);
            lambda *= 1.25;
        }
        let (i_lo, i_hi) = (lower.floor() as i64, upper.ceil() as i64);
        let width = (i_hi - i_lo + 1).max(1) as usize;
        let size = width.max(self.probs.len()).next_power_of_two();
        // Composed index = times·lower + Σ offsets; the window in offset space starts at `a`.
        let a = i_lo - times as i64 * self.lower;
        let (fwd, inv) = real_ffts(size);
        let mut input = fwd.make_input_vec();
        input[..self.probs.len()].copy_from_slice(&self.probs);
        let mut spec = fwd.make_output_vec();
        fwd.process(&mut input, &mut spec)
            .expect("FFT buffer sizes");
        for z in &mut spec {
            *z = complex_pow(*z, times);
        }
        let mut out = inv.make_output_vec();
        inv.process(&mut spec, &mut out).expect("FFT buffer sizes");
        let scale = 1.0 / size as f64;
        let n = size as i64;
        let probs: Vec<f64> = (0..width as i64)
            .map(|j| out[(a + j).rem_euclid(n) as usize] * scale)
            .collect();
        let inf = 1.0 - (1.0 - self.infinity_mass).powf(t);
        let mut result = Self {
            lower: i_lo,
            probs,
            infinity_mass: inf + tail / 2.0,
        };
        result.truncate(tail);
        result
    }

    /// Drops up to `tail/2` of mass from each end, pessimistically: the bottom tail moves up
    /// to the first kept point, the top tail goes to the infinite loss.
    fn truncate(&mut self, tail: f64) {
        for p in &mut self.probs {
            if *p < 0.0 || !p.is_finite() {
                *p = 0.0;
            }
        }
        let half = tail / 2.0;
        let (mut left, mut left_mass) = (0usize, 0.0);
        while left < self.probs.len() && left_mass + self.probs[left] <= half {
            left_mass += self.probs[left];
            left += 1;
        }
        let (mut right, mut right_mass) = (self.probs.len(), 0.0);
        while right > left + 1 && right_mass + self.probs[right - 1] <= half {
            right_mass += self.probs[right - 1];
            right -= 1;
        }
        if left >= right {
            left = right.saturating_sub(1);
            left_mass = self.probs[..left].iter().sum();
        }
        self.probs.truncate(right);
        self.probs.drain(..left);
        if let Some(first) = self.probs.first_mut() {
            *first += left_mass;
        }
        self.lower += left as i64;
        self.infinity_mass += right_mass;
    }
}

/// z^n by repeated squaring (accurate for large n, unlike the polar form).
fn complex_pow(
    z: realfft::num_complex::Complex<f64>,
    mut n: u64,
) -> realfft::num_complex::Complex<f64> {
    let mut base = z;
    let mut acc = realfft::num_complex::Complex::new(1.0, 0.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= base;
        }
        base *= base;
        n >>= 1;
    }
    acc
}

/// The most FFT points whose plans a thread keeps (see [`real_ffts`]): about 24 bytes of
/// twiddle factors a point for both directions, so at most about 25 MiB a thread.
const PLANNED_POINTS_MAX: usize = 1 << 20;

thread_local! {
    // One FFT planner per thread, with the sizes it holds plans for: it keeps each size's
    // plan (its twiddle factors), and an accountant's calibration composes PMFs of the same
    // few power-of-two sizes many times.
    static PLANNER: std::cell::RefCell<(RealFftPlanner<f64>, Vec<usize>)> =
        std::cell::RefCell::new((RealFftPlanner::new(), Vec::new()));
}

/// The forward and inverse real FFTs of `size` points (a power of two), from the thread's
/// planner while the plans it keeps stay under [`PLANNED_POINTS_MAX`] points (it starts
/// afresh past that, and a larger size is planned alone).
fn real_ffts(
    size: usize,
) -> (
    std::sync::Arc<dyn realfft::RealToComplex<f64>>,
    std::sync::Arc<dyn realfft::ComplexToReal<f64>>,
) {
    let plan = |planner: &mut RealFftPlanner<f64>| {
        (
            planner.plan_fft_forward(size),
            planner.plan_fft_inverse(size),
        )
    };
    if size > PLANNED_POINTS_MAX {
        return plan(&mut RealFftPlanner::new());
    }
    PLANNER.with(|cell| {
        let (planner, sizes) = &mut *cell.borrow_mut();
        if !sizes.contains(&size) {
            if sizes.iter().sum::<usize>() + size > PLANNED_POINTS_MAX {
                *planner = RealFftPlanner::new();
                sizes.clear();
            }
            sizes.push(size);
        }
        plan(planner)
    })
}

/// Linear convolution; direct for small inputs, real FFT otherwise.
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= 32 || a.len() * b.len() <= 4096 {
        let mut out = vec![0.0; n];
        for (i, &x) in a.iter().enumerate() {
            if x != 0.0 {
                for (o, &y) in out[i..].iter_mut().zip(b) {
                    *o += x * y;
                }
            }
        }
        return out;
    }
    let size = n.next_power_of_two();
    let (fwd, inv) = real_ffts(size);
    let mut fa = fwd.make_input_vec();
    fa[..a.len()].copy_from_slice(a);
    let mut fb = fwd.make_input_vec();
    fb[..b.len()].copy_from_slice(b);
    let mut sa = fwd.make_output_vec();
    let mut sb = fwd.make_output_vec();
    // Lengths come from make_*_vec, so process cannot fail.
    fwd.process(&mut fa, &mut sa).expect("FFT buffer sizes");
    fwd.process(&mut fb, &mut sb).expect("FFT buffer sizes");
    for (x, y) in sa.iter_mut().zip(&sb) {
        *x *= *y;
    }
    let mut out = inv.make_output_vec();
    inv.process(&mut sa, &mut out).expect("FFT buffer sizes");
    let scale = 1.0 / size as f64;
    out.truncate(n);
    for v in &mut out {
        *v *= scale;
    }
    out
}

/// A mechanism's privacy loss seen through its hockey-stick curve.
trait PrivacyLossCurve {
    /// δ(ε) = sup_S μ_upper(S) − e^ε μ_lower(S).
    fn delta(&self, epsilon: f64) -> f64;
    /// Losses between which all but `tail` of μ_upper's mass lies.
    fn loss_bounds(&self, tail: f64) -> (f64, f64);
}

/// Poisson-subsampled Gaussian (sensitivity 1, noise σ), remove relation:
/// μ_upper = (1−q)·N(0,σ²) + q·N(1,σ²), μ_lower = N(0,σ²).
struct SubsampledGaussianRemove {
    q: f64,
    sigma: f64,
}

impl SubsampledGaussianRemove {
    fn loss(&self, x: f64) -> f64 {
        let s2 = self.sigma * self.sigma;
        if self.q >= 1.0 {
            return (2.0 * x - 1.0) / (2.0 * s2);
        }
        crate::special::log_add(
            (-self.q).ln_1p(),
            self.q.ln() + (2.0 * x - 1.0) / (2.0 * s2),
        )
    }
}

impl PrivacyLossCurve for SubsampledGaussianRemove {
    fn delta(&self, eps: f64) -> f64 {
        let (q, s) = (self.q, self.sigma);
        let e = eps.exp();
        if e <= 1.0 - q {
            return -eps.exp_m1();
        }
        let x = s * s * ((e - (1.0 - q)) / q).ln() + 0.5;
        let d = (1.0 - q) * ndtr(-x / s) + q * ndtr(-(x - 1.0) / s) - e * ndtr(-x / s);
        d.clamp(0.0, 1.0)
    }
    fn loss_bounds(&self, tail: f64) -> (f64, f64) {
        let z = -ndtri(tail / 2.0);
        (self.loss(-self.sigma * z), self.loss(1.0 + self.sigma * z))
    }
}

/// Poisson-subsampled Gaussian, add relation: μ_upper = N(0,σ²), μ_lower = the mixture.
struct SubsampledGaussianAdd {
    q: f64,
    sigma: f64,
}

impl SubsampledGaussianAdd {
    fn loss(&self, x: f64) -> f64 {
        -SubsampledGaussianRemove {
            q: self.q,
            sigma: self.sigma,
        }
        .loss(x)
    }
}

impl PrivacyLossCurve for SubsampledGaussianAdd {
    fn delta(&self, eps: f64) -> f64 {
        let (q, s) = (self.q, self.sigma);
        let em = (-eps).exp();
        if em <= 1.0 - q {
            return 0.0;
        }
        let x = s * s * ((em - (1.0 - q)) / q).ln() + 0.5;
        let e = eps.exp();
        let d = ndtr(x / s) - e * ((1.0 - q) * ndtr(x / s) + q * ndtr((x - 1.0) / s));
        d.clamp(0.0, 1.0)
    }
    fn loss_bounds(&self, tail: f64) -> (f64, f64) {
        let z = -ndtri(tail / 2.0);
        let hi = if self.q < 1.0 {
            -(-self.q).ln_1p()
        } else {
            self.loss(-self.sigma * z)
        };
        (
            self.loss(self.sigma * z),
            hi.min(self.loss(-self.sigma * z)),
        )
    }
}

/// Laplace mechanism with ratio a = sensitivity/scale (symmetric: add = remove).
struct LaplaceCurve {
    a: f64,
}

impl PrivacyLossCurve for LaplaceCurve {
    fn delta(&self, eps: f64) -> f64 {
        if eps >= self.a {
            0.0
        } else if eps <= -self.a {
            -eps.exp_m1()
        } else {
            -((eps - self.a) / 2.0).exp_m1()
        }
    }
    fn loss_bounds(&self, _tail: f64) -> (f64, f64) {
        (-self.a, self.a)
    }
}

/// Connect-the-dots discretisation of a hockey-stick curve on the grid `Δ·ℤ`.
fn connect_dots(curve: &dyn PrivacyLossCurve, d: f64, tail: f64) -> LossPmf {
    let (lo, hi) = curve.loss_bounds(tail);
    let i_lo = (lo / d).floor() as i64;
    let i_hi = ((hi / d).ceil() as i64).max(i_lo + 1);
    let n = (i_hi - i_lo + 1) as usize;
    let eps: Vec<f64> = (0..n).map(|j| (i_lo + j as i64) as f64 * d).collect();
    let deltas: Vec<f64> = eps.iter().map(|&e| curve.delta(e)).collect();
    let mut probs = vec![0.0; n];
    // From the top: δ̂(e_j) − δ̂(e_{j+1}) = p_{j+1}(1 − e^{−Δ}) + s_{j+1}(e^{e_{j+1}} − e^{e_j}),
    // where s_{j+1} = Σ_{i>j+1} p_i e^{−e_i}.
    let infinity_mass = deltas[n - 1];
    let mut s = 0.0_f64;
    let one_minus = -(-d).exp_m1();
    for j in (0..n - 1).rev() {
        let gap = eps[j + 1].exp() - eps[j].exp();
        let p = ((deltas[j] - deltas[j + 1]) - s * gap) / one_minus;
        let p = p.max(0.0);
        probs[j + 1] = p;
        s += p * (-eps[j + 1]).exp();
    }
    let finite: f64 = probs.iter().sum();
    probs[0] = (1.0 - infinity_mass - finite).max(0.0);
    let mut pmf = LossPmf {
        lower: i_lo,
        probs,
        infinity_mass,
    };
    pmf.truncate(tail);
    pmf
}

/// PMF of a release that is (ε, δ)-DP and nothing more is known (worst case: randomized
/// response with failure δ), with losses rounded up to the grid.
fn approx_dp_pmf(epsilon: f64, delta: f64, d: f64) -> LossPmf {
    let hi = (epsilon / d).ceil() as i64;
    let lo = (-epsilon / d).ceil() as i64;
    let w = 1.0 + (-epsilon).exp();
    let p_hi = (1.0 - delta) / w;
    let p_lo = (1.0 - delta) * (-epsilon).exp() / w;
    let mut probs = vec![0.0; (hi - lo + 1) as usize];
    probs[0] += p_lo;
    let last = probs.len() - 1;
    probs[last] += p_hi;
    LossPmf {
        lower: lo,
        probs,
        infinity_mass: delta,
    }
}

/// The composed PLD of a sequence of events, for both neighbouring relations.
#[derive(Debug, Clone)]
pub struct Pld {
    remove: LossPmf,
    add: LossPmf,
    discretization: f64,
}

impl Pld {
    /// The smallest ε such that the composition is (ε, δ)-DP under add/remove adjacency.
    pub fn epsilon(&self, delta: f64) -> f64 {
        let d = self.discretization;
        self.remove
            .epsilon_for_delta(delta, d)
            .max(self.add.epsilon_for_delta(delta, d))
    }

    /// The δ at a given ε (the worse of the two relations).
    pub fn delta(&self, epsilon: f64) -> f64 {
        let d = self.discretization;
        self.remove
            .delta_for_epsilon(epsilon, d)
            .max(self.add.delta_for_epsilon(epsilon, d))
    }

    /// Grid points carried by the larger of the two PMFs.
    pub fn support_size(&self) -> usize {
        self.remove.len().max(self.add.len())
    }
}

/// A PLD accountant with a given grid step and tail truncation.
#[derive(Debug, Clone, Copy)]
pub struct PldAccountant {
    discretization: f64,
    tail_mass: f64,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self {
            discretization: 1e-4,
            tail_mass: 1e-15,
        }
    }
}

impl PldAccountant {
    /// An accountant with grid step `discretization` (> 0) and truncated tail mass (≥ 0).
    pub fn new(discretization: f64, tail_mass: f64) -> Result<Self> {
        if !(discretization.is_finite() && discretization > 0.0 && discretization <= 0.1) {
            return Err(crate::error::invalid(
                "discretization",
                discretization,
                "must be in (0, 0.1]",
            ));
        }
        if !(0.0..1e-6).contains(&tail_mass) {
            return Err(crate::error::invalid(
                "tail mass",
                tail_mass,
                "must be in [0, 1e-6)",
            ));
        }
        Ok(Self {
            discretization,
            tail_mass,
        })
    }

    /// Composes the events into one PLD. The Gaussian releases among them compose exactly
    /// into one Gaussian mechanism (each one's privacy loss is normal, N(μ²/2, μ²) with
    /// μ = sensitivity/σ, and so is their sum, with μ² the sum of theirs), which is
    /// discretised once: a plan's thousands of histograms cost one discretisation instead
    /// of an FFT composition per kind of release, and carry one grid's rounding instead of
    /// several.
    pub fn compose(&self, events: &[DpEvent]) -> Result<Pld> {
        let (d, tail) = (self.discretization, self.tail_mass);
        let mut remove = LossPmf::point(0);
        let mut add = LossPmf::point(0);
        let mut gaussian_mu2 = 0.0_f64;
        for event in events {
            event.validate()?;
            if let DpEvent::Gaussian {
                sensitivity,
                std_dev,
                count,
            } = *event
            {
                gaussian_mu2 += count.get() as f64 * (sensitivity.get() / std_dev.get()).powi(2);
            }
        }
        if gaussian_mu2 > 0.0 {
            let sigma = gaussian_mu2.sqrt().recip();
            remove = connect_dots(&SubsampledGaussianRemove { q: 1.0, sigma }, d, tail);
            add = remove.clone();
        }
        for event in events {
            let (r, a, times) = match *event {
                DpEvent::Gaussian { .. } => continue,
                DpEvent::SubsampledGaussian {
                    sampling_rate,
                    noise_multiplier,
                    steps,
                } => {
                    let (q, sigma) = (sampling_rate.get(), noise_multiplier.get());
                    (
                        connect_dots(&SubsampledGaussianRemove { q, sigma }, d, tail),
                        connect_dots(&SubsampledGaussianAdd { q, sigma }, d, tail),
                        steps.get(),
                    )
                }
                DpEvent::Laplace {
                    sensitivity,
                    scale,
                    count,
                } => {
                    let pmf = connect_dots(
                        &LaplaceCurve {
                            a: sensitivity.get() / scale.get(),
                        },
                        d,
                        tail,
                    );
                    (pmf.clone(), pmf, count.get())
                }
                DpEvent::SubsampledSkellam { .. } | DpEvent::Skellam { .. } => {
                    return Err(crate::error::PrivacyError::Calibration(
                        "the subsampled Skellam mechanism has a Rényi-DP curve only; compose it with the RDP accountant".into(),
                    ));
                }
                DpEvent::ApproxDp {
                    epsilon,
                    delta,
                    count,
                } => {
                    let pmf = approx_dp_pmf(epsilon.get(), delta, d);
                    (pmf.clone(), pmf, count.get())
                }
            };
            remove = remove.compose(&r.self_compose(times, tail), tail);
            add = add.compose(&a.self_compose(times, tail), tail);
        }
        if remove.is_empty() || add.is_empty() {
            return Err(PrivacyError::Calibration(
                "privacy loss distribution lost all mass".into(),
            ));
        }
        Ok(Pld {
            remove,
            add,
            discretization: d,
        })
    }

    /// ε at `delta` for the composition of `events`.
    pub fn epsilon(&self, events: &[DpEvent], delta: f64) -> Result<f64> {
        Ok(self.compose(events)?.epsilon(delta))
    }
}
