//! Tables in and out: CSV and Parquet through polars, checked on the way in (empty files,
//! no rows, NaN or infinite numbers, mixed-type and all-null columns) and written
//! atomically (or encrypted) on the way out.

use std::borrow::Borrow;
use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::datetime;
use crate::error::{Result, SynthError, column_err};
use crate::schema::ColumnKind;

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

/// First line of a polars error, without its backtrace-like context, and with any value it
/// quotes in backticks elided: an error must never echo a cell of the table.
fn polars_message(e: &PolarsError) -> String {
    let line = e.to_string();
    let line = line.lines().next().unwrap_or("unreadable").trim();
    let mut out = String::with_capacity(line.len());
    for (k, part) in line.split('`').enumerate() {
        if k % 2 == 0 {
            out.push_str(part);
        } else {
            out.push_str("`…`");
        }
    }
    out
}

/// Checks a CSV file's shape before polars reads it: the header names every column once, and
/// every record has as many fields as the header (polars would silently fill a short record
/// with nulls or rename a repeated column). Errors give the record's row number (1 for the
/// first row after the header), never a cell's text. RFC 4180 quoting: fields in double
/// quotes may hold commas, doubled quotes and line breaks.
fn check_csv_shape(path: &Path) -> Result<()> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| input_err(path, format!("cannot read: {e}")))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut buf = vec![0u8; 1 << 16];
    let mut header: Vec<Vec<u8>> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let (mut record, mut fields, mut quoted, mut after_quote) = (0usize, 0usize, false, false);
    let mut line_has_content = false;
    let end_record = |header: &mut Vec<Vec<u8>>,
                      record: &mut usize,
                      fields: usize,
                      field: &mut Vec<u8>|
     -> Result<()> {
        if *record == 0 {
            header.push(std::mem::take(field));
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = header.iter().find(|h| !seen.insert(h.as_slice())) {
                return Err(input_err(
                    path,
                    format!(
                        "the header names column '{}' twice",
                        String::from_utf8_lossy(dup).escape_debug()
                    ),
                ));
            }
        } else if fields != header.len() {
            return Err(input_err(
                path,
                format!(
                    "row {record} has {fields} fields, the header has {}",
                    header.len()
                ),
            ));
        }
        *record += 1;
        Ok(())
    };
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| input_err(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        for &c in &buf[..n] {
            if quoted {
                if c == b'"' {
                    quoted = false;
                    after_quote = true;
                } else if record == 0 {
                    field.push(c);
                }
                continue;
            }
            match c {
                b'"' if after_quote => {
                    // A doubled quote inside a quoted field.
                    quoted = true;
                    after_quote = false;
                    if record == 0 {
                        field.push(c);
                    }
                }
                b'"' => {
                    quoted = true;
                    line_has_content = true;
                }
                b',' => {
                    after_quote = false;
                    line_has_content = true;
                    fields += 1;
                    if record == 0 {
                        header.push(std::mem::take(&mut field));
                    }
                }
                b'\n' => {
                    after_quote = false;
                    if line_has_content {
                        end_record(&mut header, &mut record, fields + 1, &mut field)?;
                    }
                    fields = 0;
                    line_has_content = false;
                }
                b'\r' => {}
                _ => {
                    after_quote = false;
                    line_has_content = true;
                    if record == 0 {
                        field.push(c);
                    }
                }
            }
        }
    }
    if quoted {
        return Err(input_err(path, "a quoted field is never closed"));
    }
    if line_has_content {
        end_record(&mut header, &mut record, fields + 1, &mut field)?;
    }
    Ok(())
}

/// Reads a CSV or Parquet file into a polars frame after the checks every reader shares
/// (a file, not empty, a well-formed CSV shape), with `csv_as_text` reading every CSV column
/// as text; a parser panic on a hostile file becomes one line.
fn read_frame(path: &Path, csv_as_text: bool) -> Result<(DataFrame, Format)> {
    let format = Format::of(path)?;
    let meta = std::fs::metadata(path).map_err(|e| input_err(path, format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(input_err(path, "is a directory, not a file"));
    }
    if meta.len() == 0 {
        return Err(input_err(path, "the file is empty"));
    }
    if format == Format::Csv {
        check_csv_shape(path)?;
    }
    let file = File::open(path).map_err(|e| input_err(path, format!("cannot read: {e}")))?;
    // A parser bug triggered by a hostile file must end as one line, not a panic: the
    // reader runs under catch_unwind, with the panic message silenced meanwhile.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match format {
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(if csv_as_text { Some(0) } else { None })
            .into_reader_with_file_handle(file)
            .finish(),
        Format::Parquet => ParquetReader::new(file).finish(),
    }));
    std::panic::set_hook(hook);
    let df = read
        .map_err(|_| {
            input_err(
                path,
                format!("not a readable {format:?} file (the parser failed)"),
            )
        })?
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
    Ok((df, format))
}

/// The refusal of a column without a single value.
fn all_null(name: &str) -> SynthError {
    column_err(name, "every value is null; drop the column or fill it")
}

/// Reads a CSV or Parquet file, every column typed as polars infers it from its values, and
/// checks that every column is usable. The types are a look at every row: this reader is
/// for evaluation and tests, where the rows stay with their holder. Synthesis reads with
/// [`read_raw`] and decides the kinds of a CSV's columns privately.
pub fn read_table(path: &Path) -> Result<Table> {
    let (df, _) = read_frame(path, false)?;
    let mut names = Vec::with_capacity(df.width());
    let mut columns = Vec::with_capacity(df.width());
    for col in df.columns() {
        let name = col.name().to_string();
        let data = convert(col.as_materialized_series(), &name)?;
        if data.null_count() == data.len() {
            return Err(all_null(&name));
        }
        names.push(name);
        columns.push(data);
    }
    Ok(Table { names, columns })
}

/// A column as read, before its kind is known.
#[derive(Debug, Clone, PartialEq)]
pub enum RawColumn {
    /// A column whose type the file declares (Parquet): public, like the column's name.
    Typed(ColumnData),
    /// A CSV column's cells as text (empty cells are null): its type is a fact about the
    /// rows, decided by a DP release or declared in a schema.
    Cells(Cells),
}

/// A CSV column's cells as text, in polars' compact string array (a large table's cells are
/// not one heap string each); blank cells read as null.
#[derive(Debug, Clone)]
pub struct Cells(StringChunked);

impl PartialEq for Cells {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Cells {
    /// The cells in order, `None` for an empty or blank one.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.0.iter().map(|c| c.filter(|s| !s.trim().is_empty()))
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<Option<S>> for Cells {
    fn from_iter<I: IntoIterator<Item = Option<S>>>(cells: I) -> Self {
        Self(cells.into_iter().collect())
    }
}

/// What a cell of a CSV column holds, as far as typing goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// Empty (or only spaces).
    Null,
    /// A finite number.
    Number(f64),
    /// Anything else.
    Text,
}

impl Cell {
    /// Classifies one cell: a finite number (`12`, `-3.5`, `1e6`), text, or null.
    pub fn of(cell: Option<&str>) -> Self {
        let Some(s) = cell.map(str::trim).filter(|s| !s.is_empty()) else {
            return Self::Null;
        };
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Self::Number(v),
            _ => Self::Text,
        }
    }
}

/// A table as read, before the kinds of its CSV columns are decided: names and column
/// values, with the file's types only where the file declares them (Parquet). Nothing here
/// looked at a value to choose a type.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTable {
    /// Column names, in file order.
    pub names: Vec<String>,
    /// Column values.
    pub columns: Vec<RawColumn>,
}

/// Reads a CSV or Parquet file for synthesis: CSV columns as text cells (their kinds are
/// decided later, privately or by a schema), Parquet columns with the types the file
/// declares. Refused: what [`read_table`] refuses for its shape, and a column without a
/// single value. These refusals go to the data's holder only, before any job. In a column
/// typed as numbers, a cell that is not a finite number (`NA`, `n/a`, `NaN`, `inf`, text)
/// is a missing value (see [`RawTable::typed`]).
pub fn read_raw(path: &Path) -> Result<RawTable> {
    let (df, format) = read_frame(path, true)?;
    let mut names = Vec::with_capacity(df.width());
    let mut columns = Vec::with_capacity(df.width());
    for col in df.columns() {
        let name = col.name().to_string();
        let series = col.as_materialized_series();
        let column = match (format, series.dtype()) {
            (Format::Csv, DataType::String) => {
                let ca = series
                    .str()
                    .map_err(|e| column_err(&name, polars_message(&e)))?;
                RawColumn::Cells(Cells(ca.clone()))
            }
            // A Parquet date or timestamp: its text, read like a CSV's (the pattern and the
            // time-of-day unit are decided with the other kinds).
            (Format::Parquet, DataType::Date | DataType::Datetime(..)) => {
                let text = series
                    .cast(&DataType::String)
                    .map_err(|e| column_err(&name, polars_message(&e)))?;
                let ca = text
                    .str()
                    .map_err(|e| column_err(&name, polars_message(&e)))?;
                RawColumn::Cells(Cells(ca.clone()))
            }
            // An all-empty CSV column has no type at all.
            (Format::Csv, DataType::Null) => {
                RawColumn::Cells(std::iter::repeat_n(None::<&str>, series.len()).collect())
            }
            _ => RawColumn::Typed(convert(series, &name)?),
        };
        let nulls = match &column {
            RawColumn::Cells(c) => c.iter().filter(|v| v.is_none()).count(),
            RawColumn::Typed(d) => d.null_count(),
        };
        if nulls == series.len() {
            return Err(all_null(&name));
        }
        names.push(name);
        columns.push(column);
    }
    Ok(RawTable { names, columns })
}

impl RawTable {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match self.columns.first() {
            Some(RawColumn::Typed(d)) => d.len(),
            Some(RawColumn::Cells(c)) => c.len(),
            None => 0,
        }
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&RawColumn> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
    }

    /// The numeric columns among `kinds` in which some cell is neither empty nor a finite
    /// number, and so is read as missing: for the holder's own eyes (its terminal or log),
    /// never for a job's owner.
    pub fn non_numbers(&self, kinds: &[(String, ColumnKind)]) -> Vec<String> {
        kinds
            .iter()
            .filter(|(_, kind)| kind.is_numeric())
            .filter(|(name, kind)| match self.column(name) {
                Some(RawColumn::Cells(cells)) if *kind == ColumnKind::Datetime => cells
                    .iter()
                    .any(|c| c.is_some_and(|c| crate::datetime::seconds(c).is_none())),
                Some(RawColumn::Cells(cells)) => cells.iter().any(|c| Cell::of(c) == Cell::Text),
                _ => false,
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The table typed as `kinds` say, one `(name, kind)` per column to keep, in that order.
    /// Numeric columns take the cells that are numbers (integer columns rounded), the rest of
    /// their cells become null; categorical columns keep every cell's text. Nothing is refused
    /// for a value: a typing that depended on the rows would tell whoever chose the kinds
    /// about a row. A declared (Parquet) text column cannot be numeric: that is public, and
    /// refused.
    pub fn typed(&self, kinds: &[(String, ColumnKind)]) -> Result<Table> {
        let mut columns: Vec<Option<&RawColumn>> = self.columns.iter().map(Some).collect();
        typed_columns(&self.names, &mut columns, kinds)
    }

    /// [`RawTable::typed`], each column's cells dropped as soon as the last kind read from
    /// it is typed: memory holds the typed table and the cells not yet typed, never the
    /// whole of both (a large table's text cells weigh about as much as its typed values).
    pub fn into_typed(self, kinds: &[(String, ColumnKind)]) -> Result<Table> {
        let mut columns: Vec<Option<RawColumn>> = self.columns.into_iter().map(Some).collect();
        typed_columns(&self.names, &mut columns, kinds)
    }
}

/// The raw column a kind of [`RawTable::typed`] reads: its own, or the column a datetime
/// part is derived from.
fn source_of(names: &[String], name: &str) -> Option<usize> {
    names.iter().position(|n| n == name).or_else(|| {
        let (base, _) = crate::datetime::part_of(name)?;
        names.iter().position(|n| n == base)
    })
}

/// [`RawTable::typed`] over `columns` (of `names`), each set to `None` once no later kind
/// reads it (dropping it where the slots own their columns).
fn typed_columns<C: Borrow<RawColumn>>(
    names: &[String],
    columns: &mut [Option<C>],
    kinds: &[(String, ColumnKind)],
) -> Result<Table> {
    // The last kind that reads each column; a column no kind reads goes first.
    let mut last_use = vec![None; columns.len()];
    for (k, (name, _)) in kinds.iter().enumerate() {
        if let Some(j) = source_of(names, name) {
            last_use[j] = Some(k);
        }
    }
    for (slot, last) in columns.iter_mut().zip(&last_use) {
        if last.is_none() {
            *slot = None;
        }
    }
    // A column of `names` not yet dropped.
    fn present<'a, C: Borrow<RawColumn>>(
        names: &[String],
        columns: &'a [Option<C>],
        name: &str,
    ) -> Option<&'a RawColumn> {
        let j = names.iter().position(|n| n == name)?;
        columns[j].as_ref().map(Borrow::borrow)
    }
    let column = |columns: &[Option<C>], name: &str| present(names, columns, name).is_some();
    let mut out_names = Vec::with_capacity(kinds.len());
    let mut out = Vec::with_capacity(kinds.len());
    // A datetime column's cells are parsed once for the column and all its parts.
    let mut times = Times::default();
    for (k, (name, kind)) in kinds.iter().enumerate() {
        if name == crate::nulls::PATTERN && !column(columns, name) {
            continue; // derived after the schema is complete (crate::nulls::with_pattern)
        }
        let data = if !column(columns, name)
            && let Some((base, part)) = crate::datetime::part_of(name)
            && let Some(raw) = present(names, columns, base)
        {
            datetime_part(times.of(base, raw), part)
        } else {
            let raw = present(names, columns, name).ok_or_else(|| {
                SynthError::Schema(format!(
                    "column '{name}' is not in the input (it has: {})",
                    names.join(", ")
                ))
            })?;
            typed_column(name, *kind, raw, &mut times)?
        };
        out_names.push(name.clone());
        out.push(data);
        for (slot, last) in columns.iter_mut().zip(&last_use) {
            if *last == Some(k) {
                *slot = None;
            }
        }
    }
    Ok(Table {
        names: out_names,
        columns: out,
    })
}

/// The times of the datetime columns typed so far, each parsed once for the column and all
/// its parts.
#[derive(Default)]
struct Times(std::collections::HashMap<String, Vec<Option<i64>>>);

impl Times {
    /// The seconds of column `name` (cells `raw`), parsed on the first call.
    fn of(&mut self, name: &str, raw: &RawColumn) -> &[Option<i64>] {
        self.0.entry(name.to_string()).or_insert_with(|| match raw {
            RawColumn::Cells(cells) => cells
                .iter()
                .map(|c| c.and_then(crate::datetime::seconds))
                .collect(),
            RawColumn::Typed(d) => vec![None; d.len()],
        })
    }
}

/// One column typed as `kind` (see [`RawTable::typed`]).
fn typed_column(
    name: &str,
    kind: ColumnKind,
    raw: &RawColumn,
    times: &mut Times,
) -> Result<ColumnData> {
    let numeric = kind.is_numeric();
    let integer = kind == ColumnKind::Integer;
    Ok(match raw {
        RawColumn::Cells(_) if kind == ColumnKind::Datetime => ColumnData::Int(
            times
                .of(name, raw)
                .iter()
                .map(|s| s.map(crate::datetime::day))
                .collect(),
        ),
        RawColumn::Typed(_) if kind == ColumnKind::Datetime => {
            return Err(SynthError::Schema(format!(
                "column '{name}' is declared datetime but the file types it as numbers"
            )));
        }
        RawColumn::Cells(cells) if numeric => {
            let numbers = cells.iter().map(|c| match Cell::of(c) {
                Cell::Number(v) => Some(v),
                Cell::Null | Cell::Text => None,
            });
            if integer {
                ColumnData::Int(numbers.map(|v| v.and_then(round_to_i64)).collect())
            } else {
                ColumnData::Float(numbers.collect())
            }
        }
        RawColumn::Cells(cells) => {
            ColumnData::Text(cells.iter().map(|c| c.map(str::to_string)).collect())
        }
        RawColumn::Typed(ColumnData::Text(_)) if numeric => {
            return Err(SynthError::Schema(format!(
                "column '{name}' is declared {kind:?} but the file types it as text"
            )));
        }
        RawColumn::Typed(ColumnData::Float(v)) if integer => {
            ColumnData::Int(v.iter().map(|x| x.and_then(round_to_i64)).collect())
        }
        RawColumn::Typed(ColumnData::Int(v)) if numeric && !integer => {
            ColumnData::Float(v.iter().map(|x| x.map(|x| x as f64)).collect())
        }
        RawColumn::Typed(d) => d.clone(),
    })
}

/// A datetime column's derived part (see [`crate::datetime`]), from its cells' times; a
/// cell that is not a datetime is null.
fn datetime_part(seconds: &[Option<i64>], part: crate::datetime::Part) -> ColumnData {
    use crate::datetime::ColumnValue;
    let values = seconds.iter().map(|s| s.map(|s| part.value(s)));
    match part {
        crate::datetime::Part::Weekday => ColumnData::Text(
            values
                .map(|v| match v {
                    Some(ColumnValue::Text(t)) => Some(t.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        _ => ColumnData::Int(
            values
                .map(|v| match v {
                    Some(ColumnValue::Int(x)) => Some(x),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// `v` rounded to the nearest integer, if an `i64` holds it.
fn round_to_i64(v: f64) -> Option<i64> {
    let r = v.round();
    (r.abs() < 9.0e18).then_some(r as i64)
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
        DataType::Null => Err(all_null(name)),
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
        return Err(column_err(
            name,
            format!(
                "mixed types: mostly numbers, but row {} holds text (NaN, inf and text are not numbers)",
                row + 1
            ),
        ));
    }
    Ok(())
}

fn to_dataframe(table: &Table) -> Result<DataFrame> {
    to_dataframe_typed(table, &[])
}

/// [`to_dataframe`] with the text columns named in `temporal` as dates or timestamps of the
/// given polars type (their cells in a [`crate::datetime::PATTERNS`] pattern; a cell in none
/// is a null).
fn to_dataframe_typed(table: &Table, temporal: &[(String, DataType)]) -> Result<DataFrame> {
    let cols = table
        .names
        .iter()
        .zip(&table.columns)
        .map(|(n, c)| {
            let name = PlSmallStr::from_str(n);
            let dtype = temporal.iter().find(|(t, _)| t == n).map(|(_, d)| d);
            let series = match (c, dtype) {
                (ColumnData::Text(v), Some(DataType::Date)) => {
                    let days: Vec<Option<i32>> = v
                        .iter()
                        .map(|s| {
                            let secs = datetime::seconds(s.as_deref()?)?;
                            i32::try_from(secs.div_euclid(86_400)).ok()
                        })
                        .collect();
                    Series::new(name, days).cast(&DataType::Date)
                }
                (ColumnData::Text(v), Some(dtype @ DataType::Datetime(unit, _))) => {
                    let per_second = match unit {
                        TimeUnit::Milliseconds => 1_000,
                        TimeUnit::Microseconds => 1_000_000,
                        TimeUnit::Nanoseconds => 1_000_000_000,
                    };
                    let ticks: Vec<Option<i64>> = v
                        .iter()
                        .map(|s| datetime::seconds(s.as_deref()?)?.checked_mul(per_second))
                        .collect();
                    Series::new(name, ticks).cast(dtype)
                }
                (ColumnData::Float(v), _) => Ok(Series::new(name, v)),
                (ColumnData::Int(v), _) => Ok(Series::new(name, v)),
                (ColumnData::Text(v), _) => Ok(Series::new(name, v)),
            };
            series
                .map(IntoColumn::into_column)
                .map_err(|e| column_err(n, polars_message(&e)))
        })
        .collect::<Result<Vec<Column>>>()?;
    DataFrame::new(table.rows(), cols).map_err(|e| SynthError::Setting(polars_message(&e)))
}

/// The polars type a datetime column in `pattern` (one of [`crate::datetime::PATTERNS`])
/// is written as to a Parquet file: a date, or a timestamp in microseconds, in UTC when the
/// pattern carries a zone (the values are instants) and naive otherwise (wall clocks).
pub fn temporal_type(pattern: &str) -> Option<DataType> {
    let p = datetime::PATTERNS.iter().position(|q| *q == pattern)?;
    Some(if datetime::is_date(p) {
        DataType::Date
    } else if pattern.ends_with('Z') || pattern.ends_with("%:z") {
        DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
    } else {
        DataType::Datetime(TimeUnit::Microseconds, None)
    })
}

/// The dates and timestamps a synthetic table writes to Parquet: each datetime column of
/// `schema` as the input declared it (`declared`, from [`declared_temporal`]), else as the
/// type its pattern reads as ([`temporal_type`]).
pub fn output_temporal(
    schema: &crate::schema::Schema,
    declared: &[(String, DataType)],
) -> Vec<(String, DataType)> {
    schema
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Datetime)
        .filter_map(|c| {
            let dtype = declared
                .iter()
                .find(|(n, _)| *n == c.name)
                .map(|(_, d)| d.clone())
                .or_else(|| temporal_type(c.format.as_deref()?))?;
            Some((c.name.clone(), dtype))
        })
        .collect()
}

/// The date and timestamp columns a Parquet file declares, with their polars types (public,
/// like its column names): a synthetic table written to Parquet gives them back the same
/// types. Nothing for a CSV file.
pub fn declared_temporal(path: &Path) -> Result<Vec<(String, DataType)>> {
    if Format::of(path)? != Format::Parquet {
        return Ok(vec![]);
    }
    let file = File::open(path)
        .map_err(|e| SynthError::Setting(format!("cannot read {}: {e}", path.display())))?;
    let schema = ParquetReader::new(file)
        .schema()
        .map_err(|e| SynthError::Setting(polars_message(&e)))?;
    Ok(schema
        .iter_values()
        .filter_map(|f| {
            let dtype = DataType::from_arrow_field(f);
            matches!(dtype, DataType::Date | DataType::Datetime(..))
                .then(|| (f.name.to_string(), dtype))
        })
        .collect())
}

/// Whether a text cell would be read as a formula by a spreadsheet: it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return.
pub fn looks_like_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A table whose text cells that look like formulas are prefixed with `'`, the spreadsheet
/// convention for "this is text": a synthetic table reproduces real categories, and a
/// category such as `=HYPERLINK(…)` must not run when a recipient opens the CSV. Number
/// columns are untouched (a negative number is a number).
fn defuse_formulas(table: &Table) -> std::borrow::Cow<'_, Table> {
    let risky = |c: &ColumnData| match c {
        ColumnData::Text(v) => v.iter().flatten().any(|s| looks_like_formula(s)),
        _ => false,
    };
    if !table.columns.iter().any(risky) {
        return std::borrow::Cow::Borrowed(table);
    }
    let columns = table
        .columns
        .iter()
        .map(|c| match c {
            ColumnData::Text(v) => ColumnData::Text(
                v.iter()
                    .map(|s| {
                        s.as_ref().map(|s| {
                            if looks_like_formula(s) {
                                format!("'{s}")
                            } else {
                                s.clone()
                            }
                        })
                    })
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect();
    std::borrow::Cow::Owned(Table {
        names: table.names.clone(),
        columns,
    })
}

/// Writes a table block by block, so that memory holds one block: CSV (the header once,
/// text cells that look like formulas defused, see [`looks_like_formula`]) or Parquet (row
/// groups of at most [`ROW_GROUP`] rows).
pub struct BlockWriter<W: std::io::Write> {
    state: Sink<W>,
    /// Text columns written to Parquet as dates or timestamps (see [`Self::with_temporal`]).
    temporal: Vec<(String, DataType)>,
}

/// Where a [`BlockWriter`] stands.
enum Sink<W: std::io::Write> {
    /// CSV, and whether the header is out.
    Csv(W, bool),
    /// Parquet before the first block (the schema comes with it).
    Parquet(ParquetWriter<W>),
    /// Parquet after the first block.
    Batched(polars::io::parquet::write::BatchedWriter<W>),
    /// Between a failed first Parquet block and the writer's end.
    Spent,
}

/// Rows per Parquet row group at most (polars' own default).
pub const ROW_GROUP: usize = 512 * 512;

fn write_err(e: &PolarsError) -> SynthError {
    SynthError::Setting(format!("cannot serialise the table: {}", polars_message(e)))
}

impl<W: std::io::Write> BlockWriter<W> {
    /// A writer of `format` into `out`.
    pub fn new(out: W, format: Format) -> Self {
        let state = match format {
            Format::Csv => Sink::Csv(out, false),
            Format::Parquet => Sink::Parquet(ParquetWriter::new(out)),
        };
        Self {
            state,
            temporal: vec![],
        }
    }

    /// Writes the named text columns (datetimes in one of [`crate::datetime::PATTERNS`]) to
    /// Parquet as these polars types (see [`temporal_type`], [`declared_temporal`]); a CSV
    /// keeps their text.
    pub fn with_temporal(mut self, temporal: Vec<(String, DataType)>) -> Self {
        self.temporal = temporal;
        self
    }

    /// Appends the rows of `table` (every block has the same columns and types).
    pub fn write(&mut self, table: &Table) -> Result<()> {
        if let Sink::Csv(out, header_written) = &mut self.state {
            let mut df = to_dataframe(&defuse_formulas(table))?;
            CsvWriter::new(out)
                .include_header(!*header_written)
                .finish(&mut df)
                .map_err(|e| write_err(&e))?;
            *header_written = true;
            return Ok(());
        }
        let df = to_dataframe_typed(table, &self.temporal)?;
        if matches!(self.state, Sink::Parquet(_))
            && let Sink::Parquet(writer) = std::mem::replace(&mut self.state, Sink::Spent)
        {
            self.state = Sink::Batched(writer.batched(df.schema()).map_err(|e| write_err(&e))?);
        }
        let Sink::Batched(batched) = &mut self.state else {
            return Err(SynthError::Setting(
                "the Parquet writer failed earlier".into(),
            ));
        };
        for start in (0..df.height()).step_by(ROW_GROUP) {
            let group = df.slice(start as i64, ROW_GROUP);
            batched.write_batch(&group).map_err(|e| write_err(&e))?;
        }
        Ok(())
    }

    /// Ends the file (a Parquet footer; a CSV of no block is just no bytes) and flushes it.
    pub fn finish(self) -> Result<()> {
        match self.state {
            Sink::Csv(mut out, _) => out
                .flush()
                .map_err(|e| SynthError::Setting(format!("cannot write the table: {e}"))),
            Sink::Batched(batched) => batched.finish().map(drop).map_err(|e| write_err(&e)),
            Sink::Parquet(_) | Sink::Spent => Ok(()),
        }
    }
}

/// Serialises a table to bytes in the given format: one block of a [`BlockWriter`] (CSV
/// text cells that a spreadsheet would run as formulas are written as text; Parquet keeps
/// values as they are).
pub fn table_bytes(table: &Table, format: Format) -> Result<Vec<u8>> {
    table_bytes_typed(table, format, vec![])
}

/// [`table_bytes`] with datetime columns written to Parquet as dates or timestamps (see
/// [`BlockWriter::with_temporal`]).
pub fn table_bytes_typed(
    table: &Table,
    format: Format,
    temporal: Vec<(String, DataType)>,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut writer = BlockWriter::new(&mut buf, format).with_temporal(temporal);
    writer.write(table)?;
    writer.finish()?;
    Ok(buf)
}
