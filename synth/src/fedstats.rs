//! A federated job's statistics: the shared encoder's schema completed from every holder's
//! DP statistics, without pooling rows and without the coordinator seeing any holder's
//! counts.
//!
//! The holders run the very completion `fedsynth synth` runs on one table
//! ([`crate::stats::complete_schema_with`]), with a [`Release`] that answers from the job's
//! **transcript**: the waves of sums (and unions) the coordinator has published so far. A
//! count the transcript does not answer yet becomes a request of the next wave and the
//! column stops there; every column's next request goes into the same wave, so a schema
//! takes as many waves as its deepest column needs (a numeric column without bounds: four,
//! its support, its bins, then its point masses' union and their counts; a category
//! discovery: two, the union of names then their
//! counts; the null patterns after every column's nullability: two more). What every holder
//! reads from a transcript is a function of the transcript and the public partial schema
//! only, so all holders complete the same schema, and the coordinator checks they did.
//!
//! What each request releases, and its privacy argument:
//! - **Type histograms** of the columns whose kind the schema leaves open (a first wave of
//!   its own, see [`complete`]): numeric histograms like the next ones.
//! - **Numeric histograms** (support, bins, null counts): each holder adds a share of Skellam
//!   noise to its integer counts, masks them and uploads; the coordinator learns only the
//!   sum, which carries Skellam noise of standard deviation at least the plan's σ as long as
//!   at most `tolerated_workers` holders drop or collude ([`DpEvent::Skellam`], Δ = 1: a row
//!   is in one bucket). Each holder is charged for the whole plan before its first upload.
//! - **Category discovery**: each holder runs the single-table discovery on its own rows
//!   (Gaussian counts, a threshold that a category of one row passes with probability at
//!   most δ′) and releases only the *set* of names above it — its own DP release, charged to
//!   its ledger. The coordinator publishes the union, so a category held by one holder only
//!   is found when it clears that holder's threshold, and no holder's set is released any
//!   other way. The union's counts are then the sum of each holder's noisy counts from the
//!   same release (names it did not select take their noisy value from the same histogram),
//!   summed under masks: post-processing, no further charge; their noise is the holders'
//!   together (σ·√n).
//! - **Point-mass discovery** of a numeric column whose bins are wider than a value: a
//!   category discovery of its exact values (each one's shortest text), each holder's own at
//!   the points' noise and threshold ([`Noise::sigma_points`]), the union's counts summed
//!   as above.
//! - **Distinct counts** (`id` columns' pseudonym pools): each holder's Gaussian count,
//!   summed (values held by several holders count once per holder: the pool is an upper
//!   bound). A column whose kind the holders decided and read as text releases one after
//!   its discovery, charged with the open kind ([`crate::stats::Plan::for_schema`]): where
//!   most of its rows hold values no holder released (the summed row count, null count and
//!   union's counts, post-processing) it becomes an `id`, as on one table.
//! - **Row count**: each holder's noisy row count (charged when it accepted the job), summed:
//!   the job's output size when its spec gives none.

use std::collections::{BTreeMap, HashMap};

use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::secagg;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SynthError};
use crate::schema::Schema;
use crate::stats::{
    Completed, Discovered, Ids, Noise, Release, TYPE_BUCKETS, complete_schema_with, kind_specs,
    point_key, type_counts,
};
use crate::table::{RawTable, Table};

/// Largest count a wave's sum may hold without wrapping the 32-bit ring.
const MAX_COUNT: f64 = 1.0e9;

/// One request of a wave, in the order its answers come back.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Counts to sum: exact integer counts that get a share of Skellam noise
    /// (`distributed`), or counts already noised by this holder (rounded stochastically).
    Sum {
        /// The column (or `\0rows`).
        key: String,
        /// The call within the column.
        slot: usize,
        /// The counts.
        values: Vec<f64>,
        /// Whether the distributed noise is still to be added.
        distributed: bool,
    },
    /// Names this holder released for a column, for the union.
    Set {
        /// The column.
        key: String,
        /// The call within the column.
        slot: usize,
        /// The names.
        names: Vec<String>,
    },
}

/// A published wave: the decoded sums (in request order) and the union of the names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wave {
    /// Every sum of the wave, in request order.
    pub sums: Vec<f64>,
    /// The union of every holder's released names, each as [`released_entry`] wrote it.
    pub released: Vec<String>,
}

/// A holder's own noisy discovery counts, kept between waves (and across restarts, by the
/// worker) so that the union's counts come from the very release its names came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memo {
    /// Per discovery (column and call), each value's noisy count; the null count under "".
    pub discoveries: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Where the statistics stand after a transcript.
#[derive(Debug)]
pub enum Step {
    /// The next wave's requests.
    Request(Vec<Part>),
    /// The schema is complete; the summed noisy row count of the holders.
    Done(Box<Completed>, f64),
}

/// A released name of column `key` as the union holds it (length-prefixed, so that no
/// column name or value can be mistaken for another).
pub fn released_entry(key: &str, name: &str) -> String {
    format!("{}:{key}{name}", key.len())
}

fn entry_prefix(key: &str) -> String {
    format!("{}:{key}", key.len())
}

const ROWS_KEY: &str = "\0rows";

enum Answer {
    Sum(Vec<f64>),
    Set(Vec<String>),
}

/// The noise a federated job's statistics are read with: `noise` as planned (the
/// guaranteed σ of every summed histogram), its numeric σ widened to what `participants`
/// shares sum to when all take part (`tolerated` of them being allowed to drop or collude).
pub fn reading_noise(noise: Noise, participants: usize, tolerated: usize) -> Noise {
    let honest = participants.saturating_sub(tolerated).max(1) as f64;
    Noise {
        sigma: noise.sigma * (participants.max(1) as f64 / honest).sqrt(),
        ..noise
    }
}

struct Replay<'a> {
    noise: Noise,
    holders: usize,
    answers: &'a HashMap<(String, usize), Answer>,
    column: String,
    slot: usize,
    parts: Vec<Part>,
    memo: &'a mut Memo,
    rng: &'a mut SecureRng,
}

impl Replay<'_> {
    fn take(&mut self) -> (String, usize) {
        let slot = self.slot;
        self.slot += 1;
        (self.column.clone(), slot)
    }

    fn sum_answer(&self, key: &(String, usize), len: usize) -> Result<Option<Vec<f64>>> {
        match self.answers.get(key) {
            Some(Answer::Sum(v)) if v.len() == len => Ok(Some(v.clone())),
            Some(_) => Err(mismatch(&key.0)),
            None => Ok(None),
        }
    }

    /// A draw of this holder's noise for a count it holds none of, conditioned to have
    /// stayed below `threshold` (it was not selected).
    fn unselected(&mut self, sd: f64, threshold: f64) -> f64 {
        for _ in 0..64 {
            let z: f64 = self.rng.sample(StandardNormal);
            if sd * z <= threshold {
                return sd * z;
            }
        }
        0.0
    }
}

fn mismatch(column: &str) -> SynthError {
    SynthError::Schema(format!(
        "the statistics transcript does not match this holder's requests at column '{column}'"
    ))
}

impl Release for Replay<'_> {
    fn noise(&self) -> &Noise {
        &self.noise
    }

    fn begin(&mut self, column: &str) {
        self.column = column.to_string();
        self.slot = 0;
    }

    fn counts(&mut self, counts: Vec<f64>) -> Result<Vec<f64>> {
        let key = self.take();
        if let Some(v) = self.sum_answer(&key, counts.len())? {
            return Ok(v);
        }
        self.parts.push(Part::Sum {
            key: key.0,
            slot: key.1,
            values: counts,
            distributed: true,
        });
        Err(SynthError::Pending)
    }

    /// A federated job's schema marks no column wide (the distinct counts are released by
    /// `fedsynth synth` alone): every discovery has the ordinary noise.
    fn discover(
        &mut self,
        values: &[String],
        nulls: Option<usize>,
        _wide: bool,
    ) -> Result<Discovered> {
        let (sd, threshold) = (self.noise.sigma_categories, self.noise.threshold());
        self.discovery(values, nulls, sd, threshold)
    }

    fn distinct(&mut self, values: &[String]) -> Result<f64> {
        let key = self.take();
        if let Some(v) = self.sum_answer(&key, 1)? {
            return Ok(v[0]);
        }
        let distinct = values
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len() as f64;
        let z: f64 = self.rng.sample(StandardNormal);
        self.parts.push(Part::Sum {
            key: key.0,
            slot: key.1,
            values: vec![distinct + self.noise.sigma_distinct * z],
            distributed: false,
        });
        Err(SynthError::Pending)
    }

    /// A point-mass discovery is a discovery of the values' keys ([`point_key`]) at the
    /// points' noise and threshold: each holder's own, their union summed.
    fn points(&mut self, values: &[f64]) -> Result<Vec<(f64, f64)>> {
        let keys: Vec<String> = values.iter().map(|&v| point_key(v)).collect();
        let (sd, threshold) = (self.noise.sigma_points, self.noise.threshold_points());
        let found = self.discovery(&keys, None, sd, threshold)?;
        Ok(found
            .categories
            .into_iter()
            .filter_map(|(k, c)| Some((k.parse().ok()?, c)))
            .collect())
    }
}

impl Replay<'_> {
    /// A discovery over `values` with noise `sd` on each holder's counts and release
    /// threshold `threshold`: each holder's names above it, then the sums of every
    /// holder's noisy counts of their union.
    fn discovery(
        &mut self,
        values: &[String],
        nulls: Option<usize>,
        sd: f64,
        threshold: f64,
    ) -> Result<Discovered> {
        let set_key = self.take();
        let sum_key = self.take();
        let memo_key = format!("{}#{}", set_key.0, set_key.1);
        let union = match self.answers.get(&set_key) {
            Some(Answer::Set(names)) => names.clone(),
            Some(Answer::Sum(_)) => return Err(mismatch(&set_key.0)),
            None => {
                // This holder's discovery: its own noisy histogram (kept), the names above
                // the threshold released for the union.
                let noisy = match self.memo.discoveries.get(&memo_key) {
                    Some(known) => known.clone(),
                    None => {
                        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
                        for v in values {
                            *counts.entry(v.clone()).or_default() += 1.0;
                        }
                        for c in counts.values_mut() {
                            let z: f64 = self.rng.sample(StandardNormal);
                            *c += sd * z;
                        }
                        if let Some(n) = nulls {
                            let z: f64 = self.rng.sample(StandardNormal);
                            counts.insert(String::new(), n as f64 + sd * z);
                        }
                        self.memo.discoveries.insert(memo_key, counts.clone());
                        counts
                    }
                };
                let names = noisy
                    .iter()
                    .filter(|(k, c)| !k.is_empty() && **c > threshold)
                    .map(|(k, _)| k.clone())
                    .collect();
                self.parts.push(Part::Set {
                    key: set_key.0,
                    slot: set_key.1,
                    names,
                });
                return Err(SynthError::Pending);
            }
        };
        let len = union.len() + usize::from(nulls.is_some());
        let summed_sd = sd * (self.holders.max(1) as f64).sqrt();
        if let Some(v) = self.sum_answer(&sum_key, len)? {
            let mut categories: Vec<(String, f64)> = union
                .iter()
                .cloned()
                .zip(v.iter().map(|c| c.max(0.5)))
                .collect();
            categories.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let nulls = nulls.map(|_| (v[len - 1], summed_sd));
            return Ok(Discovered { categories, nulls });
        }
        let noisy = self
            .memo
            .discoveries
            .get(&memo_key)
            .cloned()
            .ok_or_else(|| {
                SynthError::Schema(format!(
                    "column '{}': this holder's discovery counts were lost; the job cannot go on",
                    sum_key.0
                ))
            })?;
        let mut counts = Vec::with_capacity(len);
        for name in &union {
            let c = match noisy.get(name) {
                Some(c) => *c,
                None => self.unselected(sd, threshold),
            };
            counts.push(c);
        }
        if nulls.is_some() {
            counts.push(noisy.get("").copied().unwrap_or(0.0));
        }
        self.parts.push(Part::Sum {
            key: sum_key.0,
            slot: sum_key.1,
            values: counts,
            distributed: false,
        });
        Err(SynthError::Pending)
    }
}

#[allow(clippy::too_many_arguments)]
/// Replays the completion of `schema` on this holder's table `raw` against the transcript
/// `waves`: the next wave's requests, or the completed schema. `noise` is the reading noise
/// ([`reading_noise`]), `holders` the number of holders summed, `noisy_rows` this holder's
/// noisy row count (its part of the first wave). `memo` keeps this holder's discovery
/// counts; the caller persists it when it changed.
///
/// A schema that leaves kinds open ([`crate::schema::ColumnKind::Auto`]) takes one wave more, first: each
/// such column's type histogram ([`type_counts`]: whole numbers, fractions, text, each
/// datetime pattern and grain; a row is in one bucket, Δ = 1), summed with Skellam noise
/// like any numeric histogram, decides its kind as [`kind_specs`] decides it on one table.
/// The other statistics follow on the table typed by the decided kinds.
pub fn complete(
    raw: &RawTable,
    schema: &Schema,
    noise: Noise,
    holders: usize,
    noisy_rows: f64,
    waves: &[Wave],
    memo: &mut Memo,
    rng: &mut SecureRng,
) -> Result<Step> {
    let open = schema.open_kinds();
    if open.is_empty() {
        let table = raw.typed(&schema.kinds())?;
        return complete_typed(
            &table,
            schema,
            noise,
            holders,
            noisy_rows,
            None,
            &[],
            waves,
            memo,
            rng,
        );
    }
    let mut parts = vec![Part::Sum {
        key: ROWS_KEY.into(),
        slot: 0,
        values: vec![noisy_rows],
        distributed: false,
    }];
    for name in &open {
        let column = raw
            .column(name)
            .ok_or_else(|| SynthError::Schema(format!("column '{name}' is not in the input")))?;
        parts.push(Part::Sum {
            key: (*name).to_string(),
            slot: 0,
            values: type_counts(column),
            distributed: true,
        });
    }
    let Some(first) = waves.first() else {
        return Ok(Step::Request(parts));
    };
    let buckets = TYPE_BUCKETS;
    if first.sums.len() != 1 + open.len() * buckets {
        return Err(mismatch("(the kinds' wave)"));
    }
    let rows = first.sums[0].max(1.0);
    // The open columns' histograms follow the row counts, in the schema's order.
    let mut at = 1;
    let decided = schema.with_open_kinds(|name| {
        let counts = &first.sums[at..at + buckets];
        at += buckets;
        Ok(kind_specs(name, counts, noise.sigma, open.len()))
    })?;
    let table = raw.typed(&decided.kinds())?;
    complete_typed(
        &table,
        &decided,
        noise,
        holders,
        noisy_rows,
        Some(rows),
        &open,
        &waves[1..],
        memo,
        rng,
    )
}

/// [`complete`] on a table typed by `schema`'s kinds; `rows` the summed row count when an
/// earlier wave published it (else this holder's `noisy_rows` goes into the first wave);
/// `open` the columns whose kinds that wave decided (a text one may become an identifier).
#[allow(clippy::too_many_arguments)]
fn complete_typed(
    table: &Table,
    schema: &Schema,
    noise: Noise,
    holders: usize,
    noisy_rows: f64,
    rows: Option<f64>,
    open: &[&str],
    waves: &[Wave],
    memo: &mut Memo,
    rng: &mut SecureRng,
) -> Result<Step> {
    let mut answers: HashMap<(String, usize), Answer> = HashMap::new();
    let counted = rows.is_some();
    let mut rows = rows;
    for k in 0..=waves.len() {
        let mut replay = Replay {
            noise,
            holders,
            answers: &answers,
            column: String::new(),
            slot: 0,
            parts: Vec::new(),
            memo,
            rng,
        };
        // The open kinds' categorical columns may turn out identifiers, read against the
        // summed row count (their distinct counts are charged with the open kinds).
        let ids = Ids::Among(rows.map_or(0, |n| n.round() as usize), open);
        let result = complete_schema_with(table, schema, true, None, ids, &mut replay);
        let mut parts = std::mem::take(&mut replay.parts);
        if k == 0 && !counted {
            parts.insert(
                0,
                Part::Sum {
                    key: ROWS_KEY.into(),
                    slot: 0,
                    values: vec![noisy_rows],
                    distributed: false,
                },
            );
        }
        match result {
            Ok(done) if k == waves.len() => {
                return Ok(Step::Done(Box::new(done), rows.unwrap_or(noisy_rows)));
            }
            Ok(_) if k > 0 => {
                return Err(SynthError::Schema(
                    "the statistics transcript has more waves than the schema needs".into(),
                ));
            }
            Err(SynthError::Pending) | Ok(_) => {}
            Err(e) => return Err(e),
        }
        let Some(wave) = waves.get(k) else {
            return Ok(Step::Request(parts));
        };
        let mut at = 0;
        for part in parts {
            match part {
                Part::Sum {
                    key, slot, values, ..
                } => {
                    let end = at + values.len();
                    let v = wave
                        .sums
                        .get(at..end)
                        .ok_or_else(|| mismatch(&key))?
                        .to_vec();
                    at = end;
                    if key == ROWS_KEY {
                        rows = Some(v[0].max(1.0));
                    } else {
                        answers.insert((key, slot), Answer::Sum(v));
                    }
                }
                Part::Set { key, slot, .. } => {
                    let prefix = entry_prefix(&key);
                    let names: Vec<String> = wave
                        .released
                        .iter()
                        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_string))
                        .collect();
                    answers.insert((key, slot), Answer::Set(names));
                }
            }
        }
        if at != wave.sums.len() {
            return Err(mismatch("(end of wave)"));
        }
    }
    Err(SynthError::Schema("statistics replay ended early".into()))
}

/// The ring words of a wave's sums: distributed counts with a share of Skellam noise λ,
/// this holder's noisy counts rounded stochastically (unbiased), each as a 32-bit word.
pub fn encode(parts: &[Part], lambda: f64, rng: &mut SecureRng) -> Result<Vec<u32>> {
    let mut words = Vec::new();
    for part in parts {
        let Part::Sum {
            key,
            values,
            distributed,
            ..
        } = part
        else {
            continue;
        };
        if values.iter().any(|v| !v.is_finite() || v.abs() > MAX_COUNT) {
            return Err(SynthError::Column {
                column: key.clone(),
                message: "a count beyond what the statistics' ring holds".into(),
            });
        }
        if *distributed {
            let mut w: Vec<u32> = values.iter().map(|&v| (v.round() as i64) as u32).collect();
            if lambda > 0.0 {
                secagg::add_skellam(&mut w, lambda, rng)?;
            }
            words.extend(w);
        } else {
            let f: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            words.extend(secagg::discretise(&f, 1.0, rng));
        }
    }
    Ok(words)
}

/// A completed wave's summed words as counts (signed 32-bit).
pub fn decode(sum: &[u32]) -> Vec<f64> {
    sum.iter().map(|&w| f64::from(w as i32)).collect()
}

/// The names a wave's requests release for the union.
pub fn released(parts: &[Part]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| match p {
            Part::Set { key, names, .. } => names.iter().map(|n| released_entry(key, n)).collect(),
            Part::Sum { .. } => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::schema::ColumnKind;
    use crate::stats::{DISTINCT_NOISE, Plan};
    use crate::table::{Cells, ColumnData, RawColumn};

    /// Three holders' shards of one table: an integer column, a 0/1 flag, an amount with
    /// exact zeros, a category with a class (`rare`, 3% of all rows) held by the last
    /// holder only.
    fn shards() -> Vec<Table> {
        let mut rng = SecureRng::from_seed(5);
        (0..3)
            .map(|h| {
                let n = 4000;
                let age: Vec<Option<i64>> = (0..n)
                    .map(|i| Some(20 + ((i * 7 + h) % 45) as i64))
                    .collect();
                let flag: Vec<Option<i64>> = (0..n).map(|i| Some(i64::from(i % 10 < 3))).collect();
                let amount: Vec<Option<f64>> = (0..n)
                    .map(|i| {
                        Some(if i % 2 == 0 {
                            0.0
                        } else {
                            100.0 * (1.0 + 4.0 * rng.random::<f64>())
                        })
                    })
                    .collect();
                let kind: Vec<Option<String>> = (0..n)
                    .map(|i| {
                        Some(
                            if h == 2 && i % 100 < 9 {
                                "rare"
                            } else if i % 3 == 0 {
                                "a"
                            } else {
                                "b"
                            }
                            .to_string(),
                        )
                    })
                    .collect();
                Table {
                    names: vec!["age".into(), "flag".into(), "amount".into(), "kind".into()],
                    columns: vec![
                        ColumnData::Int(age),
                        ColumnData::Int(flag),
                        ColumnData::Float(amount),
                        ColumnData::Text(kind),
                    ],
                }
            })
            .collect()
    }

    /// Runs the waves among the holders in process (masks cancel in the sum, so they are
    /// left out here): each holder's completed schema and the summed row count.
    /// A holder's table as a Parquet file would give it: every column typed.
    fn typed_raw(t: &Table) -> RawTable {
        RawTable {
            names: t.names.clone(),
            columns: t.columns.iter().cloned().map(RawColumn::Typed).collect(),
        }
    }

    /// A holder's table as a CSV file would give it: every column its cells' text.
    fn csv_raw(t: &Table) -> RawTable {
        let columns = t
            .columns
            .iter()
            .map(|c| {
                RawColumn::Cells(match c {
                    ColumnData::Int(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
                    ColumnData::Float(v) => v.iter().map(|x| x.map(|x| x.to_string())).collect(),
                    ColumnData::Text(v) => v.iter().cloned().collect(),
                })
            })
            .collect();
        RawTable {
            names: t.names.clone(),
            columns,
        }
    }

    fn run(holders: &[RawTable], schema: &Schema, noise: Noise) -> (Vec<Schema>, f64, usize) {
        let n = holders.len();
        let mut memos = vec![Memo::default(); n];
        let mut waves: Vec<Wave> = Vec::new();
        let mut rng = SecureRng::from_seed(9);
        let lambda = secagg::skellam_share(noise.sigma, 1.0, n, 0).unwrap();
        let reading = reading_noise(noise, n, 0);
        loop {
            let steps: Vec<Step> = holders
                .iter()
                .zip(&mut memos)
                .map(|(t, memo)| {
                    complete(
                        t,
                        schema,
                        reading,
                        n,
                        t.rows() as f64,
                        &waves,
                        memo,
                        &mut rng,
                    )
                    .unwrap()
                })
                .collect();
            if steps.iter().all(|s| matches!(s, Step::Done(..))) {
                let mut rows = 0.0;
                let schemas = steps
                    .into_iter()
                    .map(|s| match s {
                        Step::Done(c, r) => {
                            rows = r;
                            c.schema
                        }
                        Step::Request(_) => unreachable!(),
                    })
                    .collect();
                return (schemas, rows, waves.len());
            }
            let mut sum: Option<Vec<u32>> = None;
            let mut union = Vec::new();
            for step in &steps {
                let Step::Request(parts) = step else {
                    panic!("holders disagree on whether the statistics are complete")
                };
                let words = encode(parts, lambda, &mut rng).unwrap();
                match &mut sum {
                    None => sum = Some(words),
                    Some(s) => {
                        assert_eq!(s.len(), words.len(), "holders asked for other sums");
                        secagg::add_words(s, &words);
                    }
                }
                union.extend(released(parts));
            }
            union.sort();
            union.dedup();
            waves.push(Wave {
                sums: decode(&sum.unwrap()),
                released: union,
            });
            assert!(waves.len() < 10, "the statistics never complete");
        }
    }

    /// The noise both three-holder runs read with.
    fn test_noise() -> Noise {
        Noise {
            sigma: 20.0,
            sigma_categories: 10.0,
            threshold_delta: 1e-7,
            sigma_distinct: 20.0 * DISTINCT_NOISE,
            sigma_wide: 10.0,
            sigma_points: 20.0 * crate::stats::POINT_NOISE,
        }
    }

    #[test]
    fn holders_complete_one_schema_from_summed_statistics() {
        // And a fee capped at 1,000: a fifth of each holder's rows, the rest below it.
        let mut holders = shards();
        let mut rng = SecureRng::from_seed(8);
        for t in &mut holders {
            let fees = (0..t.rows())
                .map(|i| {
                    Some(if i % 5 == 0 {
                        1000.0
                    } else {
                        1000.0 * rng.random::<f64>()
                    })
                })
                .collect();
            t.names.push("fee".into());
            t.columns.push(ColumnData::Float(fees));
        }
        let mut schema = Schema::infer(&holders[0]);
        for c in &mut schema.columns {
            c.nullable = None;
            c.categories = None;
        }
        let plan = Plan::for_schema(&schema);
        let noise = test_noise();
        let raw: Vec<RawTable> = holders.iter().map(typed_raw).collect();
        let (schemas, rows, waves) = run(&raw, &schema, noise);
        assert!(plan.releases > 0 && plan.discoveries == 1);
        // Every holder read the same schema from the same transcript.
        let text = schemas[0].to_toml();
        assert!(schemas.iter().all(|s| s.to_toml() == text), "{text}");
        // The rows, the support and bins, the point masses' discovery and their sums.
        assert!(waves <= 5, "{waves} waves");
        assert!((rows - 12_000.0).abs() < 1.0, "{rows}");
        let col = |name: &str| schemas[0].columns.iter().find(|c| c.name == name).unwrap();
        // The category held by one holder only is found, with about its share (3%).
        let kind = col("kind");
        let cats = kind.categories.as_ref().unwrap();
        let freq = kind.frequencies.as_ref().unwrap();
        let total: f64 = freq.iter().sum();
        let rare = cats.iter().position(|c| c == "rare").expect("rare found");
        assert!(
            (freq[rare] / total - 0.03).abs() < 0.01,
            "{cats:?} {freq:?}"
        );
        // The flag keeps both values; the amount's zeros are a point mass of about half.
        assert_eq!(col("flag").kind, ColumnKind::Integer);
        assert_eq!(col("flag").edges.as_ref().unwrap(), &vec![-0.5, 0.5, 1.5]);
        let amount = col("amount");
        assert_eq!(amount.points, Some(vec![0.0]));
        let f = amount.frequencies.as_ref().unwrap();
        let share = f[f.len() - 1] / f.iter().sum::<f64>();
        assert!((share - 0.5).abs() < 0.03, "{share}");
        let age = col("age").edges.as_ref().unwrap();
        assert!(age[0] <= 20.0 && age[age.len() - 1] >= 64.0, "{age:?}");
        // The cap is a point mass the holders found together, with its share; it ends
        // the fee's range.
        let fee = col("fee");
        assert_eq!(fee.points, Some(vec![1000.0]), "{text}");
        let f = fee.frequencies.as_ref().unwrap();
        let share = f[f.len() - 1] / f.iter().sum::<f64>();
        assert!((share - 0.2).abs() < 0.03, "{share}");
        assert!(fee.max.unwrap() <= 1000.0, "{text}");
    }

    #[test]
    fn a_transcript_that_does_not_fit_the_requests_is_refused() {
        let holders = shards();
        let schema = Schema::infer(&holders[0]);
        let noise = Noise::exact();
        let mut memo = Memo::default();
        let mut rng = SecureRng::from_seed(1);
        let bad = vec![Wave {
            sums: vec![1.0; 3],
            released: vec![],
        }];
        let got = complete(
            &typed_raw(&holders[0]),
            &schema,
            noise,
            3,
            100.0,
            &bad,
            &mut memo,
            &mut rng,
        );
        assert!(matches!(got, Err(SynthError::Schema(_))), "{got:?}");
    }

    #[test]
    fn holders_decide_the_kinds_left_open_from_their_summed_type_counts() {
        // Names only: the first two holders hold CSV files, the third a Parquet file (its
        // columns typed by the file); the kinds come from the summed type histograms.
        let shards = shards();
        let mut raw: Vec<RawTable> = shards
            .iter()
            .enumerate()
            .map(|(h, t)| if h == 2 { typed_raw(t) } else { csv_raw(t) })
            .collect();
        // And a timestamp to the hour (a Parquet file's timestamps are read as text cells
        // too), null in one row of 20.
        for (h, t) in raw.iter_mut().enumerate() {
            let cells: Cells = (0..t.rows())
                .map(|i| {
                    (i % 20 != 0).then(|| {
                        format!(
                            "2024-{:02}-{:02} {:02}:00:00",
                            1 + (i + h) % 12,
                            1 + i % 28,
                            (i * 7) % 24
                        )
                    })
                })
                .collect();
            t.names.push("seen".into());
            t.columns.push(RawColumn::Cells(cells));
            // And an identifier: 2,000 users per holder, each in two of its rows.
            let users: Cells = (0..t.rows())
                .map(|i| Some(format!("u{h}-{}", i / 2)))
                .collect();
            t.names.push("user".into());
            t.columns.push(RawColumn::Cells(users));
        }
        let names: Vec<(String, ColumnKind)> = raw[0]
            .names
            .iter()
            .map(|n| (n.clone(), ColumnKind::Auto))
            .collect();
        let schema = Schema::from_kinds(&names);
        assert_eq!(Schema::from_toml(&schema.to_toml()).unwrap(), schema);
        let names_only = "version = 1\n[[columns]]\nname = \"age\"\n[[columns]]\nname = \"flag\"\n\
                          [[columns]]\nname = \"amount\"\n[[columns]]\nname = \"kind\"\n\
                          [[columns]]\nname = \"seen\"\n[[columns]]\nname = \"user\"\n";
        assert_eq!(Schema::from_toml(names_only).unwrap(), schema);
        // Charged as the type histogram and both readings of every column (a categorical
        // reading with its count of distinct values).
        let plan = Plan::for_schema(&schema);
        assert_eq!((plan.releases, plan.discoveries, plan.distinct), (18, 6, 6));
        let noise = test_noise();
        let (schemas, rows, waves) = run(&raw, &schema, noise);
        let text = schemas[0].to_toml();
        assert!(schemas.iter().all(|s| s.to_toml() == text), "{text}");
        assert!(waves <= 7, "{waves} waves");
        assert!((rows - 12_000.0).abs() < 1.0, "{rows}");
        let col = |name: &str| schemas[0].columns.iter().find(|c| c.name == name).unwrap();
        // The identifier is read as one: its values are rare (none released), and its
        // pseudonyms are drawn from the summed distinct counts (6,000 users).
        let user = col("user");
        assert_eq!(user.kind, ColumnKind::Id, "{text}");
        let pool = user.pseudonyms.unwrap() as f64;
        assert!((pool - 6000.0).abs() < 200.0, "{pool}");
        assert_eq!(col("age").kind, ColumnKind::Integer);
        assert_eq!(col("flag").kind, ColumnKind::Integer);
        assert_eq!(col("flag").edges.as_ref().unwrap(), &vec![-0.5, 0.5, 1.5]);
        let amount = col("amount");
        assert_eq!(amount.kind, ColumnKind::Continuous);
        assert_eq!(amount.points, Some(vec![0.0]));
        let kind = col("kind");
        assert_eq!(kind.kind, ColumnKind::Categorical);
        assert!(
            kind.categories
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c == "rare")
        );
        // The timestamp: its pattern, its hour and weekday parts, nullable.
        let seen = col("seen");
        assert_eq!(seen.kind, ColumnKind::Datetime);
        assert_eq!(seen.format.as_deref(), Some("%Y-%m-%d %H:%M:%S%.f"));
        assert_eq!(seen.nullable, Some(true));
        for part in ["seen#hour", "seen#weekday"] {
            assert!(schemas[0].columns.iter().any(|c| c.name == part), "{text}");
        }
        // A completed schema leaves no kind open.
        assert!(schemas[0].open_kinds().is_empty());
        // A transcript whose first wave is not the kinds' is refused.
        let bad = vec![Wave {
            sums: vec![1.0; 3],
            released: vec![],
        }];
        let got = complete(
            &raw[0],
            &schema,
            noise,
            3,
            100.0,
            &bad,
            &mut Memo::default(),
            &mut SecureRng::from_seed(2),
        );
        assert!(matches!(got, Err(SynthError::Schema(_))), "{got:?}");
    }
}
