//! Meaningful nulls: which columns are null together.
//!
//! A null often means something about the row (a cancelled flight has no departure time, no
//! arrival time and no delay), so the columns' null shares are not independent. A schema may
//! carry the derived categorical column [`PATTERN`] (`#nulls`), one category per *pattern*:
//! the nullable columns that are null in a row, joined by `+` (`-` for none). Its
//! categories are found by DP category discovery like any other column's, so only patterns
//! frequent enough are ever released, and the model learns the pattern jointly with the
//! other columns. When generating, a column in a released pattern gets its nulls from the
//! pattern only (its own null slot is not sampled): a row takes the nulls of the pattern
//! generated for it, so cancelled flights lose their times together.
//!
//! Without a schema, fedsynth adds the column to every table of at least two columns.

use crate::schema::{ColumnKind, Schema};
use crate::table::{ColumnData, Table};

/// The name of the null-pattern column.
pub const PATTERN: &str = "#nulls";

/// The pattern of a row with no null.
pub const NONE: &str = "-";

/// The separator of a pattern's column names.
pub const SEP: char = '+';

/// Whether `schema` models null patterns.
pub fn has_pattern(schema: &Schema) -> bool {
    schema.columns.iter().any(|c| c.name == PATTERN)
}

/// The spec of the pattern column, its categories to be discovered.
pub fn pattern_spec() -> crate::schema::ColumnSpec {
    let mut spec = Schema::from_kinds(&[(PATTERN.to_string(), ColumnKind::Categorical)])
        .columns
        .remove(0);
    spec.nullable = Some(false);
    spec
}

/// Each row's pattern over `members` (the nullable columns, in schema order).
pub fn pattern_values(table: &Table, members: &[String]) -> Vec<Option<String>> {
    let columns: Vec<(&str, &ColumnData)> = members
        .iter()
        .filter_map(|m| Some((m.as_str(), table.column(m)?)))
        .collect();
    (0..table.rows())
        .map(|r| {
            let null: Vec<&str> = columns
                .iter()
                .filter(|(_, c)| is_null(c, r))
                .map(|(n, _)| *n)
                .collect();
            Some(if null.is_empty() {
                NONE.to_string()
            } else {
                null.join(&SEP.to_string())
            })
        })
        .collect()
}

fn is_null(c: &ColumnData, r: usize) -> bool {
    match c {
        ColumnData::Float(v) => v[r].is_none(),
        ColumnData::Int(v) => v[r].is_none(),
        ColumnData::Text(v) => v[r].is_none(),
    }
}

/// The columns a completed schema's pattern covers: those that may be null.
pub fn members(schema: &Schema) -> Vec<String> {
    schema
        .columns
        .iter()
        .filter(|c| c.name != PATTERN && c.nullable.unwrap_or(true))
        .map(|c| c.name.clone())
        .collect()
}

/// `table` with the pattern column of `schema` appended (when it has one): what the
/// encoder reads.
pub fn with_pattern(mut table: Table, schema: &Schema) -> Table {
    if has_pattern(schema) && table.column(PATTERN).is_none() {
        let values = pattern_values(&table, &members(schema));
        table.names.push(PATTERN.to_string());
        table.columns.push(ColumnData::Text(values));
    }
    table
}

/// The columns named by a pattern category.
pub fn parse(pattern: &str) -> Vec<&str> {
    if pattern == NONE {
        return vec![];
    }
    pattern.split(SEP).collect()
}

/// A decoded table with each row's pattern applied (its columns made null) and the pattern
/// column removed.
pub fn apply(mut table: Table) -> Table {
    let Some(p) = table.names.iter().position(|n| n == PATTERN) else {
        return table;
    };
    let patterns = table.columns.remove(p);
    table.names.remove(p);
    let ColumnData::Text(patterns) = patterns else {
        return table;
    };
    let index: std::collections::HashMap<&str, usize> = table
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut nulls: Vec<Vec<usize>> = vec![Vec::new(); table.names.len()];
    for (r, pattern) in patterns.iter().enumerate() {
        for name in pattern.as_deref().map(parse).unwrap_or_default() {
            if let Some(&c) = index.get(name) {
                nulls[c].push(r);
            }
        }
    }
    for (c, rows) in nulls.into_iter().enumerate() {
        for r in rows {
            match &mut table.columns[c] {
                ColumnData::Float(v) => v[r] = None,
                ColumnData::Int(v) => v[r] = None,
                ColumnData::Text(v) => v[r] = None,
            }
        }
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_the_null_columns_and_apply_back() {
        let table = Table {
            names: vec!["a".into(), "b".into(), "c".into()],
            columns: vec![
                ColumnData::Int(vec![Some(1), None, None]),
                ColumnData::Text(vec![Some("x".into()), None, Some("y".into())]),
                ColumnData::Float(vec![Some(1.0), Some(2.0), None]),
            ],
        };
        let members = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            pattern_values(&table, &members),
            vec![Some("-".into()), Some("a+b".into()), Some("a+c".into())]
        );
        let generated = Table {
            names: vec!["a".into(), "b".into(), PATTERN.into()],
            columns: vec![
                ColumnData::Int(vec![Some(1), Some(2), Some(3)]),
                ColumnData::Text(vec![Some("x".into()), Some("y".into()), None]),
                ColumnData::Text(vec![Some("a+b".into()), Some("-".into()), Some("b".into())]),
            ],
        };
        let applied = apply(generated);
        assert_eq!(applied.names, vec!["a", "b"]);
        assert_eq!(
            applied.columns[0],
            ColumnData::Int(vec![None, Some(2), Some(3)])
        );
        assert_eq!(
            applied.columns[1],
            ColumnData::Text(vec![None, Some("y".into()), None])
        );
    }
}
