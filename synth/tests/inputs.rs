//! Inputs a peer or a user controls: schema checks that never depend on the rows, schemas
//! that are refused, CSV files of the wrong shape, and output cells that a spreadsheet would
//! run.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use fedsynth_synth::schema::Schema;
use fedsynth_synth::table::{ColumnData, Format, Table, read_table, table_bytes};

fn table() -> Table {
    Table {
        names: vec!["x".into(), "n".into(), "c".into()],
        columns: vec![
            ColumnData::Float(vec![Some(1.5), None, Some(2.0)]),
            ColumnData::Int(vec![Some(1), Some(2), None]),
            ColumnData::Text(vec![Some("a".into()), None, Some("b".into())]),
        ],
    }
}

#[test]
fn a_schema_check_compares_names_and_types_never_values() {
    // A null in a column declared not nullable and a fraction in a column declared integer
    // are values: refusing on them would tell the schema's author about a row.
    let schema = Schema::from_toml(
        "version = 1\n\
         [[columns]]\nname = \"x\"\nkind = \"integer\"\nnullable = false\n\
         [[columns]]\nname = \"n\"\nkind = \"integer\"\nnullable = false\n\
         [[columns]]\nname = \"c\"\nkind = \"categorical\"\nnullable = false\n",
    )
    .unwrap();
    schema.check_against(&table()).unwrap();
    // Names and types are public: those are still checked.
    let wrong =
        Schema::from_toml("version = 1\n[[columns]]\nname = \"c\"\nkind = \"continuous\"\n")
            .unwrap();
    assert!(wrong.check_against(&table()).is_err());
    let missing =
        Schema::from_toml("version = 1\n[[columns]]\nname = \"zz\"\nkind = \"continuous\"\n")
            .unwrap();
    assert!(missing.check_against(&table()).is_err());
}

#[test]
fn a_schema_with_a_category_twice_is_refused() {
    let e = Schema::from_toml(
        "version = 1\n[[columns]]\nname = \"c\"\nkind = \"categorical\"\ncategories = [\"a\", \"b\", \"a\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("appears twice"), "{e}");
}

fn csv(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn a_csv_of_the_wrong_shape_is_refused_with_its_row_number() {
    let (_d, p) = csv("a,b,a\n1,2,3\n");
    let e = read_table(&p).unwrap_err().to_string();
    assert!(e.contains("'a' twice"), "{e}");
    let (_d, p) = csv("a,b,c\n1,2,3\n4,5\n6,7,8\n");
    let e = read_table(&p).unwrap_err().to_string();
    assert!(e.contains("row 2 has 2 fields, the header has 3"), "{e}");
    let (_d, p) = csv("a,b\n1,2\n3,4,5\n");
    let e = read_table(&p).unwrap_err().to_string();
    assert!(e.contains("row 2 has 3 fields"), "{e}");
    let (_d, p) = csv("a,b\n1,\"x\n");
    assert!(
        read_table(&p)
            .unwrap_err()
            .to_string()
            .contains("never closed")
    );
    // Quoted commas, doubled quotes, line breaks in quotes, CRLF and a last line without a
    // newline are one field each.
    let (_d, p) = csv("a,b\r\n\"x,y\",1\r\n\"say \"\"hi\"\"\",2\r\n\"two\nlines\",3");
    let t = read_table(&p).unwrap();
    assert_eq!(t.rows(), 3);
}

#[test]
fn errors_never_echo_a_cell() {
    let mut text = String::from("v\n");
    for i in 0..50 {
        text.push_str(&format!("{i}\n"));
    }
    text.push_str("secret-diagnosis-HIV\n");
    let (_d, p) = csv(&text);
    let e = read_table(&p).unwrap_err().to_string();
    assert!(e.contains("row 51"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn csv_output_never_carries_a_live_formula() {
    let t = Table {
        names: vec!["c".into(), "v".into()],
        columns: vec![
            ColumnData::Text(vec![
                Some("=HYPERLINK(\"http://x\")".into()),
                Some("+1".into()),
                Some("-2".into()),
                Some("@SUM(A1)".into()),
                Some("plain".into()),
            ]),
            ColumnData::Float(vec![Some(-1.5), Some(2.0), Some(-3.0), Some(0.0), None]),
        ],
    };
    let out = String::from_utf8(table_bytes(&t, Format::Csv).unwrap()).unwrap();
    for line in out.lines().skip(1) {
        let first = line.trim_start_matches('"');
        assert!(
            !first.starts_with(['=', '+', '-', '@']),
            "a live formula: {line}"
        );
    }
    assert!(out.contains("plain,"), "{out}");
    assert!(out.contains(",-1.5"), "numbers keep their sign: {out}");
}

#[test]
fn a_schema_too_wide_for_a_model_is_refused() {
    let cats: Vec<String> = (0..70_000).map(|i| format!("\"v{i}\"")).collect();
    let schema = Schema::from_toml(&format!(
        "version = 1\n[[columns]]\nname = \"c\"\nkind = \"categorical\"\ncategories = [{}]\n",
        cats.join(",")
    ))
    .unwrap();
    let e = fedsynth_synth::encoder::Encoder::width_for(&schema)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than the 65536"), "{e}");
}

#[test]
fn a_parquet_files_dates_and_timestamps_are_read_as_datetimes() {
    use fedsynth_synth::datetime;
    use fedsynth_synth::schema::ColumnKind;
    use fedsynth_synth::stats::private_kinds;
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    // Hourly timestamps (milliseconds since the epoch, no zone) and dates.
    let ms: Vec<i64> = (0..500)
        .map(|i| 1_356_998_400_000 + 3_600_000 * i)
        .collect();
    let days: Vec<i32> = (0..500).map(|i| 15_706 + i % 40).collect();
    let mut df = DataFrame::new(
        500,
        vec![
            Series::new("t".into(), ms)
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
                .unwrap()
                .into_column(),
            Series::new("d".into(), days)
                .cast(&DataType::Date)
                .unwrap()
                .into_column(),
        ],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    let raw = fedsynth_synth::table::read_raw(&path).unwrap();
    let schema = private_kinds(
        &raw,
        0.0,
        &mut fedsynth_privacy::rng::SecureRng::from_seed(0),
    );
    let kind = |n: &str| schema.columns.iter().find(|c| c.name == n).map(|c| c.kind);
    assert_eq!(kind("t"), Some(ColumnKind::Datetime));
    assert_eq!(kind("t#hour"), Some(ColumnKind::Integer));
    assert_eq!(kind("d"), Some(ColumnKind::Datetime));
    let typed = raw.typed(&schema.kinds()).unwrap();
    assert_eq!(typed.column("t").unwrap().number(0), Some(15_706.0));
    assert_eq!(typed.column("t#hour").unwrap().number(5), Some(5.0));
    assert_eq!(typed.column("d").unwrap().number(3), Some(15_709.0));
    assert_eq!(
        datetime::format(
            86_400 * 15_709,
            schema.columns[3].format.as_deref().unwrap()
        ),
        Some("2013-01-04".to_string())
    );
}

#[test]
fn datetimes_are_written_to_parquet_as_the_inputs_dates_and_timestamps() {
    use fedsynth_synth::table::{
        BlockWriter, ColumnData, Format, Table, declared_temporal, temporal_type,
    };
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    // An input with a date, a naive millisecond timestamp and a UTC one: their types are
    // declared, hence public.
    let input = dir.path().join("in.parquet");
    let mut df = DataFrame::new(
        2,
        vec![
            Series::new("d".into(), [15_706i32, 15_707])
                .cast(&DataType::Date)
                .unwrap()
                .into_column(),
            Series::new("t".into(), [1_356_998_400_000i64, 1_357_002_000_000])
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
                .unwrap()
                .into_column(),
            Series::new(
                "u".into(),
                [1_356_998_400_000_000i64, 1_357_002_000_000_000],
            )
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap()
            .into_column(),
            Series::new("n".into(), [1i64, 2]).into_column(),
        ],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&input).unwrap())
        .finish(&mut df)
        .unwrap();
    let declared = declared_temporal(&input).unwrap();
    assert_eq!(declared.len(), 3, "{declared:?}");
    assert_eq!(
        declared[1],
        ("t".into(), DataType::Datetime(TimeUnit::Milliseconds, None))
    );
    assert!(
        declared_temporal(&dir.path().join("x.csv"))
            .unwrap()
            .is_empty()
    );
    // A synthetic table of the same columns, datetimes as the text the decoder writes.
    let text = |v: &[&str]| ColumnData::Text(v.iter().map(|s| Some(s.to_string())).collect());
    let table = Table {
        names: vec!["d".into(), "t".into(), "u".into(), "n".into(), "c".into()],
        columns: vec![
            text(&["2013-01-04", "2014-12-31"]),
            text(&["2013-01-01 10:00:00", "2013-06-01 23:59:59"]),
            text(&["2013-01-01T10:00:00+00:00", "2013-01-01T12:00:00+02:00"]),
            ColumnData::Int(vec![Some(3), None]),
            text(&["2013-01-01T10:00:00Z", "2013-01-01T11:00:00Z"]),
        ],
    };
    let mut temporal = declared.clone();
    // A CSV input's column: the type its pattern reads as.
    temporal.push(("c".into(), temporal_type("%Y-%m-%dT%H:%M:%S%.fZ").unwrap()));
    let out = dir.path().join("out.parquet");
    let mut writer = BlockWriter::new(std::fs::File::create(&out).unwrap(), Format::Parquet)
        .with_temporal(temporal);
    writer.write(&table).unwrap();
    writer.finish().unwrap();
    let back = ParquetReader::new(std::fs::File::open(&out).unwrap())
        .finish()
        .unwrap();
    for (name, dtype) in &declared {
        assert_eq!(back.column(name).unwrap().dtype(), dtype, "{name}");
    }
    assert_eq!(
        back.column("c").unwrap().dtype(),
        &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
    );
    let ms = |c: &str, i: usize| -> i64 {
        back.column(c)
            .unwrap()
            .as_materialized_series()
            .to_physical_repr()
            .i64()
            .unwrap()
            .get(i)
            .unwrap()
    };
    assert_eq!(ms("t", 1), 1_370_131_199_000);
    // +02:00 is the same instant as 10:00 UTC.
    assert_eq!(ms("u", 1), 1_357_034_400_000_000);
    let days = back
        .column("d")
        .unwrap()
        .as_materialized_series()
        .to_physical_repr()
        .i32()
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(days, 15_709);
    // A CSV output keeps the text.
    let mut csv = Vec::new();
    let mut w = BlockWriter::new(&mut csv, Format::Csv).with_temporal(declared);
    w.write(&table).unwrap();
    w.finish().unwrap();
    assert!(
        String::from_utf8(csv)
            .unwrap()
            .contains("2013-01-04,2013-01-01 10:00:00")
    );
}
