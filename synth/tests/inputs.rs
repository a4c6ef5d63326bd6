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
