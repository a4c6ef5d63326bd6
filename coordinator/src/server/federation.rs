//! The workers' service: registration, polling, answers, weights, updates (plain or masked),
//! key adverts and the artifact upload; and the checks an upload must pass.

use super::*;

#[tonic::async_trait]
impl Federation for FederationService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        let federation = c.worker(&creds, None, "register").await?.0;
        let digest = creds.digest.clone().unwrap_or_default();
        let body = req.get_ref();
        if body.protocol_version != PROTOCOL_VERSION {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "protocol version {} is not supported: this coordinator speaks {PROTOCOL_VERSION}; upgrade the worker",
                body.protocol_version
            ))
            .into());
        }
        if body.federation != federation {
            c.deny(
                "unknown",
                &format!(
                    "register: token of {federation}, claimed another federation ({})",
                    crate::store::bounded(&body.federation, 64)
                ),
            )
            .await?;
            return Err(CoordinatorError::PermissionDenied(format!(
                "the enrolment token is not the one of federation '{}'",
                body.federation
            ))
            .into());
        }
        let id = WorkerId::new(format!("{federation}/{}", body.worker_name))
            .map_err(CoordinatorError::Invalid)?;
        // One certificate per worker: a member cannot enrol extra workers (and meet
        // min_workers alone) with its own certificate.
        if !creds.issued_for(&body.worker_name) {
            c.deny(
                id.as_str(),
                "register: the client certificate is not issued for this worker",
            )
            .await?;
            return Err(CoordinatorError::PermissionDenied(format!(
                "the client certificate is not issued for worker '{}' (fedsynth certs issues one per worker)",
                body.worker_name
            ))
            .into());
        }
        let first = match c
            .store
            .register_worker(id.as_str(), &federation, &digest)
            .await
        {
            Ok(first) => first,
            Err(e) => {
                c.deny(id.as_str(), &format!("register: {e}")).await?;
                return Err(e.into());
            }
        };
        c.store
            .audit(
                id.as_str(),
                "enrol",
                "",
                if first { "enrolled" } else { "reconnected" },
            )
            .await?;
        let mut state = c.state.lock().await;
        state.seen.insert(id.to_string(), Instant::now());
        state.federation_of.insert(id.to_string(), federation);
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id.to_string(),
            poll_interval_ms: c.config.poll_interval_ms,
        }))
    }

    async fn poll(
        &self,
        req: Request<pb::PollRequest>,
    ) -> Result<Response<pb::PollResponse>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (federation, worker) = c.worker(&creds, Some(&worker), "poll").await?;
        let mut state = c.state.lock().await;
        state.seen.insert(worker.clone(), Instant::now());
        state
            .federation_of
            .insert(worker.clone(), federation.clone());
        let mut jobs: Vec<&LiveJob> = state
            .jobs
            .values()
            .filter(|j| j.record.spec.federation == federation)
            .collect();
        jobs.sort_by_key(|j| (j.record.created_ms, j.record.id.clone()));
        let mut task = Task::Idle(pb::Idle {});
        for job in jobs {
            let id = job.record.id.clone();
            match job.record.state {
                JobState::Enrolling if !job.answered.contains(&worker) => {
                    task = Task::Offer(pb::JobOffer {
                        job_id: id,
                        spec_toml: job.record.spec.to_toml(),
                    });
                }
                JobState::Running if job.accepted.contains(&worker) => match &job.round {
                    Some(r) if wanted_from(job, r, &worker) => {
                        task = Task::Train(pb::TrainRound {
                            job_id: id,
                            round: r.round,
                            base_digest: job.record.weights_digest.clone(),
                            stage: r.stage.as_str().into(),
                            attempt: r.attempt,
                            participants: r.participants.clone(),
                        });
                    }
                    _ => continue,
                },
                JobState::Sampling if job.sampler.as_deref() == Some(worker.as_str()) => {
                    task = Task::Sample(pb::SampleJob {
                        job_id: id,
                        base_digest: job.record.weights_digest.clone(),
                    });
                }
                _ => continue,
            }
            break;
        }
        Ok(Response::new(pb::PollResponse { task: Some(task) }))
    }

    async fn answer(
        &self,
        req: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerResponse>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (federation, worker) = c.worker(&creds, Some(&worker), "answer").await?;
        let body = req.into_inner();
        let mut state = c.state.lock().await;
        let job = state
            .jobs
            .get_mut(&body.job_id)
            .filter(|j| j.record.spec.federation == federation)
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "job '{}' is not open to federation '{federation}'",
                    body.job_id
                ))
            })?;
        if job.record.state != JobState::Enrolling {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {} is no longer enrolling",
                body.job_id
            ))
            .into());
        }
        let reason: String = body.reason.chars().take(500).collect();
        if c.store
            .answer(&body.job_id, &worker, body.accept, &reason)
            .await?
        {
            job.answered.insert(worker.clone());
            if body.accept {
                job.accepted.push(worker.clone());
                c.store
                    .audit(&worker, "accept", &body.job_id, "accepted the job")
                    .await?;
            } else {
                c.store
                    .audit(&worker, "refuse", &body.job_id, &reason)
                    .await?;
            }
            c.wake.notify_one();
        }
        Ok(Response::new(pb::AnswerResponse {}))
    }

    type DownloadWeightsStream = ChunkStream;

    async fn download_weights(
        &self,
        req: Request<pb::DownloadWeightsRequest>,
    ) -> Result<Response<Self::DownloadWeightsStream>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "download").await?;
        let job_id = req.into_inner().job_id;
        let key = {
            let state = c.state.lock().await;
            let job = state
                .jobs
                .get(&job_id)
                .filter(|j| j.accepted.contains(&worker))
                .ok_or_else(|| {
                    CoordinatorError::PermissionDenied(format!(
                        "{worker} takes no part in job '{job_id}'"
                    ))
                })?;
            if job.record.weights_key.is_empty() {
                return Err(CoordinatorError::FailedPrecondition(
                    "no global weights yet: round 0 starts from the job's seed".into(),
                )
                .into());
            }
            job.record.weights_key.clone()
        };
        Ok(Response::new(c.stream_object(&key).await?))
    }

    async fn publish_key(
        &self,
        req: Request<pb::PublishKeyRequest>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "publish key").await?;
        let body = req.into_inner();
        let advert = fedsynth_privacy::secagg::KeyAdvert::from_text(&body.advert)
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        // The coordinator checks the fields only: the signature is for the other workers,
        // who hold the federation's CA, to check.
        advert
            .verify(&body.job_id, &worker, None)
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        let mut state = c.state.lock().await;
        let job = state
            .jobs
            .get_mut(&body.job_id)
            .filter(|j| j.accepted.contains(&worker) && j.secure())
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "{worker} takes no part in a secure aggregation job '{}'",
                    body.job_id
                ))
            })?;
        if let Some(ack) = seen_before(
            job.adverts.get(&worker),
            &body.advert,
            "key already published",
            || format!("{worker} published another key for this job already"),
        )? {
            return Ok(ack);
        }
        let open = job
            .round
            .as_ref()
            .is_some_and(|r| r.stage == Stage::AdvertiseKeys);
        if !open || job.record.state != JobState::Running {
            return Err(CoordinatorError::FailedPrecondition(
                "the job is not collecting keys".into(),
            )
            .into());
        }
        job.adverts.insert(worker, body.advert);
        drop(state);
        c.wake.notify_one();
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: "key published".into(),
        }))
    }

    async fn fetch_keys(
        &self,
        req: Request<pb::FetchKeysRequest>,
    ) -> Result<Response<pb::KeyList>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "fetch keys").await?;
        let job_id = req.into_inner().job_id;
        let state = c.state.lock().await;
        let job = roster_job(&state, &job_id, &worker)?;
        let adverts = job
            .roster
            .iter()
            .flatten()
            .filter_map(|w| job.adverts.get(w).cloned())
            .collect();
        Ok(Response::new(pb::KeyList { adverts }))
    }

    async fn upload_statistics(
        &self,
        req: Request<pb::StatisticsUpload>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "upload statistics").await?;
        let body = req.into_inner();
        let invalid = |m: &str| -> Status { CoordinatorError::Invalid(m.into()).into() };
        if !body.words.len().is_multiple_of(4) || body.words.len() > MAX_STATISTICS_BYTES {
            return Err(invalid("statistics words: whole u32 words, at most 16 MiB"));
        }
        let names: usize = body.released.iter().map(String::len).sum();
        if body.released.len() > MAX_RELEASED || names > MAX_STATISTICS_BYTES {
            return Err(invalid("statistics: too many released names"));
        }
        let schema = if body.schema_toml.is_empty() {
            None
        } else {
            if body.schema_toml.len() > 1 << 20
                || body.parameters == 0
                || body.parameters > MAX_PARAMETERS
                || !body.words.is_empty()
                || !body.released.is_empty()
            {
                return Err(invalid(
                    "a completed schema: at most 1 MiB, 1 to MAX_PARAMETERS parameters, nothing else",
                ));
            }
            Some((body.schema_toml, body.parameters))
        };
        let upload = crate::secure::StatisticsUpload {
            words: fedsynth_proto::u32_words(&body.words).unwrap_or_default(),
            released: body.released,
            schema,
        };
        let mut state = c.state.lock().await;
        let job = state
            .jobs
            .get_mut(&body.job_id)
            .filter(|j| j.in_roster(&worker))
            .ok_or_else(|| {
                CoordinatorError::PermissionDenied(format!(
                    "{worker} is not in the key roster of job '{}'",
                    body.job_id
                ))
            })?;
        let open = job
            .round
            .as_ref()
            .is_some_and(|r| r.stage == Stage::Statistics && r.round == body.wave);
        if !open || job.record.state != JobState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "statistics wave {} is not open",
                body.wave
            ))
            .into());
        }
        if let Some(ack) = seen_before(
            job.statistics.get(&worker),
            &upload,
            "statistics already received",
            || {
                format!(
                    "{worker} sent other statistics for wave {} already",
                    body.wave
                )
            },
        )? {
            return Ok(ack);
        }
        job.statistics.insert(worker, upload);
        drop(state);
        c.wake.notify_one();
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: "statistics received".into(),
        }))
    }

    async fn fetch_statistics(
        &self,
        req: Request<pb::FetchStatisticsRequest>,
    ) -> Result<Response<pb::StatisticsTranscript>, Status> {
        let c = &self.0;
        let worker = req.get_ref().worker_id.clone();
        let creds = c.credentials(&req);
        let (_, worker) = c.worker(&creds, Some(&worker), "fetch statistics").await?;
        let job_id = req.into_inner().job_id;
        let state = c.state.lock().await;
        let job = roster_job(&state, &job_id, &worker)?;
        Ok(Response::new(pb::StatisticsTranscript {
            waves: job.transcript.clone(),
        }))
    }

    async fn upload_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        c.worker(&creds, None, "upload").await?;
        let mut stream = req.into_inner();
        let header = match first(&mut stream, "an update").await?.part {
            Some(pb::update_chunk::Part::Header(h)) => h,
            _ => {
                return Err(
                    CoordinatorError::Invalid("an update starts with its header".into()).into(),
                );
            }
        };
        let (_, worker) = c.worker(&creds, Some(&header.worker_id), "upload").await?;
        if header.parameters == 0 || header.parameters > MAX_PARAMETERS {
            return Err(CoordinatorError::Invalid(format!(
                "an update has 1 to {MAX_PARAMETERS} parameters, not {}",
                header.parameters
            ))
            .into());
        }
        // Check the round before receiving anything large.
        let kind = {
            let state = c.state.lock().await;
            check_round(&state, &header, &worker)?
        };
        if kind == UploadKind::Plain
            && !(header.weight.is_finite() && header.weight > 0.0 && header.weight <= 1e12)
        {
            return Err(CoordinatorError::Invalid(
                "an update's weight must be in (0, 1e12]".into(),
            )
            .into());
        }
        // The update is spooled to an unlinked temporary file as it arrives, so a stream
        // costs the coordinator about one chunk of memory, whatever the model's size; it is
        // added to the round's sum only once whole and valid.
        let n = header.parameters as usize;
        let mut spool = std::io::BufWriter::new(tempfile::tempfile()?);
        let mut received = 0usize;
        let mut decoded = Vec::with_capacity(CHUNK_BYTES / 4);
        while let Some(chunk) = stream.next().await {
            let Some(pb::update_chunk::Part::Data(bytes)) = chunk?.part else {
                return Err(
                    CoordinatorError::Invalid("a second header in one update".into()).into(),
                );
            };
            if bytes.len() % 4 != 0 {
                return Err(CoordinatorError::Invalid(
                    "an update chunk is not whole 32-bit values".into(),
                )
                .into());
            }
            decoded.clear();
            if kind != UploadKind::Ring {
                fedsynth_proto::extend_f32(&mut decoded, &bytes).ok_or_else(|| {
                    CoordinatorError::Invalid("an update chunk is not whole f32 values".into())
                })?;
            }
            received += bytes.len() / 4;
            if received > n {
                return Err(CoordinatorError::Invalid(
                    "the update is longer than its header says".into(),
                )
                .into());
            }
            if decoded
                .iter()
                .any(|v| !(v.is_finite() && v.abs() <= fedsynth_proto::MAX_ABS_WEIGHT))
            {
                return Err(CoordinatorError::Invalid(format!(
                    "the update holds NaN, infinite or out-of-range values (beyond ±{:e})",
                    fedsynth_proto::MAX_ABS_WEIGHT
                ))
                .into());
            }
            std::io::Write::write_all(&mut spool, &bytes)?;
        }
        if received != n {
            return Err(CoordinatorError::Invalid(format!(
                "the update ended after {received} of {n} values"
            ))
            .into());
        }
        let mut spool = spool
            .into_inner()
            .map_err(|e| CoordinatorError::Io(e.into_error()))?;
        std::io::Seek::rewind(&mut spool)?;
        match kind {
            UploadKind::Plain => {}
            UploadKind::Initial => return initial_weights(c, &header, &worker, spool, n).await,
            UploadKind::Ring => return add_ring(c, &header, &worker, spool, n).await,
        }
        // A bounded move (the spec's max_update_norm): measured against the round's global
        // weights, and scaled back to the bound before it is averaged.
        let bound = {
            let state = c.state.lock().await;
            state.jobs.get(&header.job_id).and_then(|j| {
                let b = j.record.spec.max_update_norm?;
                (!j.record.weights_key.is_empty() && j.record.weights_digest == header.base_digest)
                    .then(|| (b, j.record.weights_key.clone()))
            })
        };
        if let Some((b, base_key)) = bound {
            let norm = move_norm(&c.artifacts, &base_key, &mut spool, n).await?;
            if norm > b {
                spool = scale_move(&c.artifacts, &base_key, spool, n, b / norm).await?;
                c.store
                    .audit(
                        &worker,
                        "clipped",
                        &header.job_id,
                        &format!(
                            "round {}: the update moved the weights by {norm:.4}, scaled back to {b}",
                            header.round
                        ),
                    )
                    .await?;
            }
        }
        let mut state = c.state.lock().await;
        check_round(&state, &header, &worker)?;
        let job = state
            .jobs
            .get_mut(&header.job_id)
            .ok_or_else(|| CoordinatorError::NotFound("job gone".into()))?;
        let Some(round) = job.round.as_mut() else {
            return Err(CoordinatorError::FailedPrecondition("the round closed".into()).into());
        };
        if round.sum.is_empty() {
            round.sum = vec![0.0; n];
        }
        let w = header.weight as f32;
        let sum = &mut round.sum;
        spool_blocks(&mut spool, n, |at, bytes| {
            for (s, b) in sum[at..].iter_mut().zip(bytes.chunks_exact(4)) {
                *s += w * f32_at(b);
            }
        })?;
        round.weight += header.weight;
        round.uploaded.push(worker.clone());
        let r = round.round;
        drop(state);
        c.wake.notify_one();
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: format!("round {r} update received"),
        }))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::UploadAck>, Status> {
        let c = &self.0;
        let creds = c.credentials(&req);
        c.worker(&creds, None, "artifact").await?;
        let mut stream = req.into_inner();
        let header = match first(&mut stream, "an artifact").await?.part {
            Some(pb::artifact_chunk::Part::Header(h)) => h,
            _ => {
                return Err(
                    CoordinatorError::Invalid("an artifact starts with its header".into()).into(),
                );
            }
        };
        let (_, worker) = c
            .worker(&creds, Some(&header.worker_id), "artifact")
            .await?;
        if header.size > MAX_ARTIFACT_BYTES
            || header.sha256.len() != 64
            || header.signature.len() > fedsynth_proto::MAX_SIGNATURE_BYTES
        {
            return Err(CoordinatorError::Invalid(
                "artifact header: bad size, SHA-256 or signature".into(),
            )
            .into());
        }
        let format = {
            let state = c.state.lock().await;
            let job = state
                .jobs
                .get(&header.job_id)
                .filter(|j| {
                    j.record.state == JobState::Sampling
                        && j.sampler.as_deref() == Some(worker.as_str())
                })
                .ok_or_else(|| {
                    CoordinatorError::PermissionDenied(format!(
                        "{worker} is not the sampler of job '{}'",
                        header.job_id
                    ))
                })?;
            job.record.spec.format.clone()
        };
        let key = format!("jobs/{}/synthetic.{format}.fsx", header.job_id);
        let mut upload = c.artifacts.upload(&key).await?;
        while let Some(chunk) = stream.next().await {
            let part = match chunk {
                Ok(pb::ArtifactChunk {
                    part: Some(pb::artifact_chunk::Part::Data(bytes)),
                }) => bytes,
                Ok(_) => {
                    upload.abort().await;
                    return Err(CoordinatorError::Invalid(
                        "a second header in one artifact".into(),
                    )
                    .into());
                }
                Err(e) => {
                    upload.abort().await;
                    return Err(e);
                }
            };
            if upload.bytes() + part.len() as u64 > header.size {
                upload.abort().await;
                return Err(CoordinatorError::Invalid(
                    "the artifact is longer than its header says".into(),
                )
                .into());
            }
            upload.put(part.into()).await?;
        }
        upload.finish(header.size, &header.sha256).await?;
        // The signature goes beside the artifact (the owner, not the coordinator, checks it),
        // stored before the job is marked done.
        if !header.signature.is_empty() {
            let mut sig = c.artifacts.upload(&format!("{key}.sig")).await?;
            sig.put(header.signature.clone().into_bytes().into())
                .await?;
            sig.finish_own().await?;
        }
        let mut state = c.state.lock().await;
        if c.store.finish(&header.job_id, &key, header.size).await? {
            c.store
                .audit(
                    &worker,
                    "artifact",
                    &header.job_id,
                    &format!("encrypted synthetic dataset, {} bytes", header.size),
                )
                .await?;
            if let Some(job) = state.jobs.get_mut(&header.job_id) {
                job.record.state = JobState::Done;
            }
            state.jobs.remove(&header.job_id);
        }
        Ok(Response::new(pb::UploadAck {
            accepted: true,
            message: "artifact stored".into(),
        }))
    }
}

/// Stores a worker's upload of the job's seeded initial weights as the job's first weights.
/// A job whose key roster holds `worker` (what may read its keys and statistics).
fn roster_job<'a>(state: &'a State, job_id: &str, worker: &str) -> Result<&'a LiveJob> {
    state
        .jobs
        .get(job_id)
        .filter(|j| j.in_roster(worker))
        .ok_or_else(|| {
            CoordinatorError::PermissionDenied(format!(
                "{worker} is not in the key roster of job '{job_id}'"
            ))
        })
}

/// A worker's once-per-job (or per-wave) contribution sent again: the same one is
/// acknowledged (`again`), another refused (`other`); `None` when it is the first.
fn seen_before<T: PartialEq>(
    known: Option<&T>,
    sent: &T,
    again: &str,
    other: impl FnOnce() -> String,
) -> Result<Option<Response<pb::UploadAck>>> {
    match known {
        None => Ok(None),
        Some(k) if k == sent => Ok(Some(Response::new(pb::UploadAck {
            accepted: true,
            message: again.into(),
        }))),
        Some(_) => Err(CoordinatorError::FailedPrecondition(other())),
    }
}

/// Largest statistics upload (words, or the names' bytes): 16 MiB.
const MAX_STATISTICS_BYTES: usize = 16 << 20;
/// Most names one statistics upload may release.
const MAX_RELEASED: usize = 1 << 20;

async fn initial_weights(
    c: &Coordinator,
    header: &pb::UpdateHeader,
    worker: &str,
    mut spool: std::fs::File,
    n: usize,
) -> Result<Response<pb::UploadAck>, Status> {
    let mut bytes = vec![0u8; n * 4];
    std::io::Read::read_exact(&mut spool, &mut bytes)?;
    let values: Vec<f32> = bytes.chunks_exact(4).map(f32_at).collect();
    drop(bytes);
    let (key, digest) = c.artifacts.put_weights(&header.job_id, 0, &values).await?;
    let mut state = c.state.lock().await;
    check_round(&state, header, worker)?;
    if !c
        .store
        .set_initial_weights(&header.job_id, &key, &digest)
        .await?
    {
        return Err(CoordinatorError::FailedPrecondition(
            "the job has its initial weights already".into(),
        )
        .into());
    }
    if let Some(job) = state.jobs.get_mut(&header.job_id) {
        job.record.weights_key = key;
        job.record.weights_digest = digest.clone();
    }
    drop(state);
    c.store
        .audit(
            worker,
            "initial",
            &header.job_id,
            &format!("the job's seeded initial weights, digest {digest}"),
        )
        .await?;
    c.wake.notify_one();
    Ok(Response::new(pb::UploadAck {
        accepted: true,
        message: "initial weights stored".into(),
    }))
}

/// Adds a worker's masked ring words into the attempt's sum (wrapping).
async fn add_ring(
    c: &Coordinator,
    header: &pb::UpdateHeader,
    worker: &str,
    mut spool: std::fs::File,
    n: usize,
) -> Result<Response<pb::UploadAck>, Status> {
    let mut state = c.state.lock().await;
    check_round(&state, header, worker)?;
    let job = state
        .jobs
        .get_mut(&header.job_id)
        .ok_or_else(|| CoordinatorError::NotFound("job gone".into()))?;
    let Some(round) = job.round.as_mut() else {
        return Err(CoordinatorError::FailedPrecondition("the round closed".into()).into());
    };
    if round.ring.is_empty() {
        round.ring = vec![0; n];
    }
    let ring = &mut round.ring;
    spool_blocks(&mut spool, n, |at, bytes| {
        for (s, b) in ring[at..].iter_mut().zip(bytes.chunks_exact(4)) {
            *s = s.wrapping_add(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
    })?;
    round.uploaded.push(worker.to_string());
    let (r, a) = (round.round, round.attempt);
    drop(state);
    c.wake.notify_one();
    Ok(Response::new(pb::UploadAck {
        accepted: true,
        message: format!("round {r} attempt {a}: masked update received"),
    }))
}

/// Reads a spool of `n` 32-bit values a chunk at a time, handing each chunk's bytes and the
/// index of its first value to `f`.
fn spool_blocks(
    spool: &mut std::fs::File,
    n: usize,
    mut f: impl FnMut(usize, &[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut at = 0;
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(spool, &mut buf[..len * 4])?;
        f(at, &buf[..len * 4]);
        at += len;
    }
    Ok(())
}

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// L2 distance between a spooled update of `n` values and the stored weights `base_key`,
/// read block by block; the spool is rewound.
async fn move_norm(
    artifacts: &crate::artifacts::Artifacts,
    base_key: &str,
    spool: &mut std::fs::File,
    n: usize,
) -> Result<f64> {
    let mut base = artifacts.reader(base_key).await?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let (mut at, mut sum) = (0, 0.0f64);
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(spool, &mut buf[..len * 4])?;
        let g = base.read_exact(len * 4).await?.ok_or_else(|| {
            CoordinatorError::Corrupt("the global weights end before the update".into())
        })?;
        for (u, g) in buf[..len * 4].chunks_exact(4).zip(g.chunks_exact(4)) {
            let d = f64::from(f32_at(u)) - f64::from(f32_at(g));
            sum += d * d;
        }
        at += len;
    }
    std::io::Seek::rewind(spool)?;
    Ok(sum.sqrt())
}

/// A new spool holding base + factor·(update − base), rewound.
async fn scale_move(
    artifacts: &crate::artifacts::Artifacts,
    base_key: &str,
    mut spool: std::fs::File,
    n: usize,
    factor: f64,
) -> Result<std::fs::File> {
    let mut base = artifacts.reader(base_key).await?;
    let mut out = std::io::BufWriter::new(tempfile::tempfile()?);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut at = 0;
    while at < n {
        let len = (n - at).min(CHUNK_BYTES / 4);
        std::io::Read::read_exact(&mut spool, &mut buf[..len * 4])?;
        let g = base.read_exact(len * 4).await?.ok_or_else(|| {
            CoordinatorError::Corrupt("the global weights end before the update".into())
        })?;
        for (u, g) in buf[..len * 4].chunks_exact(4).zip(g.chunks_exact(4)) {
            let (u, g) = (f64::from(f32_at(u)), f64::from(f32_at(g)));
            std::io::Write::write_all(&mut out, &((g + factor * (u - g)) as f32).to_le_bytes())?;
        }
        at += len;
    }
    let mut file = out
        .into_inner()
        .map_err(|e| CoordinatorError::Io(e.into_error()))?;
    std::io::Seek::rewind(&mut file)?;
    Ok(file)
}

/// The first message of a client stream.
async fn first<T>(stream: &mut Streaming<T>, what: &str) -> Result<T, Status> {
    match stream.next().await {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e),
        None => Err(CoordinatorError::Invalid(format!("{what} arrived empty")).into()),
    }
}

/// Whether the open stage `r` of `job` waits for something from `worker`.
fn wanted_from(job: &LiveJob, r: &LiveRound, worker: &str) -> bool {
    let in_roster = || job.in_roster(worker);
    match r.stage {
        Stage::AdvertiseKeys => !job.adverts.contains_key(worker),
        Stage::Statistics => in_roster() && !job.statistics.contains_key(worker),
        Stage::InitialWeights => in_roster() && job.record.weights_key.is_empty(),
        Stage::Collect if job.secure() => {
            r.participants.iter().any(|w| w == worker) && !r.uploaded.iter().any(|w| w == worker)
        }
        Stage::Collect => !r.uploaded.iter().any(|w| w == worker),
    }
}

/// What an upload is, by the job's mode and the round's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadKind {
    /// Plain aggregation: a worker's f32 weights, averaged by its weight.
    Plain,
    /// Secure aggregation: the job's seeded initial weights (f32, no data).
    Initial,
    /// Secure aggregation: masked ring words.
    Ring,
}

fn check_round(state: &State, header: &pb::UpdateHeader, worker: &str) -> Result<UploadKind> {
    let job = state
        .jobs
        .get(&header.job_id)
        .filter(|j| j.accepted.iter().any(|w| w == worker))
        .ok_or_else(|| {
            CoordinatorError::PermissionDenied(format!(
                "{worker} takes no part in job '{}'",
                header.job_id
            ))
        })?;
    let round = job
        .round
        .as_ref()
        .filter(|r| job.record.state == JobState::Running && r.round == header.round)
        .ok_or_else(|| {
            CoordinatorError::FailedPrecondition(format!(
                "job {}: round {} is not open (the job is {} at round {})",
                header.job_id,
                header.round,
                job.record.state.as_str(),
                job.record.round
            ))
        })?;
    let encoding = match header.encoding.as_str() {
        "" | "f32" => "f32",
        "ring32" => "ring32",
        other => {
            return Err(CoordinatorError::Invalid(format!(
                "unknown update encoding '{}'",
                other.escape_debug()
            )));
        }
    };
    let kind = match (job.secure(), round.stage, encoding) {
        (false, Stage::Collect, "f32") => UploadKind::Plain,
        (true, Stage::InitialWeights, "f32") => UploadKind::Initial,
        (true, Stage::Collect, "ring32") => UploadKind::Ring,
        (true, Stage::Collect, _) => {
            return Err(CoordinatorError::Invalid(
                "this job uses secure aggregation: updates must be masked ring words".into(),
            ));
        }
        _ => {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "the round is at stage {}, not taking {encoding} uploads",
                round.stage.as_str()
            )));
        }
    };
    if kind == UploadKind::Initial {
        if !job.in_roster(worker) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "{worker} is not in the job's roster"
            )));
        }
        if !(job.record.weights_key.is_empty() && header.base_digest.is_empty()) {
            return Err(CoordinatorError::FailedPrecondition(
                "the job has its initial weights already".into(),
            ));
        }
    }
    if kind == UploadKind::Ring {
        if !round.participants.iter().any(|w| w == worker) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "{worker} is not a participant of this attempt"
            )));
        }
        if header.attempt != round.attempt {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "the update is for attempt {}, the round is at attempt {}",
                header.attempt, round.attempt
            )));
        }
    }
    if round.uploaded.iter().any(|w| w == worker) {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "{worker} already delivered round {}",
            header.round
        )));
    }
    if header.base_digest != job.record.weights_digest {
        return Err(CoordinatorError::FailedPrecondition(
            "the update starts from other weights than this round's".into(),
        ));
    }
    // The model's size comes from the spec (or the schema every holder completed), never
    // from the first upload: one worker cannot lock the others out by uploading first with
    // another size.
    if header.parameters != job.parameters() {
        return Err(CoordinatorError::Invalid(format!(
            "the update has {} parameters, the job's model {}",
            header.parameters,
            job.parameters()
        )));
    }
    if kind == UploadKind::Plain && header.weight > job.record.spec.max_worker_weight {
        return Err(CoordinatorError::Invalid(format!(
            "the update's weight {} is above the job's max_worker_weight {}",
            header.weight, job.record.spec.max_worker_weight
        )));
    }
    Ok(kind)
}
