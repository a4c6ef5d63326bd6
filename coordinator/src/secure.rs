//! The coordinator's side of secure aggregation, as pure state: the stages of a round, the
//! decision the driver takes at each tick (with the clock passed in, so it is testable), and
//! the ring sum of the masked uploads.
//!
//! A job under `secagg` starts with two stages: **advertise keys** (every accepted worker
//! publishes its signed key advert; the roster is fixed once all live ones have, or at the
//! deadline with at least `min_workers`) and **initial weights** (a worker uploads the model
//! the job's seed gives: no data, and every other worker checks its digest against its own).
//! Then each round is one **collect** attempt over a participant set S: every worker of S
//! uploads its masked ring words; the sum over S is decoded only when all of S delivered.
//! An attempt someone misses is **void** — the uploads received stay masked and are dropped —
//! and the next attempt runs with the live workers of the roster, each computing a fresh
//! update. The coordinator never holds an unmasked update: it can only add.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use fedsynth_privacy::secagg::{self, KeyAdvert};

/// The stages of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Workers publish their key adverts (secure aggregation, once per job).
    AdvertiseKeys,
    /// A partial schema's statistics: every worker of the roster uploads its masked sums
    /// and released names for the wave (or, once complete, the schema it completed).
    Statistics,
    /// One worker uploads the job's seeded initial weights (secure aggregation, once).
    InitialWeights,
    /// Workers upload their updates: plain f32 weights, or masked ring words under secagg.
    Collect,
}

impl Stage {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdvertiseKeys => "advertise_keys",
            Self::Statistics => "statistics",
            Self::InitialWeights => "initial_weights",
            Self::Collect => "collect",
        }
    }
}

/// What the driver does with an open stage at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep waiting.
    Wait,
    /// The stage is complete: advance (fix the roster, commit the round, …).
    Complete,
    /// The deadline passed without completion: the attempt is void; these were missing.
    Void(Vec<String>),
}

/// The decision for a stage: `expected` are the workers whose contribution completes it
/// (the participant set; for the key stage, the accepted workers that are live), `delivered`
/// those that have, `enough` whether a deadline may close it with what it has (the key stage
/// with `min_workers` adverts; never a collect, whose sum needs every participant).
pub fn decide(
    expected: &BTreeSet<String>,
    delivered: &BTreeSet<String>,
    enough_at_deadline: bool,
    deadline: Instant,
    now: Instant,
) -> Decision {
    if !expected.is_empty() && expected.is_subset(delivered) {
        return Decision::Complete;
    }
    if now < deadline {
        return Decision::Wait;
    }
    if enough_at_deadline {
        return Decision::Complete;
    }
    Decision::Void(expected.difference(delivered).cloned().collect())
}

/// One worker's upload for a statistics wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsUpload {
    /// Its masked ring words.
    pub words: Vec<u32>,
    /// The names it released for the union.
    pub released: Vec<String>,
    /// Once complete: the schema it completed (TOML) and its model's size.
    pub schema: Option<(String, u64)>,
}

/// How a statistics wave closes once every worker of the roster uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatisticsOutcome {
    /// A wave to publish: the ring sum of the words and the sorted union of the names.
    Wave {
        /// Σ words, modulo 2³².
        sums: Vec<u32>,
        /// The union of the released names, sorted.
        released: Vec<String>,
    },
    /// Every worker completed the same schema.
    Schema(String, u64),
    /// The uploads do not agree (sizes, or schemas): the job cannot go on.
    Disagree(String),
}

/// Closes a statistics wave from every worker's upload: the workers replay the same public
/// computation, so they all ask for sums of one length, or all send one schema. The masks
/// cancel only in the sum over all of them; nothing else is read from a single upload.
pub fn close_statistics(
    uploads: &std::collections::BTreeMap<String, StatisticsUpload>,
) -> StatisticsOutcome {
    let schemas: BTreeSet<&(String, u64)> =
        uploads.values().filter_map(|u| u.schema.as_ref()).collect();
    if !schemas.is_empty() {
        if schemas.len() == 1
            && uploads.values().all(|u| u.schema.is_some())
            && let Some((text, parameters)) = schemas.into_iter().next()
        {
            return StatisticsOutcome::Schema(text.clone(), *parameters);
        }
        return StatisticsOutcome::Disagree(
            "the holders completed different schemas from the same statistics".into(),
        );
    }
    let mut sums: Option<Vec<u32>> = None;
    let mut released = BTreeSet::new();
    for u in uploads.values() {
        match &mut sums {
            None => sums = Some(u.words.clone()),
            Some(s) if s.len() == u.words.len() => secagg::add_words(s, &u.words),
            Some(_) => {
                return StatisticsOutcome::Disagree(
                    "the holders asked for statistics of different sizes".into(),
                );
            }
        }
        released.extend(u.released.iter().cloned());
    }
    StatisticsOutcome::Wave {
        sums: sums.unwrap_or_default(),
        released: released.into_iter().collect(),
    }
}

/// The participants of a new attempt: the roster's live workers, sorted.
pub fn participants(roster: &[String], live: &HashSet<String>) -> Vec<String> {
    let mut p: Vec<String> = roster
        .iter()
        .filter(|w| live.contains(*w))
        .cloned()
        .collect();
    p.sort();
    p.dedup();
    p
}

/// The ring scale of a job's roster (public: the same computation as every worker's).
pub fn roster_scale(adverts: &[KeyAdvert], clip: f64, batch: f64) -> f64 {
    let sigma_max = adverts
        .iter()
        .map(|a| a.noise_multiplier)
        .fold(0.0f64, f64::max);
    secagg::ring_scale(clip, batch, adverts.len(), sigma_max)
}

/// The mean noisy gradient of a secure round: the decoded sum of the participants' clipped
/// gradients over the rows they sampled in expectation. The server optimiser steps with it
/// (its pseudo-gradient, as base − average is under plain aggregation).
pub fn mean_gradient(sum: &[u32], scale: f64, expected_rows: f64) -> Vec<f32> {
    let inv = 1.0 / expected_rows;
    secagg::decode(sum, scale)
        .into_iter()
        .map(|g| (f64::from(g) * inv) as f32)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_collect_completes_only_with_every_participant() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(10);
        let expected = set(&["a", "b", "c"]);
        assert_eq!(
            decide(&expected, &set(&["a", "b"]), false, deadline, t0),
            Decision::Wait
        );
        assert_eq!(
            decide(&expected, &set(&["a", "b", "c"]), false, deadline, t0),
            Decision::Complete
        );
        // Past the deadline, one missing: void, naming it; never a partial sum.
        assert_eq!(
            decide(&expected, &set(&["a", "c"]), false, deadline, deadline),
            Decision::Void(vec!["b".into()])
        );
        // The key stage may close at the deadline with enough adverts.
        assert_eq!(
            decide(&expected, &set(&["a", "c"]), true, deadline, deadline),
            Decision::Complete
        );
        assert_eq!(
            decide(&BTreeSet::new(), &BTreeSet::new(), false, deadline, t0),
            Decision::Wait
        );
    }

    #[test]
    fn statistics_waves_sum_and_schemas_must_agree() {
        let up = |words: Vec<u32>, names: &[&str], schema: Option<&str>| StatisticsUpload {
            words,
            released: names.iter().map(|s| s.to_string()).collect(),
            schema: schema.map(|s| (s.to_string(), 10)),
        };
        let mut uploads = std::collections::BTreeMap::new();
        uploads.insert("a".to_string(), up(vec![1, u32::MAX], &["1:kx"], None));
        uploads.insert("b".to_string(), up(vec![2, 3], &["1:ky", "1:kx"], None));
        assert_eq!(
            close_statistics(&uploads),
            StatisticsOutcome::Wave {
                sums: vec![3, 2],
                released: vec!["1:kx".into(), "1:ky".into()]
            }
        );
        uploads.insert("c".to_string(), up(vec![2], &[], None));
        assert!(matches!(
            close_statistics(&uploads),
            StatisticsOutcome::Disagree(_)
        ));
        let mut done = std::collections::BTreeMap::new();
        done.insert("a".to_string(), up(vec![], &[], Some("s")));
        done.insert("b".to_string(), up(vec![], &[], Some("s")));
        assert_eq!(
            close_statistics(&done),
            StatisticsOutcome::Schema("s".into(), 10)
        );
        done.insert("c".to_string(), up(vec![], &[], Some("t")));
        assert!(matches!(
            close_statistics(&done),
            StatisticsOutcome::Disagree(_)
        ));
        done.insert("c".to_string(), up(vec![1], &[], None));
        assert!(matches!(
            close_statistics(&done),
            StatisticsOutcome::Disagree(_)
        ));
    }

    #[test]
    fn survivors_form_the_next_attempt() {
        let roster: Vec<String> = ["w3", "w1", "w2"].iter().map(|s| s.to_string()).collect();
        let live: HashSet<String> = ["w1", "w3", "x"].iter().map(|s| s.to_string()).collect();
        assert_eq!(participants(&roster, &live), vec!["w1", "w3"]);
    }

    #[test]
    fn the_sum_moves_the_base_by_the_mean_gradient() {
        let scale = 1000.0;
        // Two workers' sums of 2.0 and −0.5 in coordinate 0, over 5 expected rows.
        let mut sum = secagg::discretise(&[2.0, 1.0], scale, &mut rand::rng());
        secagg::add_words(
            &mut sum,
            &secagg::discretise(&[-0.5, 1.0], scale, &mut rand::rng()),
        );
        let g = mean_gradient(&sum, scale, 5.0);
        let out: Vec<f32> = [1.0f32, 0.0].iter().zip(&g).map(|(b, g)| b - g).collect();
        assert!((out[0] - (1.0 - 1.5 / 5.0)).abs() < 1e-3, "{out:?}");
        assert!((out[1] + 0.4).abs() < 1e-3, "{out:?}");
    }
}
