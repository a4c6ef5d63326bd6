//! The data holder's persistent privacy budget ledger.
//!
//! One SQLite file (WAL mode, full sync) holds, per (holder, dataset), a cap (ε, δ) and an
//! append-only list of spends, each a [`DpEvent`] with its mechanism and parameters. The ε
//! spent is recomputed by composing every event with the PLD accountant, never by adding
//! ε's. A spend is checked and recorded in one `BEGIN IMMEDIATE` transaction, so concurrent
//! spenders (threads or processes) are serialised by SQLite's write lock and can never
//! jointly overspend; a process killed mid-spend leaves the entry either committed or
//! absent. Callers release a DP result only after [`Ledger::try_spend`] has returned `Ok`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::accountant::AccountantKind;
use crate::error::{PrivacyError, Result};
use crate::event::DpEvent;
use crate::params::{Delta, Epsilon};

/// The holder under which `fedsynth synth` and `fedsynth worker` record every spend on a
/// host: one budget per dataset, whichever command spends it.
pub const HOST: &str = "host";

/// The host's default ledger, shared by `fedsynth synth` and `fedsynth worker`:
/// `$XDG_DATA_HOME/fedsynth/ledger.db`, else `~/.local/share/fedsynth/ledger.db`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("fedsynth").join("ledger.db")
}

/// A dataset's name in the ledger: `sha256:` and the hex SHA-256 of the file's bytes. The
/// budget follows the data, not its path: a copy, a renamed file or another directory is
/// the same dataset, and the same file offered to `synth` and to a worker draws on one
/// budget.
pub fn dataset_key(path: &Path) -> std::io::Result<String> {
    Ok(format!("sha256:{}", crate::signature::file_digest(path)?))
}

/// Version tag written with every stored record.
pub const RECORD_VERSION: i64 = 1;
const SCHEMA_VERSION: &str = "1";

/// A holder's cap: total ε allowed at a fixed δ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Total ε allowed.
    pub epsilon: Epsilon,
    /// The δ at which ε is measured.
    pub delta: Delta,
}

/// One recorded spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Row id in the ledger (increasing).
    pub id: i64,
    /// The mechanism and its parameters.
    pub event: DpEvent,
    /// Free text: which job, which step, which statistic.
    pub note: String,
    /// Composed ε of all spends up to and including this one, at the cap's δ.
    pub epsilon_after: f64,
    /// When it was recorded (UTC, RFC 3339).
    pub created_at: String,
}

/// What the ledger says about one (holder, dataset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The cap.
    pub cap: Budget,
    /// Composed ε of all spends, at the cap's δ.
    pub spent: f64,
    /// Every spend, oldest first.
    pub spends: Vec<Spend>,
}

impl Statement {
    /// ε still available (never negative).
    pub fn remaining(&self) -> f64 {
        (self.cap.epsilon.get() - self.spent).max(0.0)
    }
}

/// A handle on a ledger file. Cheap to open; open one per thread or process.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    accountant: AccountantKind,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| PrivacyError::LedgerCorrupt {
                path: path.display().to_string(),
                message: format!("cannot create its directory: {e}"),
            })?;
        }
        check_permissions(&path)?;
        let conn = Connection::open(&path).map_err(|e| ledger_err(&path, e))?;
        restrict_permissions(&path)?;
        let ledger = Self {
            conn,
            path,
            accountant: AccountantKind::Pld,
        };
        ledger.init()?;
        Ok(ledger)
    }

    /// The file this ledger lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> PrivacyError {
        ledger_err(&self.path, e)
    }

    fn init(&self) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(60))
            .map_err(|e| self.err(e))?;
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PrivacyError::LedgerCorrupt {
                path: self.path.display().to_string(),
                message: format!("could not switch to WAL mode (got {mode})"),
            });
        }
        c.execute_batch(
            "PRAGMA synchronous=FULL;
             BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
             CREATE TABLE IF NOT EXISTS caps (
                 holder TEXT NOT NULL, dataset TEXT NOT NULL,
                 epsilon REAL NOT NULL, delta REAL NOT NULL,
                 record_version INTEGER NOT NULL,
                 PRIMARY KEY (holder, dataset));
             CREATE TABLE IF NOT EXISTS spends (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 holder TEXT NOT NULL, dataset TEXT NOT NULL,
                 event TEXT NOT NULL, note TEXT NOT NULL,
                 epsilon_after REAL NOT NULL,
                 created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                 record_version INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS spends_by_dataset ON spends (holder, dataset, id);
             COMMIT;",
        )
        .map_err(|e| self.err(e))?;
        let version: String = c
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if version != SCHEMA_VERSION {
            return Err(PrivacyError::LedgerCorrupt {
                path: self.path.display().to_string(),
                message: format!(
                    "schema version {version} is not supported (this build reads {SCHEMA_VERSION})"
                ),
            });
        }
        Ok(())
    }

    /// Sets the cap of (holder, dataset). A cap may be lowered freely; raising it is the
    /// holder's decision and is allowed, but a cap below what is already spent only stops
    /// further spends.
    pub fn set_cap(&self, holder: &str, dataset: &str, cap: Budget) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO caps (holder, dataset, epsilon, delta, record_version) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (holder, dataset) DO UPDATE SET epsilon = excluded.epsilon, delta = excluded.delta",
                params![holder, dataset, cap.epsilon.get(), cap.delta.get(), RECORD_VERSION],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The cap of (holder, dataset), if one is set.
    pub fn cap(&self, holder: &str, dataset: &str) -> Result<Option<Budget>> {
        read_cap(&self.conn, holder, dataset).map_err(|e| self.wrap(e))
    }

    fn wrap(&self, e: ReadError) -> PrivacyError {
        match e {
            ReadError::Sql(e) => self.err(e),
            ReadError::Corrupt(message) => PrivacyError::LedgerCorrupt {
                path: self.path.display().to_string(),
                message,
            },
        }
    }

    /// Whether `events` would fit within the cap of (holder, dataset) composed with what is
    /// spent, without recording anything: a gate before a spend in several parts, so that a
    /// job that cannot fit is refused before its first part is charged.
    pub fn would_fit(&self, holder: &str, dataset: &str, events: &[DpEvent]) -> Result<bool> {
        let cap = self
            .cap(holder, dataset)?
            .ok_or_else(|| no_cap(holder, dataset))?;
        let spends = read_spends(&self.conn, holder, dataset).map_err(|e| self.wrap(e))?;
        let all: Vec<DpEvent> = spends
            .into_iter()
            .map(|s| s.event)
            .chain(events.iter().cloned())
            .collect();
        Ok(self.accountant.epsilon(&all, cap.delta)? <= cap.epsilon.get())
    }

    /// Cap, composed ε and every spend of (holder, dataset).
    pub fn statement(&self, holder: &str, dataset: &str) -> Result<Statement> {
        let cap = self
            .cap(holder, dataset)?
            .ok_or_else(|| no_cap(holder, dataset))?;
        let spends = read_spends(&self.conn, holder, dataset).map_err(|e| self.wrap(e))?;
        let events: Vec<DpEvent> = spends.iter().map(|s| s.event.clone()).collect();
        let spent = self.accountant.epsilon(&events, cap.delta)?;
        Ok(Statement { cap, spent, spends })
    }

    /// Checks that `event` fits within the cap of (holder, dataset) composed with everything
    /// already spent, and records it, atomically. Refused spends record nothing.
    pub fn try_spend(
        &self,
        holder: &str,
        dataset: &str,
        event: &DpEvent,
        note: &str,
    ) -> Result<Spend> {
        let mut spends = self.try_spend_all(holder, dataset, std::slice::from_ref(event), note)?;
        Ok(spends.remove(0))
    }

    /// Checks and records several events as one spend: all of them or none.
    pub fn try_spend_all(
        &self,
        holder: &str,
        dataset: &str,
        events: &[DpEvent],
        note: &str,
    ) -> Result<Vec<Spend>> {
        self.spend(holder, dataset, events, note, false, || {})
            .map(|(spends, _)| spends)
    }

    /// [`Ledger::try_spend_all`] at most once per `key` (stored as the spends' note): when
    /// (holder, dataset) already has spends under `key`, they are returned with `false` and
    /// nothing new is recorded — checked inside the same transaction, so a job offered again
    /// after a crash or a restart is charged exactly once. The events recorded under `key`
    /// must be exactly `events`: a key offered again with other parameters is refused with
    /// [`PrivacyError::SpendMismatch`], since running them would release what was never
    /// charged.
    pub fn try_spend_once(
        &self,
        holder: &str,
        dataset: &str,
        events: &[DpEvent],
        key: &str,
    ) -> Result<(Vec<Spend>, bool)> {
        self.spend(holder, dataset, events, key, true, || {})
    }

    /// [`Ledger::try_spend_all`] that runs `before_commit` inside the transaction, after the
    /// entries are written and before they commit. For crash tests only: a release must never
    /// happen before the spend has committed.
    #[doc(hidden)]
    pub fn try_spend_then(
        &self,
        holder: &str,
        dataset: &str,
        new: &[DpEvent],
        note: &str,
        before_commit: impl FnOnce(),
    ) -> Result<Vec<Spend>> {
        self.spend(holder, dataset, new, note, false, before_commit)
            .map(|(spends, _)| spends)
    }

    fn spend(
        &self,
        holder: &str,
        dataset: &str,
        new: &[DpEvent],
        note: &str,
        once: bool,
        before_commit: impl FnOnce(),
    ) -> Result<(Vec<Spend>, bool)> {
        if new.is_empty() {
            return Ok((vec![], false));
        }
        for event in new {
            event.validate()?;
        }
        // IMMEDIATE takes the write lock before reading what was spent, so no other
        // spender can commit between our check and our insert.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let cap = read_cap(&tx, holder, dataset)
            .map_err(|e| self.wrap(e))?
            .ok_or_else(|| no_cap(holder, dataset))?;
        let spent = read_spends(&tx, holder, dataset).map_err(|e| self.wrap(e))?;
        if once && spent.iter().any(|s| s.note == note) {
            tx.rollback().map_err(|e| self.err(e))?;
            let earlier: Vec<Spend> = spent.into_iter().filter(|s| s.note == note).collect();
            if !earlier.iter().map(|s| &s.event).eq(new.iter()) {
                let describe = |events: &mut dyn Iterator<Item = &DpEvent>| {
                    events
                        .map(DpEvent::describe)
                        .collect::<Vec<_>>()
                        .join(" + ")
                };
                return Err(PrivacyError::SpendMismatch {
                    key: note.into(),
                    recorded: describe(&mut earlier.iter().map(|s| &s.event)),
                    requested: describe(&mut new.iter()),
                });
            }
            return Ok((earlier, false));
        }
        let mut events: Vec<DpEvent> = spent.into_iter().map(|s| s.event).collect();
        let existing = events.len();
        events.extend(new.iter().cloned());
        let would_be = self.accountant.epsilon(&events, cap.delta)?;
        if would_be > cap.epsilon.get() {
            tx.rollback().map_err(|e| self.err(e))?;
            return Err(PrivacyError::BudgetExceeded {
                holder: holder.into(),
                dataset: dataset.into(),
                requested: new
                    .iter()
                    .map(DpEvent::describe)
                    .collect::<Vec<_>>()
                    .join(" + "),
                would_be,
                cap: cap.epsilon.get(),
                delta: cap.delta.get(),
            });
        }
        let mut recorded = Vec::with_capacity(new.len());
        for (k, event) in new.iter().enumerate() {
            let upto = existing + k + 1;
            let after = if upto == events.len() {
                would_be
            } else {
                self.accountant.epsilon(&events[..upto], cap.delta)?
            };
            let json = serde_json::to_string(event).map_err(|e| PrivacyError::LedgerCorrupt {
                path: self.path.display().to_string(),
                message: format!("cannot encode event: {e}"),
            })?;
            tx.execute(
                "INSERT INTO spends (holder, dataset, event, note, epsilon_after, record_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![holder, dataset, json, note, after, RECORD_VERSION],
            )
            .map_err(|e| self.err(e))?;
            let id = tx.last_insert_rowid();
            let created_at: String = tx
                .query_row("SELECT created_at FROM spends WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .map_err(|e| self.err(e))?;
            recorded.push(Spend {
                id,
                event: event.clone(),
                note: note.into(),
                epsilon_after: after,
                created_at,
            });
        }
        before_commit();
        tx.commit().map_err(|e| self.err(e))?;
        Ok((recorded, true))
    }
}

/// Refuses a ledger file that group or others may write: whoever can write it can erase the
/// record of what was spent, and with it the cap.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => Err(PrivacyError::LedgerCorrupt {
            path: path.display().to_string(),
            message: format!(
                "permissions {:04o} let others write the ledger (chmod 600)",
                meta.permissions().mode() & 0o777
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<()> {
    Ok(())
}

/// A new ledger (and its WAL files, which SQLite creates with the same mode) is readable and
/// writable by its owner only.
#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| PrivacyError::LedgerCorrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            PrivacyError::LedgerCorrupt {
                path: path.display().to_string(),
                message: format!("cannot restrict its permissions: {e}"),
            }
        })?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) -> Result<()> {
    Ok(())
}

fn ledger_err(path: &Path, source: rusqlite::Error) -> PrivacyError {
    PrivacyError::Ledger {
        path: path.display().to_string(),
        source,
    }
}

fn no_cap(holder: &str, dataset: &str) -> PrivacyError {
    crate::error::invalid(
        "budget",
        format!("{holder}/{dataset}"),
        "no cap is set for this holder and dataset",
    )
}

enum ReadError {
    Sql(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

fn read_cap(conn: &Connection, holder: &str, dataset: &str) -> Result<Option<Budget>, ReadError> {
    let row: Option<(f64, f64)> = conn
        .query_row(
            "SELECT epsilon, delta FROM caps WHERE holder = ?1 AND dataset = ?2",
            params![holder, dataset],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(e, d)| {
        Ok(Budget {
            epsilon: Epsilon::new(e).map_err(|err| ReadError::Corrupt(err.to_string()))?,
            delta: Delta::new(d).map_err(|err| ReadError::Corrupt(err.to_string()))?,
        })
    })
    .transpose()
}

fn read_spends(conn: &Connection, holder: &str, dataset: &str) -> Result<Vec<Spend>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event, note, epsilon_after, created_at, record_version FROM spends
         WHERE holder = ?1 AND dataset = ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![holder, dataset], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, f64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json, note, epsilon_after, created_at, version) = row?;
        if version != RECORD_VERSION {
            return Err(ReadError::Corrupt(format!(
                "spend {id} has record version {version}"
            )));
        }
        let event: DpEvent = serde_json::from_str(&json)
            .map_err(|e| ReadError::Corrupt(format!("spend {id} is unreadable: {e}")))?;
        event
            .validate()
            .map_err(|e| ReadError::Corrupt(format!("spend {id}: {e}")))?;
        out.push(Spend {
            id,
            event,
            note,
            epsilon_after,
            created_at,
        });
    }
    Ok(out)
}
