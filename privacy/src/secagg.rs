//! Secure aggregation for a fixed roster and many short rounds: the coordinator learns only
//! the sum of the workers' (discretised, noised) updates.
//!
//! **Once per job** each worker draws an X25519 key ([`JobKey`]) and publishes it in a
//! [`KeyAdvert`] signed with the key of its enrolled identity (the client certificate its
//! federation's CA issued); the coordinator relays the adverts, and every worker checks each
//! against the CA and the worker's name before agreeing on pairwise keys
//! k_ij = HKDF-SHA256(X25519(sk_i, pk_j), salt = domain ‖ job, info = the ordered pair)
//! ([`Pairs::agree`]). A coordinator that substitutes a key cannot sign for the worker.
//!
//! **Every round, attempt and participant set S** the pair's seed is
//! HKDF-Expand(k_ij, round ‖ attempt ‖ SHA-256(S)), a full 256-bit ChaCha20 key, and the mask
//! is its keystream read as 32-bit ring words; worker i uploads
//! y_i = x_i + Σ_{j∈S, j>i} m_ij − Σ_{j∈S, j<i} m_ij (mod 2³²), so the masks cancel in the
//! sum over S and nothing else. Masks do not depend on the update ([`Pairs::net_mask`] can
//! run while training). A seed never repeats as long as a worker never uploads twice under one
//! (round, attempt, S) — the worker's cache of its uploads guarantees that.
//!
//! **Dropouts**: an attempt where someone in S misses the deadline is void; the survivors'
//! uploads stay masked by their pairs with the missing worker. The next attempt has a new
//! number and a new S, hence new masks, and every survivor computes a **fresh** update (new
//! Poisson batch, new noise), charged as one more DP-SGD step: the same update under two sets
//! would let the coordinator subtract two sums.
//!
//! **Distributed noise**: each worker scales its clipped sum by the ring scale s
//! ([`ring_scale`]), rounds stochastically from the CSPRNG ([`discretise`]) and adds
//! Skellam(λ) noise, λ = (σ·s·C)² / (2·(|S| − t)) ([`skellam_share`]) for t tolerated
//! dropped-or-colluding workers: any |S| − t honest shares carry variance (σ·s·C)², the noise of
//! single-party DP-SGD at σ. Holders charge at the coarsest ring they accept ([`min_ring_clip`]);
//! a finer ring needs less noise for the same charge ([`noise_at_ring_clip`]). The accountant
//! is [`crate::skellam`].

use std::collections::BTreeMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{PrivacyError, Result};
use crate::rng::SecureRng;

/// Bits of the ring every upload lives in: 32, so an upload is no larger than an f32 update.
pub const RING_BITS: u32 = 32;

const PAIR_SALT: &[u8] = b"fedsynth-secagg-pair-v1\0";
const ROUND_INFO: &[u8] = b"fedsynth-secagg-round-v1\0";
const STATISTICS_INFO: &[u8] = b"fedsynth-secagg-statistics-v1\0";
const ADVERT_DOMAIN: &[u8] = b"fedsynth-secagg-key-v1\0";
/// Largest advert accepted (a certificate and a few fields).
pub const MAX_ADVERT_BYTES: usize = 64 << 10;

fn fail<T>(m: impl Into<String>) -> Result<T> {
    Err(PrivacyError::SecureAggregation(m.into()))
}

/// A worker's key-agreement key for one job (X25519), kept in its state directory.
pub struct JobKey(StaticSecret);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobKey({})", hex::encode(self.public()))
    }
}

impl JobKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SecureRng::from_os().fill(&mut *bytes);
        Self(StaticSecret::from(*bytes))
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The secret bytes (to store).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        XPublic::from(&self.0).to_bytes()
    }
}

/// What a worker publishes once per job: its key-agreement key and noise multiplier, signed
/// with its enrolled identity's key (JSON on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAdvert {
    /// The job.
    pub job_id: String,
    /// The worker (`federation/name`).
    pub worker_id: String,
    /// X25519 public key, hex.
    pub public_key: String,
    /// The noise multiplier the worker calibrated for its rows; every worker adds noise for the
    /// largest of the roster's.
    pub noise_multiplier: f64,
    /// The worker's certificate (PEM); empty on a plaintext federation.
    pub certificate: String,
    /// Hex signature by the certificate's key; empty without a certificate.
    pub signature: String,
}

impl KeyAdvert {
    fn message(&self) -> Vec<u8> {
        let mut m = ADVERT_DOMAIN.to_vec();
        for part in [&self.job_id, &self.worker_id, &self.public_key] {
            m.extend_from_slice(&(part.len() as u64).to_le_bytes());
            m.extend_from_slice(part.as_bytes());
        }
        m.extend_from_slice(&self.noise_multiplier.to_le_bytes());
        m
    }

    /// The advert of `key` for `worker` in `job`, signed with `identity` (PKCS#8 key PEM,
    /// certificate PEM) when the federation has one.
    pub fn new(
        job_id: &str,
        worker_id: &str,
        key: &JobKey,
        noise_multiplier: f64,
        identity: Option<(&[u8], &str)>,
    ) -> Result<Self> {
        let mut advert = Self {
            job_id: job_id.into(),
            worker_id: worker_id.into(),
            public_key: hex::encode(key.public()),
            noise_multiplier,
            certificate: String::new(),
            signature: String::new(),
        };
        if let Some((key_pem, cert_pem)) = identity {
            let sig = crate::signature::sign_bytes(&advert.message(), key_pem)
                .map_err(|e| PrivacyError::SecureAggregation(e.to_string()))?;
            advert.certificate = cert_pem.trim().to_string() + "\n";
            advert.signature = hex::encode(sig);
        }
        Ok(advert)
    }

    /// The advert as JSON.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an advert (JSON, at most [`MAX_ADVERT_BYTES`]).
    pub fn from_text(text: &str) -> Result<Self> {
        if text.len() > MAX_ADVERT_BYTES {
            return fail("a key advert is too large");
        }
        serde_json::from_str(text)
            .map_err(|e| PrivacyError::SecureAggregation(format!("a malformed key advert: {e}")))
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.public_key, &mut out).map_err(|_| {
            PrivacyError::SecureAggregation("a key advert's key is not 32 hex bytes".into())
        })?;
        Ok(out)
    }

    /// Checks that this is `worker_id`'s advert for `job_id`: the fields, and with a CA the
    /// signature, by a certificate the CA issued for the worker's name. Without a CA (a
    /// plaintext federation) nothing binds the key to the worker: the caller has decided to
    /// trust the coordinator.
    pub fn verify(&self, job_id: &str, worker_id: &str, ca_pem: Option<&[u8]>) -> Result<()> {
        if self.job_id != job_id || self.worker_id != worker_id {
            return fail(format!(
                "the key advert relayed for {worker_id} is for {} in job {}",
                self.worker_id.escape_debug(),
                self.job_id.escape_debug()
            ));
        }
        self.public_key()?;
        if !(self.noise_multiplier.is_finite()
            && self.noise_multiplier > 0.0
            && self.noise_multiplier <= 1e6)
        {
            return fail(format!("{worker_id}'s noise multiplier is out of range"));
        }
        let Some(ca) = ca_pem else {
            return Ok(());
        };
        if self.certificate.is_empty() || self.signature.is_empty() {
            return fail(format!("{worker_id}'s key advert is not signed"));
        }
        let names = crate::signature::verify_certified(
            &self.certificate,
            &self.message(),
            &self.signature,
            ca,
        )
        .map_err(|e| PrivacyError::SecureAggregation(format!("{worker_id}'s key advert: {e}")))?;
        let name = worker_id.split_once('/').map_or(worker_id, |(_, n)| n);
        if !names.iter().any(|n| n == name) {
            return fail(format!(
                "{worker_id}'s key advert is signed by a certificate issued for another worker"
            ));
        }
        Ok(())
    }
}

/// SHA-256 of a participant set (sorted, length-prefixed ids).
pub fn participants_digest(participants: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((participants.len() as u64).to_le_bytes());
    for p in participants {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// HKDF-SHA256 to 32 bytes.
fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // A 32-byte output is always within HKDF-SHA256's limit (255 blocks).
    if let Ok(okm) = prk.expand(info, Len32) {
        let _ = okm.fill(&mut *out);
    }
    out
}

/// A worker's pairwise keys with every other worker of a job's roster, agreed once per job.
pub struct Pairs {
    me: String,
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("me", &self.me)
            .field("peers", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Pairs {
    /// Agrees a key with every other worker whose (already verified) advert is in `roster`.
    /// Refuses a roster with a repeated worker, a relayed copy of this worker's own key, or a
    /// key whose agreement is not contributory (a low-order point).
    pub fn agree(job_id: &str, me: &str, key: &JobKey, roster: &[KeyAdvert]) -> Result<Self> {
        let mine = key.public();
        let mut keys = BTreeMap::new();
        let mut salt = PAIR_SALT.to_vec();
        salt.extend_from_slice(job_id.as_bytes());
        for advert in roster {
            let peer = &advert.worker_id;
            if peer == me {
                if advert.public_key()? != mine {
                    return fail("the roster holds another key under this worker's name");
                }
                continue;
            }
            let pk = advert.public_key()?;
            if pk == mine {
                return fail(format!("{peer} presents this worker's own key"));
            }
            let shared = key.0.diffie_hellman(&XPublic::from(pk));
            if !shared.was_contributory() {
                return fail(format!("{peer}'s key is a low-order point"));
            }
            let (a, b) = if me < peer.as_str() {
                (me, peer.as_str())
            } else {
                (peer.as_str(), me)
            };
            let (la, lb) = (
                (a.len() as u64).to_le_bytes(),
                (b.len() as u64).to_le_bytes(),
            );
            let k = hkdf32(
                &salt,
                shared.as_bytes(),
                &[&la, a.as_bytes(), &lb, b.as_bytes()],
            );
            if keys.insert(peer.clone(), k).is_some() {
                return fail(format!("{peer} appears twice in the roster"));
            }
        }
        Ok(Self {
            me: me.into(),
            keys,
        })
    }

    /// The workers this one shares a key with.
    pub fn peers(&self) -> impl Iterator<Item = &String> {
        self.keys.keys()
    }

    /// The sum of this worker's masks for (round, attempt, S) over `len` ring words: what it
    /// adds to its update. `participants` must be sorted, without repeats, hold this worker,
    /// and hold only workers of the roster.
    pub fn net_mask(
        &self,
        len: usize,
        round: u32,
        attempt: u32,
        participants: &[String],
    ) -> Result<Vec<u32>> {
        self.mask_in(ROUND_INFO, len, round, attempt, participants)
    }

    /// The net mask of a federated job's statistics wave `wave` over S: the same pairwise
    /// keys, expanded under another label, so that no statistics mask ever equals a training
    /// round's.
    pub fn statistics_mask(
        &self,
        len: usize,
        wave: u32,
        participants: &[String],
    ) -> Result<Vec<u32>> {
        self.mask_in(STATISTICS_INFO, len, wave, 0, participants)
    }

    fn mask_in(
        &self,
        label: &[u8],
        len: usize,
        round: u32,
        attempt: u32,
        participants: &[String],
    ) -> Result<Vec<u32>> {
        if !participants.windows(2).all(|w| w[0] < w[1]) {
            return fail("the participant set is not sorted without repeats");
        }
        if !participants.contains(&self.me) {
            return fail("this worker is not in the participant set");
        }
        let digest = participants_digest(participants);
        let mut info = label.to_vec();
        info.extend_from_slice(&round.to_le_bytes());
        info.extend_from_slice(&attempt.to_le_bytes());
        info.extend_from_slice(&digest);
        let mut out = vec![0u32; len];
        for peer in participants.iter().filter(|p| **p != self.me) {
            let Some(k) = self.keys.get(peer) else {
                return fail(format!("{peer} is not in this job's roster"));
            };
            let seed = hkdf32(&[], &k[..], &[&info]);
            expand(*seed, &mut out, self.me.as_str() < peer.as_str());
        }
        Ok(out)
    }
}

/// Adds (or subtracts) the ChaCha20 keystream of `seed`, read as little-endian u32 words.
fn expand(seed: [u8; 32], out: &mut [u32], add: bool) {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut buf = [0u8; 4096];
    for block in out.chunks_mut(buf.len() / 4) {
        let bytes = &mut buf[..block.len() * 4];
        rng.fill_bytes(bytes);
        for (w, b) in block.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            *w = if add {
                w.wrapping_add(m)
            } else {
                w.wrapping_sub(m)
            };
        }
    }
}

/// Adds `other` into `acc`, word by word, modulo 2³².
pub fn add_words(acc: &mut [u32], other: &[u32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a.wrapping_add(*b);
    }
}

/// Ring units per unit of a clipped sum, chosen so that no completed sum wraps: the sum of
/// `workers` workers' clipped sums (each over a Poisson batch of expected size
/// `expected_batch`, clipping norm `clip`) and the noise of the largest noise multiplier
/// `sigma_max` stay below 2³¹ in every coordinate but with negligible probability (batches
/// beyond twice their expected size plus ten standard deviations, noise beyond eight).
/// Public: both the workers and the coordinator compute it from the job and the roster.
pub fn ring_scale(clip: f64, expected_batch: f64, workers: usize, sigma_max: f64) -> f64 {
    let n = workers.max(1) as f64;
    let rows = 2.0 * expected_batch * n + 10.0 * (expected_batch * n).sqrt() + 10.0;
    let noise = 8.0 * sigma_max * n.sqrt();
    let room = f64::from(1u32 << (RING_BITS - 1)) - 2.0 * n - 1.0;
    room / (clip * (rows + noise))
}

/// Scales by `scale` and rounds each value stochastically (up with probability equal to its
/// fractional part, from `rng`), as ring words.
pub fn discretise(values: &[f32], scale: f64, rng: &mut impl RngCore) -> Vec<u32> {
    values
        .iter()
        .map(|&v| {
            let x = f64::from(v) * scale;
            let floor = x.floor();
            let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let r = if u < x - floor { floor + 1.0 } else { floor };
            // Values are bounded far below 2⁶³ by the clipping; the cast saturates otherwise.
            (r as i64) as u32
        })
        .collect()
}

/// Ring units per √d in the coarsest resolution a holder charges for (see [`min_ring_clip`]).
pub const RING_CLIP_PER_ROOT_D: f64 = 32.0;

/// The clipping norm in ring units below which a holder takes no part in a secure round of a
/// `dimension`-parameter model: 32·√d, so that rounding adds at most 1/32 to the sensitivity
/// (s·C + √d). Every holder charges its attempts as the Skellam mechanism at this resolution
/// ([`crate::skellam::Skellam::for_dpsgd`]); a roster whose ring scale is coarser (a very
/// large federation or batch for a 32-bit ring) is refused rather than undercharged.
pub fn min_ring_clip(dimension: u64) -> f64 {
    RING_CLIP_PER_ROOT_D * (dimension as f64).sqrt()
}

/// The noise multiplier a round at ring clipping norm R = `ring_clip` needs so that its
/// Skellam mechanism (σ', R, d) is no worse, at every Rényi order, than the one a holder
/// charged for, (σ, F₀ = [`min_ring_clip`](d₀), d₀) with d₀ ≤ d:
/// σ' = σ·(1 + √d/R)/(1 + 1/32), at most σ (equal at R = 32·√d). The finer the ring, the less
/// of the rounding's share of the sensitivity the noise must cover.
///
/// Proof, term by term of the bound in [`crate::skellam`] (V the variance, Δ₂ and Δ₁ the
/// sensitivities; primes for the round's): the Gaussian term's Δ₂'²/V' = (1 + √d/R)²/σ'² =
/// (1 + 1/32)²/σ² = Δ₂²/V, equal; V' = σ²(R + √d)²/(33/32)² ≥ σ²(32·√d)² ≥ σ²·F₀² = V since
/// R ≥ 32·√d and d ≥ d₀; and Δ₁'/V' = (33/32)²·√d/(σ²(R + √d)) ≤ 33/(1024·σ²) = Δ₁/V, again
/// because R + √d ≥ 33·√d. Each term of ε(α) is Δ₂²/V, Δ₁/V or one of them over V, so every
/// term is no larger; the subsampled bound is increasing in each ε(k), so it is dominated too.
/// Refused below R = 32·√d, where the holder never takes part.
pub fn noise_at_ring_clip(sigma: f64, ring_clip: f64, dimension: u64) -> Result<f64> {
    let floor = min_ring_clip(dimension);
    if !(ring_clip >= floor) || !sigma.is_finite() || sigma <= 0.0 {
        return fail(format!(
            "a clipping norm of {ring_clip:.0} ring units is below the {floor:.0} every holder charges for"
        ));
    }
    let root_d = (dimension as f64).sqrt();
    Ok(sigma * (1.0 + root_d / ring_clip) / (1.0 + 1.0 / RING_CLIP_PER_ROOT_D))
}

/// Each worker's Skellam parameter λ for a round with `participants` workers, `tolerated` of
/// which may drop or collude: every |S| − t honest shares sum to variance (σ·s·C)².
pub fn skellam_share(
    sigma: f64,
    ring_clip: f64,
    participants: usize,
    tolerated: usize,
) -> Result<f64> {
    if participants <= tolerated {
        return fail(format!(
            "{participants} participants cannot tolerate {tolerated} dropped or colluding workers"
        ));
    }
    Ok((sigma * ring_clip).powi(2) / (2.0 * (participants - tolerated) as f64))
}

/// Adds Skellam(λ) noise (the difference of two Poisson(λ) draws) to every word.
pub fn add_skellam(words: &mut [u32], lambda: f64, rng: &mut impl RngCore) -> Result<()> {
    let poisson = Poisson::new(lambda)
        .map_err(|e| PrivacyError::SecureAggregation(format!("Skellam λ = {lambda}: {e}")))?;
    for w in words {
        let a = poisson.sample(rng) as i64 - poisson.sample(rng) as i64;
        *w = w.wrapping_add(a as u32);
    }
    Ok(())
}

/// A completed sum back in value units: each word as a signed 32-bit integer over `scale`.
pub fn decode(sum: &[u32], scale: f64) -> Vec<f32> {
    sum.iter()
        .map(|&w| (f64::from(w as i32) / scale) as f32)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn roster(job: &str, n: usize) -> (Vec<String>, Vec<JobKey>, Vec<KeyAdvert>) {
        let ids: Vec<String> = (0..n).map(|i| format!("f/w{i:02}")).collect();
        let keys: Vec<JobKey> = (0..n).map(|_| JobKey::generate()).collect();
        let adverts = ids
            .iter()
            .zip(&keys)
            .map(|(id, k)| KeyAdvert::new(job, id, k, 1.0, None).unwrap())
            .collect();
        (ids, keys, adverts)
    }

    #[test]
    fn masks_cancel_in_the_sum_over_the_set_only() {
        let (ids, keys, adverts) = roster("j1", 5);
        let pairs: Vec<Pairs> = ids
            .iter()
            .zip(&keys)
            .map(|(id, k)| Pairs::agree("j1", id, k, &adverts).unwrap())
            .collect();
        let set: Vec<String> = ids[..4].to_vec();
        let mut sum = vec![0u32; 1000];
        for p in &pairs[..4] {
            add_words(&mut sum, &p.net_mask(1000, 3, 0, &set).unwrap());
        }
        assert!(sum.iter().all(|&w| w == 0));
        // One missing upload leaves the others masked.
        let mut partial = vec![0u32; 1000];
        for p in &pairs[..3] {
            add_words(&mut partial, &p.net_mask(1000, 3, 0, &set).unwrap());
        }
        assert!(partial.iter().filter(|&&w| w == 0).count() < 3);
        // Another attempt, round or set gives other masks.
        let a = pairs[0].net_mask(64, 3, 0, &set).unwrap();
        assert_ne!(a, pairs[0].net_mask(64, 3, 1, &set).unwrap());
        assert_ne!(a, pairs[0].net_mask(64, 4, 0, &set).unwrap());
        assert_ne!(a, pairs[0].net_mask(64, 3, 0, &ids[..3]).unwrap());
        // Statistics waves cancel the same way, under masks of their own.
        let mut stats = vec![0u32; 64];
        for p in &pairs[..4] {
            add_words(&mut stats, &p.statistics_mask(64, 3, &set).unwrap());
        }
        assert!(stats.iter().all(|&w| w == 0));
        assert_ne!(a, pairs[0].statistics_mask(64, 3, &set).unwrap());
        // Bad sets are refused.
        assert!(pairs[0].net_mask(8, 0, 0, &ids[1..]).is_err());
        let unsorted = vec![ids[1].clone(), ids[0].clone()];
        assert!(pairs[0].net_mask(8, 0, 0, &unsorted).is_err());
        let stranger = vec![ids[0].clone(), "f/zz".to_string()];
        assert!(pairs[0].net_mask(8, 0, 0, &stranger).is_err());
    }

    #[test]
    fn rosters_that_do_not_hold_are_refused() {
        let (ids, keys, mut adverts) = roster("j2", 3);
        // The coordinator relays worker 0's own key as worker 1's.
        adverts[1].public_key = adverts[0].public_key.clone();
        assert!(Pairs::agree("j2", &ids[0], &keys[0], &adverts).is_err());
        let (ids, keys, mut adverts) = roster("j2", 3);
        adverts.push(adverts[1].clone());
        assert!(Pairs::agree("j2", &ids[0], &keys[0], &adverts).is_err());
        // A low-order point (the identity) is refused.
        let (ids, keys, mut adverts) = roster("j2", 3);
        adverts[2].public_key = hex::encode([0u8; 32]);
        assert!(Pairs::agree("j2", &ids[0], &keys[0], &adverts).is_err());
        // Adverts for another job or worker are refused.
        assert!(adverts[1].verify("j3", &ids[1], None).is_err());
        assert!(adverts[1].verify("j2", &ids[2], None).is_err());
        assert!(adverts[1].verify("j2", &ids[1], None).is_ok());
    }

    #[test]
    fn discretised_noisy_sums_decode_to_the_sum() {
        let mut rng = SecureRng::from_seed(7);
        let n = 4;
        let values: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                (0..500)
                    .map(|j| ((i * 500 + j) as f32 * 0.37).sin() * 3.0)
                    .collect()
            })
            .collect();
        let scale = ring_scale(1.0, 10.0, n, 1.0);
        assert!(scale > 1e6, "{scale}");
        let lambda = skellam_share(1.0, scale, n, 0).unwrap();
        let mut sum = vec![0u32; 500];
        for v in &values {
            let mut w = discretise(v, scale, &mut rng);
            add_skellam(&mut w, lambda, &mut rng).unwrap();
            add_words(&mut sum, &w);
        }
        let decoded = decode(&sum, scale);
        let truth: Vec<f64> = (0..500)
            .map(|j| values.iter().map(|v| f64::from(v[j])).sum())
            .collect();
        let err: Vec<f64> = decoded
            .iter()
            .zip(&truth)
            .map(|(d, t)| f64::from(*d) - t)
            .collect();
        let mean = err.iter().sum::<f64>() / 500.0;
        let var = err.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / 499.0;
        // The noise is σ·C = 1 in value units: variance 1 within sampling error.
        assert!((var - 1.0).abs() < 0.2, "variance {var}");
        assert!(mean.abs() < 0.2, "mean {mean}");
        assert!(skellam_share(1.0, scale, 2, 2).is_err());
    }

    /// A round on a finer ring than the holder charged for, at the lower noise multiplier of
    /// [`noise_at_ring_clip`], is dominated at every order (alone and Poisson-subsampled) by
    /// the charged mechanism, with the Gaussian term equal; below the floor it is refused.
    #[test]
    fn a_finer_ring_needs_less_noise_for_the_same_charge() {
        use crate::skellam::Skellam;
        for &sigma in &[0.6, 1.2, 1.9, 4.0] {
            for &d0 in &[10u64, 2_000, 100_000, 1_000_000] {
                let charged = Skellam::for_dpsgd(sigma, min_ring_clip(d0), d0);
                for &d in &[d0, 3 * d0] {
                    for &times in &[1.0, 1.001, 1.7, 40.0, 3_000.0] {
                        let r = min_ring_clip(d) * times;
                        let s = noise_at_ring_clip(sigma, r, d).unwrap();
                        assert!(s <= sigma * (1.0 + 1e-12));
                        if times > 1.0 {
                            assert!(s < sigma);
                        }
                        let round = Skellam::for_dpsgd(s, r, d);
                        let (a, b) = (
                            round.l2.powi(2) / round.variance,
                            charged.l2.powi(2) / charged.variance,
                        );
                        assert!((a - b).abs() <= 1e-9 * b, "Gaussian term {a} vs {b}");
                        for alpha in 2..=256u32 {
                            let alpha = f64::from(alpha);
                            let (mine, paid) = (round.rdp(alpha), charged.rdp(alpha));
                            assert!(
                                mine <= paid * (1.0 + 1e-12),
                                "σ {sigma} d {d} R×{times} α {alpha}: {mine} > {paid}"
                            );
                            for &q in &[0.003, 0.023, 0.3] {
                                let (mine, paid) = (
                                    round.subsampled_rdp(q, alpha),
                                    charged.subsampled_rdp(q, alpha),
                                );
                                assert!(
                                    mine <= paid * (1.0 + 1e-12) + 1e-300,
                                    "q {q}: {mine} > {paid}"
                                );
                            }
                        }
                    }
                }
                assert!(noise_at_ring_clip(sigma, min_ring_clip(d0) * 0.99, d0).is_err());
            }
        }
        // On diamonds' holders (about 10⁵ parameters, a ring of about 2,900·√d): 3% less noise.
        let s = noise_at_ring_clip(1.948, 2_900.0 * 316.0, 100_000).unwrap();
        assert!((s / 1.948 - 32.0 / 33.0).abs() < 1e-3, "{s}");
        assert!(noise_at_ring_clip(f64::NAN, 1e9, 10).is_err());
        assert!(noise_at_ring_clip(1.0, f64::NAN, 10).is_err());
    }
}
