//! The table schema: which columns to synthesise, their kinds, and any public facts about
//! them (bounds, bin edges, category sets) that cost no privacy budget. Written beside every
//! output as `OUT.schema.toml` so a user can edit and reuse it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SynthError};
use crate::table::{ColumnData, Table};

/// Schema file format version.
pub const SCHEMA_VERSION: u32 = 1;

/// How a column is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Real numbers.
    Continuous,
    /// Whole numbers, modelled as numbers and rounded on the way out.
    Integer,
    /// A finite set of values (text, booleans, or integers declared categorical).
    Categorical,
    /// A number, whole or not: fedsynth decides privately whether it is modelled as
    /// `integer` or `continuous` (from the column's first histogram, which counts whole and
    /// fractional values apart) and writes the decision into the completed schema. A CSV
    /// column without a schema whose cells are mostly numbers starts as this kind. With public
    /// edges and no release to decide from, it is continuous.
    Number,
    /// A date or timestamp (see [`crate::datetime`]): modelled as its day (days since
    /// 1970-01-01; `min`, `max`, `edges` and `points` are day numbers) with its time of day
    /// and weekday as the derived columns `NAME#hour` (or `#minute`, `#second`) and
    /// `NAME#weekday`, and written back in `format`.
    Datetime,
    /// An identifier (user ids, tail numbers, hostnames): a categorical column whose values
    /// are mostly rare. Values released by DP partition selection (`categories`) may appear
    /// in the output; every other row gets a fresh pseudonym `anon-` + 16 hexadecimal digits
    /// (64 random bits) from a pool of `pseudonyms` of them, so no real value below the
    /// release threshold is ever written.
    Id,
    /// Not declared (`kind = "auto"`, or no `kind` at all): a federated job's holders decide
    /// it from the sum of their DP type histograms (see [`crate::fedstats`]), as `fedsynth
    /// synth` decides a CSV column's kind without a schema ([`crate::stats::private_kinds`]).
    /// Only a federated job's partial schema may leave a kind open; a completed schema never
    /// does. Such a column gives its name only.
    #[default]
    Auto,
}

/// Whether a schema column is derived by fedsynth rather than one of the file's: a
/// datetime's part (`NAME#hour`, …) or the null pattern (`#nulls`).
pub fn is_derived(name: &str) -> bool {
    crate::datetime::part_of(name).is_some() || name == crate::nulls::PATTERN
}

impl ColumnKind {
    /// Whether the column is modelled as numbers (bins and offsets).
    pub fn is_numeric(self) -> bool {
        !matches!(self, Self::Categorical | Self::Id | Self::Auto)
    }
}

/// Where a column's bounds, bins or categories came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Declared by the user: public, costs no privacy budget.
    #[default]
    Public,
    /// Estimated by fedsynth with a DP mechanism (charged to the ledger); reusing it is
    /// post-processing and costs nothing more.
    Dp,
}

/// One column of the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name, as in the input file.
    pub name: String,
    /// How it is modelled (left out: `auto`, see [`ColumnKind::Auto`]).
    #[serde(default)]
    pub kind: ColumnKind,
    /// Whether nulls may occur (default: true; a null indicator costs little).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    /// Public lower bound (numeric columns); values below are clamped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Public upper bound (numeric columns); values above are clamped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Bin edges (numeric columns), increasing, from min to max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    /// Point masses (numeric columns): values that hold a share of the rows on their own,
    /// such as the exact zeros of an amount that is often zero. Each is generated exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<f64>>,
    /// The grid a continuous column's values lie on (0.5: halves such as 7.5 and 14; 0.1: one
    /// decimal): generated values are rounded to multiples of it, as an integer column's are
    /// to whole numbers. fedsynth finds it with the column's first histogram (see
    /// [`crate::stats`]) where no finer fraction holds a mass the noise cannot explain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// The category set (categorical columns); other values are treated as unseen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Share of the non-null rows in each bin (numeric columns, one per pair of edges, then
    /// one per point mass) or each category (categorical columns, in the order of `categories`). Sampling matches
    /// the generated marginals to these shares; without them the column is left as the
    /// model generates it. fedsynth writes the DP estimates it made (`source = "dp"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<Vec<f64>>,
    /// Where bounds, edges, categories and frequencies came from.
    #[serde(default)]
    pub source: Source,
    /// The text pattern of a datetime column (one of [`crate::datetime::PATTERNS`], chrono
    /// `strftime` syntax), read and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The noisy count of the column's nulls (a DP release, in the unit of `frequencies`):
    /// sampling matches the share of generated nulls to it, as it matches bins and
    /// categories to their frequencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<f64>,
    /// The number of distinct pseudonyms an `id` column draws from for the rows whose value
    /// was not released (a DP estimate of its rare values' count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonyms: Option<u64>,
    /// The noisy count of the column's distinct values released with its kind (see
    /// [`crate::stats::private_kinds`]): it sizes an identifier's pseudonym pool and says,
    /// before the statistics are planned, whether most values are rare. Internal to a run:
    /// never read from or written to a schema file.
    #[serde(skip)]
    pub distinct: Option<f64>,
    /// Whether the column's category discovery has its own, smaller noise (a column of many
    /// values each seen a few times, see [`crate::stats::Plan::wide`]). Internal to a run.
    #[serde(skip)]
    pub wide: bool,
    /// Whether the kinds release found more fractional numbers (2.3, 7.5) in the column than
    /// its noise explains (see [`crate::stats::private_kinds`]): a `number` column is then
    /// continuous even where its fractions are spread too thinly over the first histogram to
    /// clear it there. Internal to a run.
    #[serde(skip)]
    pub fractions: bool,
}

/// A table schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Format version (1).
    pub version: u32,
    /// The columns to synthesise, in output order.
    pub columns: Vec<ColumnSpec>,
}

fn schema_message(e: &SynthError) -> String {
    match e {
        SynthError::Schema(m) => m.clone(),
        other => other.to_string(),
    }
}

impl Schema {
    /// Reads and validates a schema file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SynthError::Schema(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
            .map_err(|e| SynthError::Schema(format!("{}: {}", path.display(), schema_message(&e))))
    }

    /// Parses and validates schema text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let schema: Self = toml::from_str(text).map_err(|e| {
            SynthError::Schema(e.message().lines().next().unwrap_or("invalid").to_string())
        })?;
        schema.validate()?;
        Ok(schema)
    }

    /// The schema as TOML text, with a comment saying what it is.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# fedsynth schema: column kinds and public facts (bounds, edges, categories).\n\
             # Values with source = \"public\" cost no privacy budget; \"dp\" values were estimated\n\
             # privately and may be reused at no further cost. Edit and pass with --schema.\n{body}"
        )
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<()> {
        if self.version != SCHEMA_VERSION {
            return Err(SynthError::Schema(format!(
                "version {} is not supported (expected {SCHEMA_VERSION})",
                self.version
            )));
        }
        if self.columns.is_empty() {
            return Err(SynthError::Schema("no columns".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.as_str()) {
                return Err(SynthError::Schema(format!(
                    "column '{}' appears twice",
                    c.name
                )));
            }
            let bad = |m: &str| Err(SynthError::Schema(format!("column '{}': {m}", c.name)));
            if c.format.is_some() != (c.kind == ColumnKind::Datetime) {
                return bad("a datetime column needs a format, and only a datetime column has one");
            }
            if c.nulls.is_some_and(|n| !(n.is_finite() && n >= 0.0)) {
                return bad("nulls must be a finite count, not negative");
            }
            if c.pseudonyms.is_some() && c.kind != ColumnKind::Id {
                return bad("only an id column has pseudonyms");
            }
            if c.pseudonyms == Some(0) {
                return bad("pseudonyms must be at least 1");
            }
            if let Some(f) = &c.format
                && !crate::datetime::known(f)
            {
                return bad(&format!(
                    "format {f:?} is not supported (use one of: {})",
                    crate::datetime::PATTERNS.join(", ")
                ));
            }
            if let Some(f) = &c.frequencies
                && (f.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || f.iter().sum::<f64>() <= 0.0)
            {
                return bad("frequencies must be finite, non-negative and not all zero");
            }
            match c.kind {
                ColumnKind::Auto => {
                    if c.min.is_some()
                        || c.max.is_some()
                        || c.edges.is_some()
                        || c.points.is_some()
                        || c.step.is_some()
                        || c.categories.is_some()
                        || c.frequencies.is_some()
                        || c.nulls.is_some()
                        || c.nullable.is_some()
                    {
                        return bad(
                            "a column without a kind gives its name only (declare its kind to give bounds, edges or categories)",
                        );
                    }
                }
                ColumnKind::Categorical | ColumnKind::Id => {
                    if c.min.is_some() || c.max.is_some() || c.edges.is_some() || c.points.is_some()
                    {
                        return bad("min, max, edges and points apply to numeric columns only");
                    }
                    if let Some(cats) = &c.categories {
                        if cats.is_empty() && c.kind == ColumnKind::Categorical {
                            return bad("categories is empty");
                        }
                        let mut distinct = std::collections::HashSet::new();
                        if let Some(k) = cats.iter().position(|v| !distinct.insert(v.as_str())) {
                            return bad(&format!(
                                "category {} appears twice (two slots for one value would bias it)",
                                k + 1
                            ));
                        }
                    }
                    if let Some(f) = &c.frequencies {
                        match &c.categories {
                            None => return bad("frequencies need the categories they belong to"),
                            // An id's may add its pseudonyms' share at the end.
                            Some(cats)
                                if cats.len() != f.len()
                                    && !(c.kind == ColumnKind::Id && cats.len() + 1 == f.len()) =>
                            {
                                return bad(
                                    "give one frequency per category (an id: and one for its pseudonyms)",
                                );
                            }
                            Some(_) => {}
                        }
                    }
                }
                ColumnKind::Continuous
                | ColumnKind::Integer
                | ColumnKind::Number
                | ColumnKind::Datetime => {
                    if c.categories.is_some() {
                        return bad("categories apply to categorical columns only");
                    }
                    if c.frequencies.is_some() && c.edges.is_none() {
                        return bad("frequencies need the edges of the bins they belong to");
                    }
                    if let Some(points) = &c.points {
                        if points.iter().any(|p| !p.is_finite())
                            || points.windows(2).any(|w| !(w[0] < w[1]))
                        {
                            return bad("points must be finite and strictly increasing");
                        }
                        if c.edges.is_none() {
                            return bad("points need the edges of the column's bins");
                        }
                    }
                    if c.min.is_some() != c.max.is_some() {
                        return bad("give both min and max, or neither");
                    }
                    if let Some(step) = c.step
                        && !(step.is_finite() && step > 0.0)
                    {
                        return bad("step must be a positive, finite number");
                    }
                    if let (Some(lo), Some(hi)) = (c.min, c.max)
                        && !(lo.is_finite() && hi.is_finite() && lo < hi)
                    {
                        return bad("min must be finite and below max");
                    }
                    if let Some(edges) = &c.edges {
                        if edges.len() < 2
                            || edges.windows(2).any(|w| !(w[0] < w[1]))
                            || edges.iter().any(|e| !e.is_finite())
                        {
                            return bad(
                                "edges must be at least two finite, strictly increasing numbers",
                            );
                        }
                        let points = c.points.as_ref().map_or(0, Vec::len);
                        if c.frequencies
                            .as_ref()
                            .is_some_and(|f| f.len() != edges.len() - 1 + points)
                        {
                            return bad(
                                "give one frequency per bin (one fewer than the edges), then one per point",
                            );
                        }
                        if c.min.is_some_and(|m| m != edges[0])
                            || c.max.is_some_and(|m| m != edges[edges.len() - 1])
                        {
                            return bad("edges must start at min and end at max");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The schema with every open `nullable` set to true: the data-independent choice a
    /// federated job makes (a null slot costs little), where deciding it from the rows would
    /// need a release that every holder agrees on.
    pub fn nullable_by_default(mut self) -> Self {
        for c in self
            .columns
            .iter_mut()
            .filter(|c| c.kind != ColumnKind::Auto)
        {
            c.nullable.get_or_insert(true);
        }
        self
    }

    /// A schema of a typed table's column types (for tests and evaluation, where the types
    /// are given; synthesis decides a CSV's kinds with [`crate::stats::private_kinds`]).
    pub fn infer(table: &Table) -> Self {
        let kinds: Vec<(String, ColumnKind)> = table
            .names
            .iter()
            .zip(&table.columns)
            .map(|(name, data)| {
                let kind = match data {
                    ColumnData::Float(_) => ColumnKind::Continuous,
                    ColumnData::Int(_) => ColumnKind::Integer,
                    ColumnData::Text(_) => ColumnKind::Categorical,
                };
                (name.clone(), kind)
            })
            .collect();
        Self::from_kinds(&kinds)
    }

    /// A schema of names and kinds only: every other fact is left to estimate.
    pub fn from_kinds(kinds: &[(String, ColumnKind)]) -> Self {
        let columns = kinds
            .iter()
            .map(|(name, kind)| ColumnSpec {
                name: name.clone(),
                kind: *kind,
                nullable: None,
                min: None,
                max: None,
                edges: None,
                points: None,
                step: None,
                categories: None,
                frequencies: None,
                source: Source::Public,
                format: None,
                pseudonyms: None,
                nulls: None,
                distinct: None,
                wide: false,
                fractions: false,
            })
            .collect();
        Self {
            version: SCHEMA_VERSION,
            columns,
        }
    }

    /// The columns whose kind is left open ([`ColumnKind::Auto`]).
    pub fn open_kinds(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Auto)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The schema with each column whose kind is open replaced by the entries `decide`
    /// gives for its name (a datetime brings its parts), in order; the others as declared.
    pub fn with_open_kinds(
        &self,
        mut decide: impl FnMut(&str) -> Result<Vec<ColumnSpec>>,
    ) -> Result<Self> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for spec in &self.columns {
            if spec.kind == ColumnKind::Auto {
                columns.extend(decide(&spec.name)?);
            } else {
                columns.push(spec.clone());
            }
        }
        Ok(Self {
            version: self.version,
            columns,
        })
    }

    /// The columns' names and kinds, in order.
    pub fn kinds(&self) -> Vec<(String, ColumnKind)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.kind))
            .collect()
    }

    /// Checks the schema against a table: every column exists with a compatible type. Only
    /// public facts are compared (column names and the file's column types), never values:
    /// a refusal that depended on the rows (a null in a column declared not nullable, a
    /// fraction in a column declared integer) would tell whoever wrote the schema something
    /// about a row for free. Such values are encoded anyway: a null of a column declared not
    /// nullable takes the column's first slot, an integer column's values are rounded.
    pub fn check_against(&self, table: &Table) -> Result<()> {
        for c in &self.columns {
            let Some(data) = table.column(&c.name) else {
                return Err(SynthError::Schema(format!(
                    "column '{}' is not in the input (it has: {})",
                    c.name,
                    table.names.join(", ")
                )));
            };
            if c.kind.is_numeric() && matches!(data, ColumnData::Text(_)) {
                return Err(SynthError::Schema(format!(
                    "column '{}' is declared {:?} but holds {} values",
                    c.name,
                    c.kind,
                    data.type_name()
                )));
            }
        }
        Ok(())
    }
}
