//! The job owner's service: submit, status, artifacts, the audit trail.

use super::*;

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "submit").await?;
        let body = req.into_inner();
        let request_id = body.client_request_id.trim();
        if request_id.is_empty() || request_id.len() > 128 {
            return Err(CoordinatorError::Invalid(
                "client_request_id must be 1-128 characters".into(),
            )
            .into());
        }
        let spec = JobSpec::from_toml(&body.spec_toml).map_err(CoordinatorError::Invalid)?;
        if !c
            .config
            .federations
            .iter()
            .any(|f| f.name == spec.federation)
        {
            return Err(CoordinatorError::Invalid(format!(
                "job spec: federation '{}' is not known to this coordinator",
                spec.federation
            ))
            .into());
        }
        let mut state = c.state.lock().await;
        let (record, created) = c.store.submit(&new_job_id(), request_id, &spec).await?;
        if created {
            c.store
                .audit(
                    "owner",
                    "submit",
                    &record.id,
                    &format!(
                        "'{}' for federation {}: ε = {} per holder, {} rounds × {} steps, min {} workers, {}",
                        spec.name, spec.federation, spec.epsilon, spec.rounds, spec.local_steps, spec.min_workers,
                        aggregation_text(spec.secure_aggregation)
                    ),
                )
                .await?;
            state.jobs.insert(
                record.id.clone(),
                LiveJob::new(record.clone(), vec![], HashSet::new()),
            );
        } else {
            c.store
                .audit(
                    "owner",
                    "submit",
                    &record.id,
                    &format!("repeated request id {request_id}: same job"),
                )
                .await?;
        }
        Ok(Response::new(pb::SubmitResponse {
            job_id: record.id,
            created,
        }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "status").await?;
        let id = req.into_inner().job_id;
        let record = c
            .store
            .job(&id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("no job '{id}'")))?;
        let participants = c.store.participants(&id).await?;
        let schema = c.store.schema(&id).await?;
        Ok(Response::new(c.status_of(&record, &participants, schema)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "status").await?;
        let mut jobs = Vec::new();
        for record in c.store.jobs().await? {
            let participants = c.store.participants(&record.id).await?;
            jobs.push(c.status_of(&record, &participants, None));
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type FetchArtifactStream = ChunkStream;

    async fn fetch_artifact(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "fetch").await?;
        let id = req.into_inner().job_id;
        let record = c.done_job(&id).await?;
        c.store
            .audit(
                "owner",
                "fetch",
                &id,
                &format!("artifact of {} bytes", record.artifact_bytes),
            )
            .await?;
        Ok(Response::new(c.stream_object(&record.artifact_key).await?))
    }

    async fn fetch_signature(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<pb::ArtifactSignatureText>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "fetch").await?;
        let id = req.into_inner().job_id;
        let record = c.done_job(&id).await?;
        let mut text = Vec::new();
        match c
            .artifacts
            .stream(&format!("{}.sig", record.artifact_key))
            .await
        {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                while let Some(piece) = stream.next().await {
                    text.extend_from_slice(&piece?);
                    if text.len() > fedsynth_proto::MAX_SIGNATURE_BYTES {
                        break;
                    }
                }
            }
            // An unsigned artifact (its worker had no certificate) has no signature object.
            Err(CoordinatorError::Artifacts(object_store::Error::NotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Response::new(pb::ArtifactSignatureText {
            text: String::from_utf8_lossy(&text).into_owned(),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let c = &self.0;
        c.owner(bearer(&req), "audit").await?;
        let body = req.into_inner();
        let job = body.job_id;
        let limit = match body.limit {
            0 => fedsynth_proto::AUDIT_PAGE,
            n => n.min(fedsynth_proto::AUDIT_PAGE),
        };
        let entries = c
            .store
            .audit_trail(
                (!job.is_empty()).then_some(job.as_str()),
                body.after_seq,
                limit,
            )
            .await?
            .into_iter()
            .map(|a| pb::AuditEntry {
                seq: a.seq,
                at_ms: a.at_ms,
                actor: a.actor,
                action: a.action,
                job_id: a.job_id,
                detail: a.detail,
                prev_hash: a.prev_hash,
                hash: a.hash,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}
