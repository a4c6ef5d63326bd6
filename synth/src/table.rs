//! Tables in and out: CSV and Parquet through polars, checked on the way in (empty files,
//! no rows, NaN or infinite numbers, mixed-type and all-null columns) and written
//! atomically (or encrypted) on the way out.

use std::fs::File;
use std::io::Cursor;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Result, SynthError, column_err};

/// The values of one column, with nulls.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// Floating-point numbers (never NaN or infinite).
    Float(Vec<Option<f64>>),
    /// Integers.
    Int(Vec<Option<i64>>),
    /// Text (strings and booleans).
    Text(Vec<Option<String>>),
}

impl ColumnData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Self::Float(v) => v.len(),
            Self::Int(v) => v.len(),
            Self::Text(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of nulls.
    pub fn null_count(&self) -> usize {
        match self {
            Self::Float(v) => v.iter().filter(|x| x.is_none()).count(),
            Self::Int(v) => v.iter().filter(|x| x.is_none()).count(),
            Self::Text(v) => v.iter().filter(|x| x.is_none()).count(),
        }
    }

    /// Value `i` as a number, if numeric and present.
    pub fn number(&self, i: usize) -> Option<f64> {
        match self {
            Self::Float(v) => v[i],
            Self::Int(v) => v[i].map(|x| x as f64),
            Self::Text(_) => None,
        }
    }

    /// A short name of the type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Float(_) => "float",
            Self::Int(_) => "integer",
            Self::Text(_) => "text",
        }
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names, in file order.
    pub names: Vec<String>,
    /// Column values.
    pub columns: Vec<ColumnData>,
}

impl Table {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, ColumnData::len)
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnData> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
    }
}

/// The file formats fedsynth reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format named by a path's extension (`.csv`, `.parquet`, `.pq`).
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(Self::Csv),
            Some("parquet" | "pq") => Ok(Self::Parquet),
            _ => Err(SynthError::Input {
                path: path.display().to_string(),
                message: "unsupported file type: expected a .csv or .parquet file".into(),
            }),
        }
    }
}

fn input_err(path: &Path, message: impl Into<String>) -> SynthError {
    SynthError::Input {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// First line of a polars error, without its backtrace-like context.
fn polars_message(e: &PolarsError) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("unreadable")
        .trim()
        .to_string()
}

/// Reads a CSV or Parquet file and checks that every column is usable.
pub fn read_table(path: &Path) -> Result<Table> {
    let format = Format::of(path)?;
    let meta = std::fs::metadata(path).map_err(|e| input_err(path, format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(input_err(path, "is a directory, not a file"));
    }
    if meta.len() == 0 {
        return Err(input_err(path, "the file is empty"));
    }
    let df = match format {
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish()),
        Format::Parquet => {
            let file =
                File::open(path).map_err(|e| input_err(path, format!("cannot read: {e}")))?;
            ParquetReader::new(file).finish()
        }
    }
    .map_err(|e| {
        input_err(
            path,
            format!("not a readable {format:?} file: {}", polars_message(&e)),
        )
    })?;
    if df.width() == 0 {
        return Err(input_err(path, "the file has no columns"));
    }
    if df.height() == 0 {
        return Err(input_err(path, "the file has a header but no rows"));
    }
    let mut names = Vec::with_capacity(df.width());
    let mut columns = Vec::with_capacity(df.width());
    for col in df.columns() {
        let name = col.name().to_string();
        let data = convert(col.as_materialized_series(), &name)?;
        if data.null_count() == data.len() {
            return Err(column_err(
                &name,
                "every value is null; drop the column or fill it",
            ));
        }
        names.push(name);
        columns.push(data);
    }
    Ok(Table { names, columns })
}

fn convert(s: &Series, name: &str) -> Result<ColumnData> {
    let dtype = s.dtype().clone();
    if dtype.is_float() {
        let ca = s
            .cast(&DataType::Float64)
            .map_err(|e| column_err(name, polars_message(&e)))?;
        let values: Vec<Option<f64>> = ca
            .f64()
            .map_err(|e| column_err(name, polars_message(&e)))?
            .iter()
            .collect();
        if let Some(row) = values
            .iter()
            .position(|v| v.is_some_and(|x| !x.is_finite()))
        {
            return Err(column_err(
                name,
                format!(
                    "row {}: {} is not a finite number",
                    row + 1,
                    values[row].unwrap_or_default()
                ),
            ));
        }
        return Ok(ColumnData::Float(values));
    }
    if dtype.is_integer() {
        let ca = s
            .cast(&DataType::Int64)
            .map_err(|e| column_err(name, polars_message(&e)))?;
        let values = ca
            .i64()
            .map_err(|e| column_err(name, polars_message(&e)))?
            .iter()
            .collect();
        return Ok(ColumnData::Int(values));
    }
    match dtype {
        DataType::Boolean => {
            let ca = s.bool().map_err(|e| column_err(name, polars_message(&e)))?;
            Ok(ColumnData::Text(
                ca.iter().map(|v| v.map(|b| b.to_string())).collect(),
            ))
        }
        DataType::String => {
            let ca = s.str().map_err(|e| column_err(name, polars_message(&e)))?;
            let values: Vec<Option<String>> = ca.iter().map(|v| v.map(str::to_string)).collect();
            check_not_mixed(name, &values)?;
            Ok(ColumnData::Text(values))
        }
        DataType::Null => Err(column_err(
            name,
            "every value is null; drop the column or fill it",
        )),
        other => Err(column_err(
            name,
            format!("type {other} is not supported (use numbers, text or booleans)"),
        )),
    }
}

/// A text column whose values are mostly numbers, with some text, is almost always a data
/// error (a stray "n/a", "NaN" or "inf"): refuse it instead of treating numbers as categories.
fn check_not_mixed(name: &str, values: &[Option<String>]) -> Result<()> {
    let present: Vec<&str> = values
        .iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let is_number = |s: &str| s.parse::<f64>().is_ok_and(f64::is_finite);
    let numeric = present.iter().filter(|s| is_number(s)).count();
    if numeric * 2 >= present.len() && numeric < present.len() {
        let row = values
            .iter()
            .position(|v| {
                v.as_deref()
                    .is_some_and(|s| !s.trim().is_empty() && !is_number(s.trim()))
            })
            .unwrap_or(0);
        let bad = values[row].as_deref().unwrap_or("");
        return Err(column_err(
            name,
            format!(
                "mixed types: mostly numbers, but row {} holds '{bad}' (NaN, inf and text are not numbers)",
                row + 1
            ),
        ));
    }
    Ok(())
}

fn to_dataframe(table: &Table) -> Result<DataFrame> {
    let cols: Vec<Column> = table
        .names
        .iter()
        .zip(&table.columns)
        .map(|(n, c)| {
            let name = PlSmallStr::from_str(n);
            match c {
                ColumnData::Float(v) => Series::new(name, v),
                ColumnData::Int(v) => Series::new(name, v),
                ColumnData::Text(v) => Series::new(name, v),
            }
            .into_column()
        })
        .collect();
    DataFrame::new(table.rows(), cols).map_err(|e| SynthError::Setting(polars_message(&e)))
}

/// Serialises a table to bytes in the given format.
pub fn table_bytes(table: &Table, format: Format) -> Result<Vec<u8>> {
    let mut df = to_dataframe(table)?;
    let mut buf = Cursor::new(Vec::new());
    match format {
        Format::Csv => CsvWriter::new(&mut buf)
            .include_header(true)
            .finish(&mut df),
        Format::Parquet => ParquetWriter::new(&mut buf).finish(&mut df).map(|_| ()),
    }
    .map_err(|e| {
        SynthError::Setting(format!(
            "cannot serialise the table: {}",
            polars_message(&e)
        ))
    })?;
    Ok(buf.into_inner())
}
