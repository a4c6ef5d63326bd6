//! Who is calling: the owner's token, a worker's enrolment token, certificate and id;
//! every refusal goes to the audit trail (rate-limited).

use super::*;

impl Coordinator {
    // Credentials are read from the request synchronously, so that no future holds a borrow
    // of a (non-`Sync`) streaming request across an await.

    /// Records a refused call in the audit trail, at most [`DENIALS_PER_MINUTE`] a minute:
    /// beyond that, refusals (a flood of bad tokens, say) are only counted, and the count is
    /// recorded with the next one that is written.
    pub(super) async fn deny(&self, actor: &str, detail: &str) -> Result<()> {
        let note = {
            let mut d = self
                .denials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if now.duration_since(d.window) >= Duration::from_secs(60) {
                d.window = now;
                d.written = 0;
            }
            if d.written >= DENIALS_PER_MINUTE {
                d.suppressed += 1;
                return Ok(());
            }
            d.written += 1;
            std::mem::take(&mut d.suppressed)
        };
        let detail = if note > 0 {
            format!("{detail} ({note} earlier refusals were over the rate limit and not recorded)")
        } else {
            detail.to_string()
        };
        self.store.audit(actor, "denied", "", &detail).await
    }

    pub(super) async fn owner(&self, token: Option<String>, what: &str) -> Result<()> {
        match token {
            Some(t) if same_secret(&t, &self.config.owner_token) => Ok(()),
            other => {
                let why = if other.is_none() {
                    "no token"
                } else {
                    "a wrong token"
                };
                self.deny("unknown", &format!("{what} with {why}")).await?;
                Err(CoordinatorError::Unauthenticated(format!(
                    "{what}: the job owner's token is missing or wrong"
                )))
            }
        }
    }

    pub(super) fn credentials<T>(&self, req: &Request<T>) -> Credentials {
        let (digest, names) = if self.config.tls.is_none() {
            (Some(String::new()), None)
        } else {
            let leaf = req.peer_certs().filter(|c| !c.is_empty());
            (
                leaf.as_ref()
                    .map(|c| hex::encode(Sha256::digest(c[0].as_ref()))),
                Some(leaf.map_or_else(Vec::new, |c| {
                    fedsynth_privacy::signature::certificate_names(c[0].as_ref())
                })),
            )
        };
        Credentials {
            token: bearer(req),
            digest,
            names,
        }
    }

    /// Checks a worker's credentials; returns its federation and, when `worker` is given,
    /// its checked id. Every refusal goes to the audit trail.
    pub(super) async fn worker(
        &self,
        creds: &Credentials,
        worker: Option<&str>,
        what: &str,
    ) -> Result<(String, String)> {
        let result = self.check_worker(creds, worker).await;
        if let Err(e) = &result {
            // Only a well-formed id is named; anything else a caller sent is not echoed.
            let actor = worker
                .and_then(|w| WorkerId::new(w).ok())
                .map_or_else(|| "unknown".to_string(), |id| id.to_string());
            self.deny(&actor, &format!("{what}: {e}")).await?;
        }
        result
    }

    pub(super) async fn check_worker(
        &self,
        creds: &Credentials,
        worker: Option<&str>,
    ) -> Result<(String, String)> {
        let token = creds.token.as_deref().ok_or_else(|| {
            CoordinatorError::Unauthenticated("no enrolment token (authorization: Bearer …)".into())
        })?;
        let federation = self
            .config
            .federations
            .iter()
            .find(|f| same_secret(token, &f.enrolment_token))
            .map(|f| f.name.clone())
            .ok_or_else(|| CoordinatorError::Unauthenticated("unknown enrolment token".into()))?;
        let digest = creds.digest.as_deref().ok_or_else(|| {
            CoordinatorError::Unauthenticated(
                "workers must present a client certificate (mutual TLS)".into(),
            )
        })?;
        let Some(worker) = worker else {
            return Ok((federation, String::new()));
        };
        let id = WorkerId::new(worker).map_err(CoordinatorError::Invalid)?;
        if !id.as_str().starts_with(&format!("{federation}/")) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "worker '{id}' is not enrolled in federation '{federation}'"
            )));
        }
        let name = id.as_str().split_once('/').map_or("", |(_, n)| n);
        if !creds.issued_for(name) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "the client certificate is not issued for worker '{name}'"
            )));
        }
        match self.store.worker_cert(id.as_str()).await? {
            None => Err(CoordinatorError::Unauthenticated(format!(
                "worker '{id}' has not registered"
            ))),
            Some(d) if d != digest => Err(CoordinatorError::PermissionDenied(format!(
                "worker '{id}' registered with another certificate"
            ))),
            Some(_) => Ok((federation, id.to_string())),
        }
    }
}
