//! The round driver: every tick it moves each active job on — enrolment, rounds (plain or
//! secure, see [`crate::secure`]), retries and commits, the final sampling.

use super::*;

impl Coordinator {
    /// Runs the round driver until the process ends.
    pub async fn drive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
            if let Err(e) = self.step().await {
                eprintln!("coordinator: {e}");
            }
        }
    }

    /// One pass of the driver over every active job.
    pub async fn step(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let window = live_window(&self.config);
        let live: HashSet<String> = state
            .seen
            .iter()
            .filter(|(_, t)| now.duration_since(**t) < window)
            .map(|(w, _)| w.clone())
            .collect();
        let federation_of = state.federation_of.clone();
        let ids: Vec<String> = state.jobs.keys().cloned().collect();
        for id in ids {
            let Some(job) = state.jobs.get_mut(&id) else {
                continue;
            };
            match job.record.state {
                JobState::Enrolling => self.step_enrolling(job, &live, &federation_of, now).await?,
                JobState::Running => self.step_running(job, &live, now).await?,
                JobState::Sampling => self.step_sampling(job, &live, now).await?,
                JobState::Done | JobState::Failed => {}
            }
            if !job.record.state.is_active() {
                state.jobs.remove(&id);
            }
        }
        Ok(())
    }

    pub(super) async fn fail(&self, job: &mut LiveJob, reason: String) -> Result<()> {
        self.store
            .set_state(&job.record.id, JobState::Failed, &reason)
            .await?;
        self.store
            .audit("coordinator", "failed", &job.record.id, &reason)
            .await?;
        job.record.state = JobState::Failed;
        job.record.reason = reason;
        Ok(())
    }

    pub(super) async fn step_enrolling(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        federation_of: &HashMap<String, String>,
        now: Instant,
    ) -> Result<()> {
        let spec = &job.record.spec;
        let min = spec.min_workers as usize;
        let all_answered = live
            .iter()
            .filter(|w| federation_of.get(*w) == Some(&spec.federation))
            .all(|w| job.answered.contains(w));
        if job.accepted.len() >= min && (all_answered || now >= job.enrol_deadline) {
            self.store
                .set_state(&job.record.id, JobState::Running, "")
                .await?;
            self.store
                .audit(
                    "coordinator",
                    "start",
                    &job.record.id,
                    &format!("training with {}", job.accepted.join(", ")),
                )
                .await?;
            job.record.state = JobState::Running;
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
        } else if now >= job.enrol_deadline {
            let reason = format!(
                "enrolment closed with {} of the {} workers needed accepting",
                job.accepted.len(),
                min
            );
            self.fail(job, reason).await?;
        }
        Ok(())
    }

    pub(super) async fn step_running(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        if job.secure() {
            return self.step_secure(job, live, now).await;
        }
        let spec = job.record.spec.clone();
        let min = spec.min_workers as usize;
        let Some(round) = job.round.as_mut() else {
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
            return Ok(());
        };
        let everyone_live_delivered = job
            .accepted
            .iter()
            .filter(|w| live.contains(*w))
            .all(|w| round.uploaded.contains(w));
        let enough = round.uploaded.len() >= min;
        if enough && (everyone_live_delivered || now >= round.deadline) {
            if let Some(round) = job.round.take() {
                return self.commit(job, round, live).await;
            }
            return Ok(());
        }
        if now < round.deadline {
            return Ok(());
        }
        let r = round.round;
        let delivered = round.uploaded.len();
        let detail = format!("round {r}: {delivered} of {min} updates by the deadline");
        self.retry(job, live, detail).await
    }

    /// A stage that missed its deadline: tried again (a fresh attempt) or, after the job's
    /// `round_tries`, the job fails saying why.
    pub(super) async fn retry(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        detail: String,
    ) -> Result<()> {
        let spec = job.record.spec.clone();
        let r = job
            .round
            .as_ref()
            .map_or(job.record.round, |round| round.round);
        let tries = job.record.tries + 1;
        self.store.set_tries(&job.record.id, tries).await?;
        job.record.tries = tries;
        if tries >= spec.round_tries {
            let reason = format!("{detail}; {tries} tries, giving up");
            return self.fail(job, reason).await;
        }
        self.store
            .audit(
                "coordinator",
                "retry",
                &job.record.id,
                &format!("{detail}; try {} of {}", tries + 1, spec.round_tries),
            )
            .await?;
        job.open_round(r, live, self.epoch);
        Ok(())
    }

    /// One tick of a job under secure aggregation (see [`crate::secure`]).
    pub(super) async fn step_secure(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        use crate::secure::{Decision, decide};
        use std::collections::BTreeSet;
        let min = job.record.spec.min_workers as usize;
        let Some(round) = job.round.as_ref() else {
            let r = job.record.round;
            job.open_round(r, live, self.epoch);
            return Ok(());
        };
        let r = round.round;
        match round.stage {
            Stage::AdvertiseKeys => {
                // Every accepted worker's key completes the stage at once; at the deadline,
                // those published make the roster if they are enough.
                let expected: BTreeSet<String> = job.accepted.iter().cloned().collect();
                let published: BTreeSet<String> = job.adverts.keys().cloned().collect();
                let enough = published.len() >= min;
                let decision = decide(&expected, &published, enough, round.deadline, now);
                match decision {
                    Decision::Complete if enough => {
                        let roster: Vec<String> = published.into_iter().collect();
                        self.store
                            .audit(
                                "coordinator",
                                "keys",
                                &job.record.id,
                                &format!(
                                    "secure aggregation: signed keys of {} relayed",
                                    roster.join(", ")
                                ),
                            )
                            .await?;
                        let adverts: Vec<fedsynth_privacy::secagg::KeyAdvert> = roster
                            .iter()
                            .filter_map(|w| job.adverts.get(w))
                            .filter_map(|t| fedsynth_privacy::secagg::KeyAdvert::from_text(t).ok())
                            .collect();
                        let spec = &job.record.spec;
                        job.ring_scale = crate::secure::roster_scale(
                            &adverts,
                            spec.clip_norm,
                            f64::from(spec.batch_size),
                        );
                        job.roster = Some(roster);
                        job.open_round(r, live, self.epoch);
                        Ok(())
                    }
                    Decision::Complete | Decision::Wait => Ok(()),
                    Decision::Void(missing) => {
                        let detail = format!(
                            "secure aggregation: {} of the {min} keys needed by the deadline (none from {})",
                            job.adverts.len(),
                            missing.join(", ")
                        );
                        self.retry(job, live, detail).await
                    }
                }
            }
            Stage::Statistics => self.step_statistics(job, live, now).await,
            Stage::InitialWeights => {
                if !job.record.weights_key.is_empty() {
                    job.open_round(r, live, self.epoch);
                    return Ok(());
                }
                if now >= round.deadline {
                    let detail = "no worker uploaded the job's initial weights by the deadline";
                    return self.retry(job, live, detail.into()).await;
                }
                Ok(())
            }
            Stage::Collect => {
                let expected: BTreeSet<String> = round.participants.iter().cloned().collect();
                let delivered: BTreeSet<String> = round.uploaded.iter().cloned().collect();
                if expected.len() < min && now < round.deadline {
                    // Too few live workers to start: wait for more until the deadline.
                    return Ok(());
                }
                // A participant that stopped polling will not deliver: the attempt is void
                // now rather than at the deadline.
                let gone = expected
                    .iter()
                    .any(|w| !delivered.contains(w) && !live.contains(w));
                let deadline = if gone { now } else { round.deadline };
                match decide(&expected, &delivered, false, deadline, now) {
                    Decision::Complete if expected.len() >= min => match job.round.take() {
                        Some(round) => self.commit(job, round, live).await,
                        None => Ok(()),
                    },
                    Decision::Complete | Decision::Wait => Ok(()),
                    Decision::Void(missing) => {
                        let detail = if expected.len() < min {
                            format!(
                                "round {r}: {} live workers of the roster, {min} needed",
                                expected.len()
                            )
                        } else {
                            format!(
                                "round {r}: attempt void, no masked update from {} by the deadline ({} received stay masked and are dropped); the survivors retry with fresh updates",
                                missing.join(", "),
                                delivered.len()
                            )
                        };
                        self.retry(job, live, detail).await
                    }
                }
            }
        }
    }

    /// One tick of a partial schema's statistics: a wave closes when every worker of the
    /// roster uploaded (its sum is published, or the schema they all completed is stored);
    /// a worker missing at the deadline (or gone) makes the wave try again, its peers'
    /// uploads kept.
    async fn step_statistics(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        use crate::secure::{Decision, StatisticsOutcome, close_statistics, decide};
        use std::collections::BTreeSet;
        let Some(round) = job.round.as_ref() else {
            return Ok(());
        };
        let wave = round.round;
        let expected: BTreeSet<String> = round.participants.iter().cloned().collect();
        let delivered: BTreeSet<String> = job.statistics.keys().cloned().collect();
        let gone = expected
            .iter()
            .any(|w| !delivered.contains(w) && !live.contains(w));
        let deadline = if gone { now } else { round.deadline };
        match decide(&expected, &delivered, false, deadline, now) {
            Decision::Wait => Ok(()),
            Decision::Void(missing) => {
                let detail = format!(
                    "statistics wave {wave}: nothing from {} by the deadline (every holder of the roster takes part in the statistics)",
                    missing.join(", ")
                );
                self.retry(job, live, detail).await
            }
            Decision::Complete => {
                let outcome = close_statistics(&job.statistics);
                job.statistics.clear();
                match outcome {
                    StatisticsOutcome::Disagree(why) => return self.fail(job, why).await,
                    StatisticsOutcome::Wave { sums, released } => {
                        let bytes = fedsynth_proto::u32_bytes(&sums);
                        self.store
                            .add_statistics_wave(&job.record.id, wave, &bytes, &released)
                            .await?;
                        self.store
                            .audit(
                                "coordinator",
                                "statistics",
                                &job.record.id,
                                &format!(
                                    "wave {wave}: {} noisy sums and {} released names from {}",
                                    sums.len(),
                                    released.len(),
                                    expected.iter().cloned().collect::<Vec<_>>().join(", ")
                                ),
                            )
                            .await?;
                        job.transcript.push(pb::StatisticsWave {
                            sums: bytes,
                            released,
                        });
                    }
                    StatisticsOutcome::Schema(text, parameters) => {
                        self.store
                            .set_schema(&job.record.id, &text, parameters)
                            .await?;
                        self.store
                            .audit(
                                "coordinator",
                                "schema",
                                &job.record.id,
                                &format!(
                                    "completed by the holders from {} waves of DP statistics: {parameters} parameters",
                                    job.transcript.len()
                                ),
                            )
                            .await?;
                        job.schema = Some((text, parameters));
                    }
                }
                self.store.set_tries(&job.record.id, 0).await?;
                job.record.tries = 0;
                let r = job.record.round;
                job.open_round(r, live, self.epoch);
                Ok(())
            }
        }
    }

    pub(super) async fn commit(
        &self,
        job: &mut LiveJob,
        mut round: LiveRound,
        live: &HashSet<String>,
    ) -> Result<()> {
        let r = round.round;
        let mut weights = if job.secure() {
            // The sum over the participants, decoded: the noisy sum of their clipped
            // gradients, over the rows they sampled in expectation (batch_size each). The
            // server step reads the base weights as it applies it (a stored base of another
            // size fails the job, saying so).
            let rows = f64::from(job.record.spec.batch_size) * round.participants.len() as f64;
            round.weight = rows;
            crate::secure::mean_gradient(&round.ring, job.ring_scale, rows)
        } else {
            let inv = (1.0 / round.weight) as f32;
            let mut weights = std::mem::take(&mut round.sum);
            for v in &mut weights {
                *v *= inv;
            }
            weights
        };
        // FedAdam steps from the second round on: the first has no global weights here
        // (under secure aggregation it has: the seeded ones).
        let server_step =
            job.record.spec.server_optimizer == ServerOptimizer::Adam && (r > 0 || job.secure());
        if server_step {
            let stepped = optimizer::step_stored_as(
                &self.artifacts,
                &job.record.id,
                r,
                &job.record.weights_key,
                &job.record.weights_digest,
                &mut weights,
                job.record.spec.learning_rate,
                job.secure(),
            )
            .await;
            match stepped {
                Ok(()) => {}
                // Lost or altered state cannot heal by retrying: the job fails, saying why.
                Err(CoordinatorError::Corrupt(reason)) => return self.fail(job, reason).await,
                Err(e) => return Err(e),
            }
        }
        // Every update was bounded, so their average is; the server step keeps it so. Should
        // a value still be out of range, every worker would refuse the weights: the job fails
        // here, saying why, rather than sending them out.
        if let Some(at) = weights
            .iter()
            .position(|v| !(v.is_finite() && v.abs() <= fedsynth_proto::MAX_ABS_WEIGHT))
        {
            let reason = format!(
                "round {r}: the aggregate's value {at} is {} (not finite or beyond ±{:e})",
                weights[at],
                fedsynth_proto::MAX_ABS_WEIGHT
            );
            return self.fail(job, reason).await;
        }
        let (key, digest) = self
            .artifacts
            .put_weights(&job.record.id, r + 1, &weights)
            .await?;
        drop(weights);
        let committed = self
            .store
            .commit_round(
                &job.record.id,
                r,
                &round.uploaded,
                round.weight,
                &key,
                &digest,
            )
            .await?;
        if !committed {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {}: round {r} was already committed",
                job.record.id
            )));
        }
        // The old weights and the moments that went with them are superseded (a job keeps
        // one model's worth, not one per round); a crash before this leaves stale files,
        // nothing worse. A worker still downloading the old weights is training a round
        // that has closed, whose upload would be refused anyway.
        let mut superseded = vec![job.record.weights_key.clone()];
        if server_step {
            superseded.push(crate::artifacts::optimizer_key(&job.record.id, r));
        }
        for old in superseded.iter().filter(|k| !k.is_empty()) {
            if let Err(e) = self.artifacts.delete(old).await {
                eprintln!("coordinator: could not delete {old}: {e}");
            }
        }
        let dropped: Vec<&String> = job
            .accepted
            .iter()
            .filter(|w| !round.uploaded.contains(w))
            .collect();
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().map(|s| s.as_str()).collect();
            self.store
                .audit(
                    "coordinator",
                    "dropped",
                    &job.record.id,
                    &format!("round {r}: no update from {}", names.join(", ")),
                )
                .await?;
        }
        job.record.round = r + 1;
        job.record.tries = 0;
        job.record.weights_key = key;
        job.record.weights_digest = digest;
        if job.record.round >= job.record.spec.rounds {
            self.store
                .set_state(&job.record.id, JobState::Sampling, "")
                .await?;
            job.record.state = JobState::Sampling;
            job.sampling_since = Instant::now();
        } else {
            job.open_round(r + 1, live, self.epoch);
        }
        Ok(())
    }

    pub(super) async fn step_sampling(
        &self,
        job: &mut LiveJob,
        live: &HashSet<String>,
        now: Instant,
    ) -> Result<()> {
        let sampler_live = job.sampler.as_ref().is_some_and(|s| live.contains(s));
        if !sampler_live {
            if let Some(next) = job.accepted.iter().find(|w| live.contains(*w)).cloned() {
                self.store
                    .audit(
                        "coordinator",
                        "sampler",
                        &job.record.id,
                        &format!("{next} samples the final generator"),
                    )
                    .await?;
                job.sampler = Some(next);
                job.sampling_since = now;
            } else if now.duration_since(job.sampling_since)
                > Duration::from_secs(
                    job.record.spec.round_deadline_s * u64::from(job.record.spec.round_tries),
                )
            {
                return self
                    .fail(
                        job,
                        "no participating worker was reachable to sample the final generator"
                            .into(),
                    )
                    .await;
            }
        }
        Ok(())
    }
}
