//! The job spec: what a job owner submits (`fedsynth submit JOB.toml`), stored by the
//! coordinator and offered to the workers of the job's federation. Part of the contract, so
//! it lives beside the wire types. The schema and the recipients' public keys travel inlined.

use serde::{Deserialize, Serialize};

/// Version tag of stored and transmitted specs.
pub const SPEC_VERSION: u32 = 1;

/// The generator and its settings, as the job file gives them: a name with that model's
/// defaults (`model = "tvae"`), or a table with `kind` and the model's own settings
/// (`model = { kind = "tvae", hidden = 256, kl_weight = 0.1 }`). The coordinator stores and
/// relays it without reading more than `kind`; the holders' `synth` reads and validates the
/// settings (`fedsynth_synth::models::ModelSettings`), and `fedsynth submit` checks them
/// before sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelSpec {
    /// A model's name, with its default settings.
    Name(String),
    /// `kind` and settings.
    Table(toml::Table),
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self::Name("tvae".into())
    }
}

impl ModelSpec {
    /// The model's kind (`tvae`, `ctgan`), if the spec names one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Name(n) => Some(n),
            Self::Table(t) => t.get("kind").and_then(toml::Value::as_str),
        }
    }

    /// The spec as a table of `kind` and settings (a name alone gives `{ kind = NAME }`).
    pub fn to_table(&self) -> toml::Table {
        match self {
            Self::Name(n) => {
                let mut t = toml::Table::new();
                t.insert("kind".into(), toml::Value::String(n.clone()));
                t
            }
            Self::Table(t) => t.clone(),
        }
    }

    /// The most settings a model table may carry (it is relayed, never interpreted, by the
    /// coordinator: it must stay small).
    pub const MAX_SETTINGS: usize = 32;

    /// What the coordinator checks: a kind made of lowercase letters and digits, and a
    /// small flat table of numbers, booleans and short strings.
    pub fn validate(&self) -> Result<(), String> {
        let kind = self.kind().ok_or_else(|| {
            "model: give its kind (model = \"tvae\" or { kind = \"tvae\", ... })".to_string()
        })?;
        if kind.is_empty()
            || kind.len() > 32
            || !kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            // A value is echoed escaped: the message stays one line whatever it holds.
            return Err(format!(
                "model: '{}' is not a model's name",
                kind.escape_debug()
            ));
        }
        if let Self::Table(t) = self {
            if t.len() > Self::MAX_SETTINGS {
                return Err(format!(
                    "model: at most {} settings, not {}",
                    Self::MAX_SETTINGS,
                    t.len()
                ));
            }
            for (k, v) in t {
                let flat = match v {
                    toml::Value::String(s) => s.len() <= 64,
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        true
                    }
                    _ => false,
                };
                if k.len() > 64 || !flat {
                    return Err(format!(
                        "model: setting '{}' must be a number, a boolean or a short string",
                        k.escape_debug()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How updates are aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecureAggregation {
    /// Pairwise masks (keys agreed once per job) and distributed noise: the coordinator sees
    /// only the noisy sum of the holders' clipped gradient sums, which carries the DP noise
    /// once. Each round is one distributed DP-SGD step; a round someone drops out of is tried
    /// again with the survivors and fresh updates.
    #[default]
    Secagg,
    /// Additive homomorphic encryption (tfhe): not available yet.
    He,
    /// No protection of individual updates: the coordinator sees every holder's DP weights.
    /// For trusted set-ups only.
    None,
}

impl SecureAggregation {
    /// The name in job files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secagg => "secagg",
            Self::He => "he",
            Self::None => "none",
        }
    }
}

/// Where the optimiser of a federated job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServerOptimizer {
    /// FedAdam: each holder takes `local_steps` plain DP-SGD steps at `local_learning_rate`
    /// from the global weights; the coordinator treats the weighted average of the holders'
    /// moves as one pseudo-gradient and takes an Adam step at `learning_rate`. Adam's moments
    /// then average the DP noise of every holder across rounds, as in single-party training.
    /// The first round, which has no global weights yet, commits the plain average.
    #[default]
    Adam,
    /// FedAvg: each holder runs Adam locally at `learning_rate` (its moments kept between
    /// rounds in memory); the coordinator averages the holders' weights.
    Average,
}

/// A federated synthesis job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Spec format version (1).
    #[serde(default = "spec_version")]
    pub version: u32,
    /// A name for people.
    pub name: String,
    /// The federation whose workers train the job.
    pub federation: String,
    /// Generator model and its settings (see [`ModelSpec`]); `tvae` by default.
    #[serde(default)]
    pub model: ModelSpec,
    /// The table schema (TOML text). Complete (every column with public bounds/edges or
    /// categories): all holders share one encoder without spending budget on it. Partial
    /// (names and kinds, any facts left out): under secure aggregation the holders complete
    /// it from their DP statistics, summed in waves before training (`parameters` = 0).
    pub schema_toml: String,
    /// Share of each holder's ε spent on the statistics that complete a partial schema
    /// (unset: 0.1; ignored with a complete schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics_share: Option<f64>,
    /// Per-holder ε for the whole job (row count release + every DP-SGD step).
    pub epsilon: f64,
    /// Per-holder δ.
    pub delta: f64,
    /// Federated rounds.
    pub rounds: u32,
    /// Local DP-SGD steps per round.
    pub local_steps: u32,
    /// Expected local batch size (Poisson sampling rate = batch / local rows).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Adam learning rate: the coordinator's (`server_optimizer = "adam"`) or the holders'
    /// (`"average"`).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Where the optimiser runs (see [`ServerOptimizer`]).
    #[serde(default)]
    pub server_optimizer: ServerOptimizer,
    /// Learning rate of the holders' plain SGD steps under `server_optimizer = "adam"`. With
    /// one local step per round its value hardly matters (Adam is invariant to the scale of
    /// its gradients); with several, lower it.
    #[serde(default = "default_local_lr")]
    pub local_learning_rate: f64,
    /// Per-example clipping norm.
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Aggregation protection (`secagg`, the default, or `none`).
    #[serde(default)]
    pub secure_aggregation: SecureAggregation,
    /// Secure aggregation: how many participants of a round may drop out or collude with the
    /// coordinator while every completed sum still carries each holder's full noise (each
    /// adds 1/(|S| − t) of it). Must stay below `min_workers`.
    #[serde(default)]
    pub tolerated_workers: u32,
    /// Secure aggregation: attempts beyond one per round that each holder charges in advance
    /// (a void attempt, from a dropout, costs every survivor one DP-SGD step). Unset: 5% of
    /// the rounds plus `round_tries`. A holder whose spare attempts are spent stops sending,
    /// and the job fails rather than overspend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare_attempts: Option<u32>,
    /// Fewest workers a round may commit with.
    pub min_workers: u32,
    /// Seconds a round waits for uploads.
    #[serde(default = "default_deadline")]
    pub round_deadline_s: u64,
    /// Seconds the coordinator waits for workers to answer the offer.
    #[serde(default = "default_enrol")]
    pub enrol_deadline_s: u64,
    /// Tries of one round before the job fails.
    #[serde(default = "default_tries")]
    pub round_tries: u32,
    /// Rows of synthetic output (0 with a partial schema: the holders' summed DP row counts).
    #[serde(default)]
    pub rows: u64,
    /// Output format: `csv` or `parquet`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Recipients' public keys (the text of `NAME.pub`); the artifact is encrypted for them.
    pub recipients: Vec<String>,
    /// Seed of the initial weights (every worker starts from the same model).
    #[serde(default)]
    pub init_seed: u64,
    /// Number of weights and biases of the model (`fedsynth submit` computes it from the
    /// schema). It fixes the size of every update: the coordinator refuses any other, and a
    /// worker refuses a job whose schema gives another.
    #[serde(default)]
    pub parameters: u64,
    /// Largest weight (noisy row count) one worker's update may carry in the average; a
    /// claim above it is refused, so no worker can claim the whole average.
    #[serde(default = "default_max_weight")]
    pub max_worker_weight: f64,
    /// Largest L2 distance an update may move the global weights (rounds after the first):
    /// a longer move is scaled back to it by the coordinator before it is averaged, so no
    /// worker can drag the model far in one round. Unset: no bound beyond the ±1e4 on values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_update_norm: Option<f64>,
}

fn spec_version() -> u32 {
    SPEC_VERSION
}
fn default_batch() -> u32 {
    500
}
fn default_lr() -> f64 {
    5e-3
}
fn default_local_lr() -> f64 {
    1.0
}
fn default_clip() -> f64 {
    1.0
}
fn default_deadline() -> u64 {
    120
}
fn default_enrol() -> u64 {
    30
}
fn default_tries() -> u32 {
    3
}
fn default_max_weight() -> f64 {
    1e7
}
fn default_format() -> String {
    "csv".into()
}

impl JobSpec {
    /// Whether the holders complete the schema from their statistics before training.
    pub fn needs_statistics(&self) -> bool {
        self.parameters == 0
    }

    /// The share of ε the statistics of a partial schema take.
    pub fn statistics_share(&self) -> f64 {
        self.statistics_share.unwrap_or(0.1)
    }

    /// Attempts each holder pays for in advance under secure aggregation: one per round
    /// and the spare ones.
    pub fn charged_attempts(&self) -> u64 {
        let spare = self
            .spare_attempts
            .unwrap_or_else(|| self.rounds.div_ceil(20) + self.round_tries);
        u64::from(self.rounds) + u64::from(spare)
    }

    /// Parses and validates a spec.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            // One line: the offending line of the file, then what is wrong with it.
            let place = e
                .span()
                .and_then(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count();
                    text.lines()
                        .nth(line)
                        .map(|l| format!("line {}: `{}`: ", line + 1, l.trim()))
                })
                .unwrap_or_default();
            format!(
                "job spec: {place}{}",
                e.message().lines().next().unwrap_or("invalid TOML")
            )
        })?;
        Self::from_table(table)
    }

    /// Reads and validates a spec from a parsed TOML table (a job file after the CLI has
    /// inlined its files). A wrong value is named by its key: serde names the value, not
    /// the key, so the key is the one whose removal changes the complaint (a missing or
    /// unknown field is named already).
    pub fn from_table(table: toml::Table) -> Result<Self, String> {
        let parse = |t: toml::Table| toml::Value::Table(t).try_into::<Self>();
        let spec = parse(table.clone()).map_err(|e| {
            let message = e.message().lines().next().unwrap_or("invalid").to_string();
            let key = table
                .keys()
                .filter(|_| !message.contains("field `"))
                .find(|k| {
                    let mut t = table.clone();
                    t.remove(*k);
                    parse(t)
                        .err()
                        .is_none_or(|e| e.message().lines().next() != Some(message.as_str()))
                })
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            format!("job spec: {key}{message}")
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("job spec: {m}"));
        if self.version != SPEC_VERSION {
            return fail(format!(
                "version {} is not supported (use {SPEC_VERSION})",
                self.version
            ));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return fail("name must be 1-200 characters".into());
        }
        crate::FederationName::new(self.federation.clone())
            .map_err(|e| format!("job spec: federation: {e}"))?;
        self.model
            .validate()
            .map_err(|m| format!("job spec: {m}"))?;
        if self.schema_toml.trim().is_empty() || self.schema_toml.len() > 1 << 20 {
            return fail("schema is empty or larger than 1 MiB".into());
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return fail("epsilon must be a positive number".into());
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return fail("delta must be in (0, 1)".into());
        }
        if self.rounds == 0 || self.rounds > 100_000 {
            return fail("rounds must be 1-100000".into());
        }
        if self.local_steps == 0 || self.local_steps > 100_000 {
            return fail("local_steps must be 1-100000".into());
        }
        if self.batch_size == 0 {
            return fail("batch_size must be positive".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return fail("learning_rate must be positive".into());
        }
        if !(self.local_learning_rate.is_finite()
            && self.local_learning_rate > 0.0
            && self.local_learning_rate <= 100.0)
        {
            return fail("local_learning_rate must be in (0, 100]".into());
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return fail("clip_norm must be positive".into());
        }
        match self.secure_aggregation {
            SecureAggregation::He => {
                return fail(
                    "secure_aggregation = \"he\" is not available yet: use \"secagg\" (the default)"
                        .into(),
                );
            }
            SecureAggregation::Secagg => {
                if self.local_steps != 1 || self.server_optimizer != ServerOptimizer::Adam {
                    return fail(
                        "secure_aggregation = \"secagg\" runs one distributed DP-SGD step per round: set local_steps = 1 and server_optimizer = \"adam\" (or secure_aggregation = \"none\")"
                            .into(),
                    );
                }
                if self.max_update_norm.is_some() {
                    return fail(
                        "max_update_norm: under secure aggregation the coordinator cannot measure a holder's update (each holder's clipping bounds it)"
                            .into(),
                    );
                }
                if self.tolerated_workers >= self.min_workers {
                    return fail(format!(
                        "tolerated_workers ({}) must be below min_workers ({})",
                        self.tolerated_workers, self.min_workers
                    ));
                }
            }
            SecureAggregation::None => {}
        }
        if self.spare_attempts.is_some_and(|s| s > 1_000_000) {
            return fail("spare_attempts must be at most 1000000".into());
        }
        if self.min_workers == 0 || self.min_workers > 10_000 {
            return fail("min_workers must be 1-10000".into());
        }
        if self.round_deadline_s == 0 || self.round_deadline_s > 86_400 {
            return fail("round_deadline_s must be 1-86400".into());
        }
        if self.enrol_deadline_s == 0 || self.enrol_deadline_s > 86_400 {
            return fail("enrol_deadline_s must be 1-86400".into());
        }
        if self.round_tries == 0 || self.round_tries > 100 {
            return fail("round_tries must be 1-100".into());
        }
        if self.rows > 100_000_000 || (self.rows == 0 && self.parameters != 0) {
            return fail(
                "rows must be 1-100000000 (0 only with a partial schema: the holders' DP row counts)"
                    .into(),
            );
        }
        if self
            .statistics_share
            .is_some_and(|s| !(s.is_finite() && s > 0.0 && s < 1.0))
        {
            return fail("statistics_share must be in (0, 1)".into());
        }
        if self.format != "csv" && self.format != "parquet" {
            return fail(format!(
                "format '{}': use csv or parquet",
                self.format.escape_debug()
            ));
        }
        if self.recipients.is_empty() || self.recipients.len() > 64 {
            return fail("name 1-64 recipients: the artifact is always encrypted".into());
        }
        if self.parameters > crate::MAX_PARAMETERS {
            return fail(format!(
                "parameters must be at most {} (fedsynth submit computes it from the schema)",
                crate::MAX_PARAMETERS
            ));
        }
        if self.parameters == 0 && self.secure_aggregation != SecureAggregation::Secagg {
            return fail(
                "a partial schema (parameters = 0) is completed from the holders' statistics under secure aggregation only: set secure_aggregation = \"secagg\" or give a complete schema"
                    .into(),
            );
        }
        if self
            .max_update_norm
            .is_some_and(|b| !(b.is_finite() && b > 0.0))
        {
            return fail("max_update_norm must be a positive number".into());
        }
        if !(self.max_worker_weight.is_finite()
            && self.max_worker_weight >= 1.0
            && self.max_worker_weight <= 1e12)
        {
            return fail("max_worker_weight must be in [1, 1e12]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            version: 1,
            name: "demo".into(),
            federation: "f".into(),
            model: ModelSpec::default(),
            schema_toml: "version = 1\ncolumns = []\n".into(),
            statistics_share: None,
            epsilon: 3.0,
            delta: 1e-6,
            rounds: 3,
            local_steps: 5,
            batch_size: 100,
            learning_rate: 5e-3,
            server_optimizer: ServerOptimizer::Adam,
            local_learning_rate: 1.0,
            clip_norm: 1.0,
            secure_aggregation: SecureAggregation::None,
            tolerated_workers: 0,
            spare_attempts: None,
            min_workers: 2,
            round_deadline_s: 10,
            enrol_deadline_s: 10,
            round_tries: 3,
            rows: 100,
            format: "csv".into(),
            recipients: vec!["k".into()],
            init_seed: 1,
            parameters: 1000,
            max_worker_weight: 1e7,
            max_update_norm: None,
        }
    }

    #[test]
    fn a_model_table_round_trips_and_is_checked_without_being_understood() {
        let mut s = spec();
        let mut t = toml::Table::new();
        t.insert("kind".into(), "tvae".into());
        t.insert("hidden".into(), toml::Value::Integer(256));
        t.insert("kl_weight".into(), toml::Value::Float(0.1));
        s.model = ModelSpec::Table(t);
        s.validate().unwrap();
        assert_eq!(JobSpec::from_toml(&s.to_toml()).unwrap(), s);
        assert_eq!(s.model.kind(), Some("tvae"));
        // A name alone is a table of its kind.
        assert_eq!(
            ModelSpec::Name("ctgan".into()).to_table().get("kind"),
            Some(&toml::Value::String("ctgan".into()))
        );
        // The coordinator checks the shape only: a kind, a small flat table.
        let mut nested = toml::Table::new();
        nested.insert("kind".into(), "tvae".into());
        nested.insert("layers".into(), toml::Value::Array(vec![]));
        for (model, needle) in [
            (ModelSpec::Table(toml::Table::new()), "kind"),
            (ModelSpec::Name("../x".into()), "not a model's name"),
            (ModelSpec::Table(nested), "layers"),
        ] {
            s.model = model;
            let e = s.validate().unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn specs_round_trip_and_bad_fields_are_named() {
        let s = spec();
        assert_eq!(JobSpec::from_toml(&s.to_toml()).unwrap(), s);
        let mut bad = spec();
        bad.epsilon = f64::NAN;
        assert!(bad.validate().unwrap_err().contains("epsilon"));
        let mut bad = spec();
        bad.local_learning_rate = 0.0;
        assert!(bad.validate().unwrap_err().contains("local_learning_rate"));
        // Older job files (no optimiser fields) get FedAdam with the default local rate.
        let old = s
            .to_toml()
            .replace("server_optimizer = \"adam\"\n", "")
            .replace("local_learning_rate = 1.0\n", "");
        assert_ne!(old, s.to_toml());
        assert_eq!(JobSpec::from_toml(&old).unwrap(), s);
        let avg = s.to_toml().replace("\"adam\"", "\"average\"");
        assert_eq!(
            JobSpec::from_toml(&avg).unwrap().server_optimizer,
            ServerOptimizer::Average
        );
        assert!(
            JobSpec::from_toml(&s.to_toml().replace("\"adam\"", "\"sgd\""))
                .unwrap_err()
                .contains("server_optimizer")
        );
        let mut bad = spec();
        bad.recipients.clear();
        assert!(bad.validate().unwrap_err().contains("recipients"));
        assert!(
            JobSpec::from_toml("name = 1")
                .unwrap_err()
                .starts_with("job spec:")
        );
    }
}
