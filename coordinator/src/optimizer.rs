//! The coordinator's optimiser (`server_optimizer = "adam"`, FedAdam): each round, the
//! weighted average of the holders' moves from the global weights is a pseudo-gradient, and
//! the coordinator takes one Adam step with it. Adam's moments then average the DP noise of
//! every holder across rounds, as in single-party training, instead of each holder's moments
//! seeing only its own noise (which is √k times that of the average of k holders).
//!
//! It works on the aggregate alone, so secure aggregation (which reveals only the sum) can
//! wrap it unchanged. The moments are stored beside each round's committed weights in a
//! self-checking format (magic, step count, length, interleaved m/v pairs, SHA-256 of all
//! of it), and a step streams the base weights and the moments block by block: it holds no
//! more than the round's average and one block, whatever the model's size.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::artifacts::{Artifacts, optimizer_key};
use crate::error::{CoordinatorError, Result};

const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-8;
const MAGIC: &[u8; 8] = b"FSADAM1\0";
const HEADER: usize = 24;
const DIGEST: usize = 32;
/// Parameters per block of a streamed step.
const BLOCK: usize = 64 * 1024;

/// One Adam step (step `t`, 1-based) over a block: `average` is overwritten with the new
/// weights, `moments` (interleaved m, v) updated in place.
fn adam_block(t: u64, lr: f64, base: &[f32], average: &mut [f32], moments: &mut [f32]) {
    let t = t.min(i32::MAX as u64) as i32;
    let (c1, c2) = (1.0 - B1.powi(t), 1.0 - B2.powi(t));
    for ((w, a), mv) in base.iter().zip(average).zip(moments.chunks_exact_mut(2)) {
        let g = f64::from(*w) - f64::from(*a);
        let m = B1 * f64::from(mv[0]) + (1.0 - B1) * g;
        let v = B2 * f64::from(mv[1]) + (1.0 - B2) * g * g;
        mv[0] = m as f32;
        mv[1] = v as f32;
        *a = (f64::from(*w) - lr * (m / c1) / ((v / c2).sqrt() + EPS)) as f32;
    }
}

fn header(t: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&t.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out
}

/// (step count, length) from a header.
fn parse_header(h: &[u8]) -> Option<(u64, u64)> {
    if h.len() != HEADER || &h[..8] != MAGIC {
        return None;
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Some((word(8), word(16)))
}

/// Little-endian f32 values of a record whose length `ObjectReader::read_exact` fixed.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    // Records are read in multiples of four bytes, so this cannot fail.
    let _ = fedsynth_proto::extend_f32(&mut out, bytes);
    out
}

/// Adam moments over a flat parameter vector, in memory (the stored form's reference).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerAdam {
    moments: Vec<f32>,
    t: u64,
}

impl ServerAdam {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            moments: vec![0.0; 2 * n],
            t: 0,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Moves `base` to where the holders' weighted average `average` points: the
    /// pseudo-gradient is `base − average`, and one Adam step at `lr` is taken with it.
    pub fn step(&mut self, base: &mut [f32], average: &[f32], lr: f64) -> Result<()> {
        if base.len() * 2 != self.moments.len() || average.len() != base.len() {
            return Err(CoordinatorError::Invalid(format!(
                "server Adam: {} moments, {} weights, {} averaged values",
                self.moments.len() / 2,
                base.len(),
                average.len()
            )));
        }
        self.t += 1;
        let mut next = average.to_vec();
        adam_block(self.t, lr, base, &mut next, &mut self.moments);
        base.copy_from_slice(&next);
        Ok(())
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(self.t, self.moments.len() / 2);
        out.extend(fedsynth_proto::f32_chunks(&self.moments).flatten());
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Reads the stored form back, refusing anything altered or cut.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| CoordinatorError::Corrupt(format!("server Adam state: {what}"));
        if bytes.len() < HEADER + DIGEST {
            return Err(corrupt("too short"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - DIGEST);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("checksum mismatch"));
        }
        let (t, n) = parse_header(&body[..HEADER])
            .ok_or_else(|| corrupt("not a fedsynth optimiser state"))?;
        if (body.len() - HEADER) as u64 != n.saturating_mul(8) {
            return Err(corrupt("length does not match"));
        }
        Ok(Self {
            moments: f32s(&body[HEADER..]),
            t,
        })
    }
}

/// The stored step of a committing round `round` (≥ 1) of `job`: streams the base weights
/// (`base_key`, checked against `base_digest`) and the moments stored with them (zero before
/// the first step), overwrites `average` with the new weights, and stores the new moments
/// for round `round + 1`. A lost, cut or altered object is a `Corrupt` error.
pub async fn step_stored(
    artifacts: &Artifacts,
    job: &str,
    round: u32,
    base_key: &str,
    base_digest: &str,
    average: &mut [f32],
    lr: f64,
) -> Result<()> {
    step_stored_as(
        artifacts,
        job,
        round,
        base_key,
        base_digest,
        average,
        lr,
        false,
    )
    .await
}

/// [`step_stored`], or, with `from_gradient`, from the mean gradient itself (secure
/// aggregation's decoded sum) instead of the holders' average: each block of `average` then
/// becomes base − gradient as the base weights stream by, so the base is read once.
#[allow(clippy::too_many_arguments)]
pub async fn step_stored_as(
    artifacts: &Artifacts,
    job: &str,
    round: u32,
    base_key: &str,
    base_digest: &str,
    average: &mut [f32],
    lr: f64,
    from_gradient: bool,
) -> Result<()> {
    let n = average.len();
    let corrupt = |what: String| CoordinatorError::Corrupt(format!("job {job}: {what}"));
    let mut base = artifacts.reader(base_key).await?;
    let mut state = artifacts
        .reader_if_present(&optimizer_key(job, round))
        .await?;
    if state.is_none() && round > 1 {
        return Err(corrupt(format!(
            "the optimiser state of round {round} is missing from the artifact store"
        )));
    }
    let mut state_hash = Sha256::new();
    let mut t = 0;
    if let Some(s) = state.as_mut() {
        let h = s.read_exact(HEADER).await?.unwrap_or_default();
        state_hash.update(&h);
        let (stored_t, stored_n) = parse_header(&h)
            .ok_or_else(|| corrupt(format!("round {round}'s optimiser state is not one")))?;
        if stored_n != n as u64 {
            return Err(corrupt(format!(
                "round {round}'s optimiser state covers {stored_n} parameters, the updates {n}"
            )));
        }
        t = stored_t;
    }
    let t = t + 1;
    let mut upload = artifacts.upload(&optimizer_key(job, round + 1)).await?;
    let streamed = async {
        let mut out_hash = Sha256::new();
        let head = header(t, n);
        out_hash.update(&head);
        upload.put(Bytes::from(head)).await?;
        let mut base_hash = Sha256::new();
        let mut at = 0;
        while at < n {
            let len = (n - at).min(BLOCK);
            let b = base
                .read_exact(4 * len)
                .await?
                .ok_or_else(|| corrupt("the base weights are shorter than the updates".into()))?;
            base_hash.update(&b);
            let mut moments = match state.as_mut() {
                Some(s) => {
                    let raw = s.read_exact(8 * len).await?.ok_or_else(|| {
                        corrupt(format!("round {round}'s optimiser state is cut short"))
                    })?;
                    state_hash.update(&raw);
                    f32s(&raw)
                }
                None => vec![0.0; 2 * len],
            };
            let base_block = f32s(&b);
            if from_gradient {
                for (a, w) in average[at..at + len].iter_mut().zip(&base_block) {
                    *a = w - *a;
                }
            }
            adam_block(t, lr, &base_block, &mut average[at..at + len], &mut moments);
            for raw in fedsynth_proto::f32_chunks(&moments) {
                out_hash.update(&raw);
                upload.put(Bytes::from(raw)).await?;
            }
            at += len;
        }
        if base.read_exact(1).await?.is_some() || hex::encode(base_hash.finalize()) != base_digest {
            return Err(corrupt(
                "the base weights do not match their recorded digest".into(),
            ));
        }
        if let Some(s) = state.as_mut() {
            let digest = s.read_exact(DIGEST).await?.unwrap_or_default();
            if digest.as_ref() != state_hash.finalize().as_slice()
                || s.read_exact(1).await?.is_some()
            {
                return Err(corrupt(format!(
                    "round {round}'s optimiser state fails its checksum"
                )));
            }
        }
        upload
            .put(Bytes::copy_from_slice(&out_hash.finalize()))
            .await?;
        Ok(())
    }
    .await;
    match streamed {
        Ok(()) => upload.finish_own().await,
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam written out once more, on f64, for one coordinate.
    fn reference(grads: &[f64], w0: f64, lr: f64) -> f64 {
        let (mut m, mut v, mut w) = (0.0, 0.0, w0);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            w -= lr * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
        }
        w
    }

    #[test]
    fn steps_follow_adam_on_the_pseudo_gradient() {
        let grads = [0.3, -0.1, 0.25, 0.05];
        let mut adam = ServerAdam::new(1);
        let mut w = [1.0f32];
        for g in grads {
            // The holders' average sits g below the base: the pseudo-gradient is g.
            let average = [w[0] - g as f32];
            adam.step(&mut w, &average, 0.01).unwrap();
        }
        assert!((f64::from(w[0]) - reference(&grads, 1.0, 0.01)).abs() < 1e-6);
        assert_eq!(adam.steps(), 4);
        // Adam is invariant to the scale of its gradients: a holder's local learning rate
        // does not change where one local step per round leads.
        let mut scaled = ServerAdam::new(1);
        let mut w2 = [1.0f32];
        for g in grads {
            let average = [w2[0] - 0.05 * g as f32];
            scaled.step(&mut w2, &average, 0.01).unwrap();
        }
        assert!((w2[0] - w[0]).abs() < 1e-5, "{} vs {}", w2[0], w[0]);
        assert!(adam.step(&mut [0.0, 0.0], &[0.0, 0.0], 0.01).is_err());
    }

    #[test]
    fn the_stored_state_round_trips_and_refuses_tampering() {
        let mut adam = ServerAdam::new(3);
        let mut w = [0.5f32, -0.5, 2.0];
        adam.step(&mut w, &[0.4, -0.3, 2.5], 0.1).unwrap();
        let bytes = adam.to_bytes();
        assert_eq!(ServerAdam::from_bytes(&bytes).unwrap(), adam);
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(ServerAdam::from_bytes(&bad).is_err());
        assert!(ServerAdam::from_bytes(&bytes[..bytes.len() - 4]).is_err());
        assert!(
            ServerAdam::from_bytes(b"not a state at all, but long enough to parse.......").is_err()
        );
    }

    /// The streamed step, over several blocks, agrees with the in-memory one, stores what it
    /// would store, and refuses altered inputs without storing anything.
    #[tokio::test]
    async fn the_streamed_step_matches_the_in_memory_one() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::local(dir.path()).unwrap();
        let n = 2 * BLOCK + 17;
        let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin()).collect();
        let (key, digest) = artifacts.put_weights("j", 1, &w0).await.unwrap();
        let avg1: Vec<f32> = w0
            .iter()
            .enumerate()
            .map(|(i, w)| w - 0.01 * (i % 7) as f32 + 0.02)
            .collect();
        let mut got = avg1.clone();
        step_stored(&artifacts, "j", 1, &key, &digest, &mut got, 0.05)
            .await
            .unwrap();
        let mut reference = ServerAdam::new(n);
        let mut want = w0.clone();
        reference.step(&mut want, &avg1, 0.05).unwrap();
        assert_eq!(got, want);
        let stored = std::fs::read(dir.path().join("jobs/j/adam-000002.bin")).unwrap();
        assert_eq!(ServerAdam::from_bytes(&stored).unwrap(), reference);

        // A second step reads those moments back.
        let (key2, digest2) = artifacts.put_weights("j", 2, &got).await.unwrap();
        let avg2: Vec<f32> = got.iter().map(|w| w * 0.99).collect();
        let mut got2 = avg2.clone();
        step_stored(&artifacts, "j", 2, &key2, &digest2, &mut got2, 0.05)
            .await
            .unwrap();
        reference.step(&mut want, &avg2, 0.05).unwrap();
        assert_eq!(got2, want);

        // Altered moments, wrong base digest, missing state: refused, nothing stored.
        let path = dir.path().join("jobs/j/adam-000002.bin");
        let mut bad = stored.clone();
        bad[HEADER + 5] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        std::fs::remove_file(dir.path().join("jobs/j/adam-000003.bin")).unwrap();
        let mut x = avg2.clone();
        let e = step_stored(&artifacts, "j", 2, &key2, &digest2, &mut x, 0.05).await;
        assert!(matches!(e, Err(CoordinatorError::Corrupt(_))), "{e:?}");
        assert!(!dir.path().join("jobs/j/adam-000003.bin").exists());
        std::fs::write(&path, &stored).unwrap();
        let e = step_stored(&artifacts, "j", 2, &key2, &digest, &mut x, 0.05).await;
        assert!(matches!(e, Err(CoordinatorError::Corrupt(_))), "{e:?}");
        let e = step_stored(&artifacts, "j", 5, &key2, &digest2, &mut x, 0.05).await;
        assert!(matches!(e, Err(CoordinatorError::Corrupt(_))), "{e:?}");
        assert!(!dir.path().join("jobs/j/adam-000003.bin").exists());
    }
}
