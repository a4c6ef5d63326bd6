//! The job store: jobs, their participants, committed rounds, enrolled workers and the
//! append-only audit trail, in SQLite (embedded, the default) or PostgreSQL — the same code
//! through sqlx's `Any` driver; only the DDL differs. Every record carries a version tag.
//!
//! A round commits in one transaction guarded by the round it expects, so a restarted or
//! racing coordinator can never commit the same round twice.

use std::str::FromStr;

use fedsynth_proto::JobSpec;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::error::{CoordinatorError, Result};

/// Version tag written with every record.
pub const RECORD_VERSION: i64 = 1;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Offered to the federation's workers, waiting for enough of them to accept.
    Enrolling,
    /// Training rounds.
    Running,
    /// A designated worker samples the final generator.
    Sampling,
    /// The encrypted artifact is stored.
    Done,
    /// Stopped, with a reason.
    Failed,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolling => "enrolling",
            Self::Running => "running",
            Self::Sampling => "sampling",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Whether the job still has work to do.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Enrolling | Self::Running | Self::Sampling)
    }
}

impl FromStr for JobState {
    type Err = CoordinatorError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "enrolling" => Self::Enrolling,
            "running" => Self::Running,
            "sampling" => Self::Sampling,
            "done" => Self::Done,
            "failed" => Self::Failed,
            other => return Err(CoordinatorError::Corrupt(format!("job state '{other}'"))),
        })
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// The client's request id (unique).
    pub request_id: String,
    /// The parsed spec.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// Rounds committed.
    pub round: u32,
    /// Failed tries of the current round so far.
    pub tries: u32,
    /// Why it failed, or what it waits for.
    pub reason: String,
    /// Object key of the current global weights ("" before round 1).
    pub weights_key: String,
    /// SHA-256 of the current global weights ("" before round 1).
    pub weights_digest: String,
    /// Object key of the encrypted artifact ("" until done).
    pub artifact_key: String,
    /// Size of the artifact.
    pub artifact_bytes: u64,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Last changed, ms since the epoch.
    pub updated_ms: i64,
}

/// A worker's answer to a job offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// The worker.
    pub worker_id: String,
    /// Accepted (true) or refused.
    pub accepted: bool,
    /// Why it refused.
    pub reason: String,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Increasing sequence number.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who: `owner`, a worker id, or `coordinator`.
    pub actor: String,
    /// What: `submit`, `enrol`, `accept`, `refuse`, `round`, `artifact`, `fetch`, `denied`, …
    pub action: String,
    /// Which job ("" for none).
    pub job_id: String,
    /// Details.
    pub detail: String,
    /// The hash of the entry before it ([`fedsynth_proto::AUDIT_GENESIS`] for the first).
    pub prev_hash: String,
    /// This entry's hash, chained ([`fedsynth_proto::audit_hash`]).
    pub hash: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

const COMMON_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, federation TEXT NOT NULL,
        spec TEXT NOT NULL, state TEXT NOT NULL, round BIGINT NOT NULL, tries BIGINT NOT NULL,
        reason TEXT NOT NULL, weights_key TEXT NOT NULL, weights_digest TEXT NOT NULL,
        artifact_key TEXT NOT NULL, artifact_bytes BIGINT NOT NULL, created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL, record_version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS participants (
        job_id TEXT NOT NULL, worker_id TEXT NOT NULL, accepted BIGINT NOT NULL,
        reason TEXT NOT NULL, at_ms BIGINT NOT NULL, record_version BIGINT NOT NULL,
        PRIMARY KEY (job_id, worker_id))",
    "CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY, federation TEXT NOT NULL, cert_digest TEXT NOT NULL,
        registered_ms BIGINT NOT NULL, record_version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rounds (
        job_id TEXT NOT NULL, round BIGINT NOT NULL, workers TEXT NOT NULL,
        weight DOUBLE PRECISION NOT NULL, weights_digest TEXT NOT NULL,
        committed_ms BIGINT NOT NULL, record_version BIGINT NOT NULL,
        PRIMARY KEY (job_id, round))",
    "CREATE TABLE IF NOT EXISTS statistics (
        job_id TEXT NOT NULL, wave BIGINT NOT NULL, sums TEXT NOT NULL, released TEXT NOT NULL,
        at_ms BIGINT NOT NULL, record_version BIGINT NOT NULL, PRIMARY KEY (job_id, wave))",
    "CREATE TABLE IF NOT EXISTS schemas (
        job_id TEXT PRIMARY KEY, schema TEXT NOT NULL, parameters BIGINT NOT NULL,
        at_ms BIGINT NOT NULL, record_version BIGINT NOT NULL)",
];

const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms BIGINT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, job_id TEXT NOT NULL, detail TEXT NOT NULL,
        record_version BIGINT NOT NULL, prev_hash TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL DEFAULT '')",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
];

const POSTGRES_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit (
        seq BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, job_id TEXT NOT NULL, detail TEXT NOT NULL,
        record_version BIGINT NOT NULL, prev_hash TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL DEFAULT '')",
    "ALTER TABLE audit ADD COLUMN IF NOT EXISTS prev_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN IF NOT EXISTS hash TEXT NOT NULL DEFAULT ''",
    "CREATE OR REPLACE FUNCTION fedsynth_audit_append_only() RETURNS trigger AS $body$
        BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END; $body$ LANGUAGE plpgsql",
    "CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION fedsynth_audit_append_only()",
];

/// `SELECT` of every job column, then the rest of the query (a literal, so sqlx takes it as
/// audited SQL).
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "SELECT id, request_id, spec, state, round, tries, reason, weights_key, weights_digest, \
             artifact_key, artifact_bytes, created_ms, updated_ms FROM jobs ",
            $rest
        )
    };
}

/// The job store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the store at `url`: `sqlite://FILE` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(CoordinatorError::Config(format!(
                "database_url '{url}': use sqlite://FILE or postgres://…"
            )));
        };
        let (url, max) = match backend {
            // One connection: SQLite serialises writers anyway, and this never sees BUSY.
            Backend::Sqlite if url.contains('?') => (url.to_string(), 1),
            Backend::Sqlite => (format!("{url}?mode=rwc"), 1),
            Backend::Postgres => (url.to_string(), 8),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // The store holds tokens' effects, the workers' certificate bindings and the audit
            // trail: readable and writable by the coordinator's user only.
            #[cfg(unix)]
            if let Some(file) = url
                .strip_prefix("sqlite://")
                .map(|rest| rest.split('?').next().unwrap_or(rest))
                .filter(|f| !f.is_empty() && !f.starts_with(':'))
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(file)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&pool)
                .await?;
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&pool)
                .await?;
        }
        let specific = match backend {
            Backend::Sqlite => SQLITE_DDL,
            Backend::Postgres => POSTGRES_DDL,
        };
        for ddl in COMMON_DDL.iter().chain(specific) {
            sqlx::raw_sql(*ddl).execute(&pool).await?;
        }
        if backend == Backend::Sqlite {
            // Stores made before the audit trail was hash-chained: add the columns (SQLite
            // has no ADD COLUMN IF NOT EXISTS; a store that has them answers "duplicate").
            for column in ["prev_hash", "hash"] {
                let ddl = format!("ALTER TABLE audit ADD COLUMN {column} TEXT NOT NULL DEFAULT ''");
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&pool).await
                    && !e.to_string().contains("duplicate column")
                {
                    return Err(e.into());
                }
            }
        }
        Ok(Self { pool, backend })
    }

    fn job_from_row(row: &sqlx::any::AnyRow) -> Result<JobRecord> {
        let spec_text: String = row.try_get("spec")?;
        let spec = JobSpec::from_toml(&spec_text).map_err(CoordinatorError::Corrupt)?;
        Ok(JobRecord {
            id: row.try_get("id")?,
            request_id: row.try_get("request_id")?,
            spec,
            state: row.try_get::<String, _>("state")?.parse()?,
            round: u32::try_from(row.try_get::<i64, _>("round")?)
                .map_err(|_| CoordinatorError::Corrupt("round".into()))?,
            tries: u32::try_from(row.try_get::<i64, _>("tries")?)
                .map_err(|_| CoordinatorError::Corrupt("tries".into()))?,
            reason: row.try_get("reason")?,
            weights_key: row.try_get("weights_key")?,
            weights_digest: row.try_get("weights_digest")?,
            artifact_key: row.try_get("artifact_key")?,
            artifact_bytes: row.try_get::<i64, _>("artifact_bytes")?.max(0) as u64,
            created_ms: row.try_get("created_ms")?,
            updated_ms: row.try_get("updated_ms")?,
        })
    }

    /// Persists a job, or returns the job already stored under `request_id` (`false`).
    pub async fn submit(
        &self,
        id: &str,
        request_id: &str,
        spec: &JobSpec,
    ) -> Result<(JobRecord, bool)> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, request_id, federation, spec, state, round, tries, reason,
                weights_key, weights_digest, artifact_key, artifact_bytes, created_ms, updated_ms,
                record_version)
             VALUES ($1, $2, $3, $4, 'enrolling', 0, 0, '', '', '', '', 0, $5, $5, $6)
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(id)
        .bind(request_id)
        .bind(&spec.federation)
        .bind(spec.to_toml())
        .bind(now)
        .bind(RECORD_VERSION)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(select_jobs!("WHERE request_id = $1"))
            .bind(request_id)
            .fetch_one(&self.pool)
            .await?;
        Ok((Self::job_from_row(&row)?, inserted))
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(select_jobs!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::job_from_row).transpose()
    }

    /// Every job, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!("ORDER BY created_ms DESC, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Jobs that still have work to do, oldest first.
    pub async fn active_jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!(
            "WHERE state IN ('enrolling', 'running', 'sampling') ORDER BY created_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Moves a job to `state` with `reason`.
    pub async fn set_state(&self, id: &str, state: JobState, reason: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET state = $1, reason = $2, updated_ms = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(reason)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a job's first global weights (secure aggregation: the model the job's seed
    /// gives, uploaded by a worker before round 0). Only once: false if the job has weights.
    pub async fn set_initial_weights(&self, id: &str, key: &str, digest: &str) -> Result<bool> {
        let moved = sqlx::query(
            "UPDATE jobs SET weights_key = $1, weights_digest = $2, updated_ms = $3
             WHERE id = $4 AND round = 0 AND weights_key = '' AND state = 'running'",
        )
        .bind(key)
        .bind(digest)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved == 1)
    }

    /// Records that the current round failed once more.
    pub async fn set_tries(&self, id: &str, tries: u32) -> Result<()> {
        sqlx::query("UPDATE jobs SET tries = $1, updated_ms = $2 WHERE id = $3")
            .bind(i64::from(tries))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a published statistics wave (the summed words' little-endian bytes, as hex;
    /// the union, JSON). A wave stored already stays as it was (`false`).
    pub async fn add_statistics_wave(
        &self,
        job: &str,
        wave: u32,
        sums: &[u8],
        released: &[String],
    ) -> Result<bool> {
        let names = serde_json::to_string(released)
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        let n = sqlx::query(
            "INSERT INTO statistics (job_id, wave, sums, released, at_ms, record_version)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, wave) DO NOTHING",
        )
        .bind(job)
        .bind(i64::from(wave))
        .bind(hex::encode(sums))
        .bind(names)
        .bind(now_ms())
        .bind(RECORD_VERSION)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A job's published statistics waves, in order: (summed words' bytes, union).
    pub async fn statistics(&self, job: &str) -> Result<Vec<(Vec<u8>, Vec<String>)>> {
        let rows = sqlx::query(
            "SELECT wave, sums, released FROM statistics WHERE job_id = $1 ORDER BY wave",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let wave: i64 = row.try_get("wave")?;
            let bytes = hex::decode(row.try_get::<String, _>("sums")?).map_err(|_| {
                CoordinatorError::Corrupt(format!("job {job}: statistics wave {wave}"))
            })?;
            let names: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("released")?)
                .map_err(|_| {
                CoordinatorError::Corrupt(format!("job {job}: statistics wave {wave}"))
            })?;
            if wave != i as i64 || bytes.len() % 4 != 0 {
                return Err(CoordinatorError::Corrupt(format!(
                    "job {job}: statistics wave {wave} out of order or cut"
                )));
            }
            out.push((bytes, names));
        }
        Ok(out)
    }

    /// Stores the schema a job's holders completed (the first one stands).
    pub async fn set_schema(&self, job: &str, schema: &str, parameters: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schemas (job_id, schema, parameters, at_ms, record_version)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job)
        .bind(schema)
        .bind(parameters as i64)
        .bind(now_ms())
        .bind(RECORD_VERSION)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The schema a job's holders completed, with its model's size.
    pub async fn schema(&self, job: &str) -> Result<Option<(String, u64)>> {
        let row = sqlx::query("SELECT schema, parameters FROM schemas WHERE job_id = $1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((
                row.try_get("schema")?,
                row.try_get::<i64, _>("parameters")?.max(0) as u64,
            ))),
        }
    }

    /// Records a worker's answer to an offer; a second answer is ignored (first one stands).
    pub async fn answer(
        &self,
        job: &str,
        worker: &str,
        accepted: bool,
        reason: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO participants (job_id, worker_id, accepted, reason, at_ms, record_version)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, worker_id) DO NOTHING",
        )
        .bind(job)
        .bind(worker)
        .bind(i64::from(accepted))
        .bind(reason)
        .bind(now_ms())
        .bind(RECORD_VERSION)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Every answer to a job's offer.
    pub async fn participants(&self, job: &str) -> Result<Vec<Participant>> {
        let rows = sqlx::query(
            "SELECT worker_id, accepted, reason FROM participants WHERE job_id = $1 ORDER BY at_ms, worker_id",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Participant {
                    worker_id: r.try_get("worker_id")?,
                    accepted: r.try_get::<i64, _>("accepted")? != 0,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Commits round `round` of `job` (weights already stored under `key`), atomically and
    /// only if the job is still at that round; returns whether this call committed it.
    pub async fn commit_round(
        &self,
        job: &str,
        round: u32,
        workers: &[String],
        weight: f64,
        key: &str,
        digest: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let moved = sqlx::query(
            "UPDATE jobs SET round = $1, tries = 0, weights_key = $2, weights_digest = $3, updated_ms = $4
             WHERE id = $5 AND round = $6 AND state = 'running'",
        )
        .bind(i64::from(round) + 1)
        .bind(key)
        .bind(digest)
        .bind(now)
        .bind(job)
        .bind(i64::from(round))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO rounds (job_id, round, workers, weight, weights_digest, committed_ms, record_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job)
        .bind(i64::from(round))
        .bind(workers.join(","))
        .bind(weight)
        .bind(digest)
        .bind(now)
        .bind(RECORD_VERSION)
        .execute(&mut *tx)
        .await?;
        insert_audit(
            &mut *tx,
            self.backend,
            "coordinator",
            "round",
            job,
            &format!(
                "round {round} committed with {} worker(s): {}",
                workers.len(),
                workers.join(", ")
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many rounds of `job` are committed (from the round history).
    pub async fn committed_rounds(&self, job: &str) -> Result<Vec<(u32, String)>> {
        let rows =
            sqlx::query("SELECT round, workers FROM rounds WHERE job_id = $1 ORDER BY round")
                .bind(job)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("round")? as u32, r.try_get("workers")?)))
            .collect()
    }

    /// Stores the artifact's place and marks the job done.
    pub async fn finish(&self, job: &str, key: &str, bytes: u64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'done', reason = '', artifact_key = $1, artifact_bytes = $2, updated_ms = $3
             WHERE id = $4 AND state = 'sampling'",
        )
        .bind(key)
        .bind(bytes as i64)
        .bind(now_ms())
        .bind(job)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Enrols a worker, binding its id to its certificate on first sight; a later
    /// registration with another certificate is refused.
    pub async fn register_worker(
        &self,
        id: &str,
        federation: &str,
        cert_digest: &str,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO workers (id, federation, cert_digest, registered_ms, record_version)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(federation)
        .bind(cert_digest)
        .bind(now_ms())
        .bind(RECORD_VERSION)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let row = sqlx::query("SELECT federation, cert_digest FROM workers WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
            let fed: String = row.try_get("federation")?;
            let digest: String = row.try_get("cert_digest")?;
            if fed != federation || digest != cert_digest {
                return Err(CoordinatorError::PermissionDenied(format!(
                    "worker '{id}' is enrolled with another certificate"
                )));
            }
        }
        Ok(inserted)
    }

    /// The certificate digest a worker enrolled with.
    pub async fn worker_cert(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cert_digest FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("cert_digest").map_err(Into::into))
            .transpose()
    }

    /// Appends to the audit trail (fields bounded, see [`bounded`]), chained to the entry
    /// before it.
    pub async fn audit(&self, actor: &str, action: &str, job: &str, detail: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut *tx, self.backend, actor, action, job, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The audit trail (of one job, or all), oldest first: at most `limit` entries after
    /// sequence number `after_seq`.
    pub async fn audit_trail(
        &self,
        job: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let limit = i64::from(limit.max(1));
        let rows = match job {
            Some(j) => {
                sqlx::query("SELECT seq, at_ms, actor, action, job_id, detail, prev_hash, hash FROM audit WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                    .bind(j)
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT seq, at_ms, actor, action, job_id, detail, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    job_id: r.try_get("job_id")?,
                    detail: r.try_get("detail")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Runs raw SQL (tests check that the audit trail refuses changes).
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Text a peer may have chosen, made safe to store and show: control characters replaced,
/// at most `max` characters (a marked cut beyond). A refused call must not be able to write
/// megabytes into the audit trail or forge lines in a terminal.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push_str("…[cut]");
    }
    out
}

async fn insert_audit(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    actor: &str,
    action: &str,
    job: &str,
    detail: &str,
) -> Result<()> {
    let (actor, action, job, detail) = (
        bounded(actor, 160),
        bounded(action, 32),
        bounded(job, 128),
        bounded(detail, 1000),
    );
    if backend == Backend::Postgres {
        // One appender at a time across the pool, so the chain never forks (SQLite's one
        // connection serialises writers already). Held until the transaction ends.
        sqlx::query("SELECT pg_advisory_xact_lock(7301)")
            .execute(&mut *conn)
            .await?;
    }
    let prev: Option<String> = sqlx::query("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("hash"))
        .transpose()?;
    let prev = prev.unwrap_or_else(|| fedsynth_proto::AUDIT_GENESIS.to_string());
    let at = now_ms();
    let hash = fedsynth_proto::audit_hash(&prev, at, &actor, &action, &job, &detail);
    sqlx::query(
        "INSERT INTO audit (at_ms, actor, action, job_id, detail, record_version, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(job)
    .bind(detail)
    .bind(RECORD_VERSION)
    .bind(prev)
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}
