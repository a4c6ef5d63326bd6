//! Property tests of every parser a file reaches in `synth`: CSV and Parquet input through
//! both readers (arbitrary bytes, and valid tables with bytes flipped, cut or inserted) and
//! schema TOML. Whatever the
//! input, the answer is a table or one error — never a panic — and an error never quotes a
//! cell.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use proptest::prelude::*;

use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::schema::Schema;
use fedsynth_synth::stats::private_kinds;
use fedsynth_synth::table::{read_raw, read_table};

const VALID: &str = "age,wage,job,flag\n\
    31,75.04,\"1. Industrial\",0\n\
    45,130.98,\"2. Information\",1\n\
    ,99.5,\"1. Industrial\",0\n\
    60,-3.25e2,\"say \"\"hi\"\"\",1\n";

fn read_bytes(bytes: &[u8], ext: &str) -> Result<usize, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("t.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    // The synthesis reader (text cells, kinds decided later) on the same bytes: a table
    // that types cleanly under its exact kinds, or one line that quotes no cell.
    match read_raw(&path) {
        Ok(raw) => {
            let kinds = private_kinds(&raw, 0.0, &mut SecureRng::from_seed(0));
            let typed = raw.typed(&kinds.kinds()).unwrap();
            assert_eq!(typed.rows(), raw.rows());
        }
        Err(e) => {
            let e = e.to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
            for cell in CELLS {
                assert!(!e.contains(cell), "{e}");
            }
        }
    }
    read_table(&path)
        .map(|t| t.rows())
        .map_err(|e| e.to_string())
}

/// Distinctive pieces of the valid table's cells (a short one such as "hi" would match words
/// of a message itself).
const CELLS: [&str; 5] = ["Industr", "Informat", "130.9", "75.04", "say "];

/// A valid CSV with one edit: a byte replaced, a range cut out, or bytes inserted.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let base = VALID.as_bytes().to_vec();
    let n = base.len();
    (
        0..3u8,
        0..n,
        0..n,
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(move |(kind, a, b, bytes)| {
            let mut v = base.clone();
            match kind {
                0 => v[a] = bytes.first().copied().unwrap_or(b'"'),
                1 => {
                    let (lo, hi) = (a.min(b), a.max(b));
                    v.drain(lo..hi);
                }
                _ => {
                    v.splice(a..a, bytes);
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_as_csv(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_bytes(&bytes, "csv");
    }

    #[test]
    fn arbitrary_bytes_never_panic_as_parquet(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(read_bytes(&bytes, "parquet").is_err());
    }

    #[test]
    fn an_edited_csv_is_a_table_or_one_line_that_quotes_no_cell(bytes in mutated()) {
        if let Err(e) = read_bytes(&bytes, "csv") {
            prop_assert_eq!(e.lines().count(), 1, "{}", e);
            for cell in CELLS {
                prop_assert!(!e.contains(cell), "{}", e);
            }
        }
    }

    #[test]
    fn schema_text_never_panics(text in "[ -~\n]{0,300}") {
        let _ = Schema::from_toml(&text);
    }

    #[test]
    fn schema_values_never_panic(
        kind in prop_oneof!["\"continuous\"", "\"integer\"", "\"categorical\"", "\"x\"", "1"],
        a in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1e308), Just(0.0), Just(1.0)],
        b in prop_oneof![Just(f64::NEG_INFINITY), Just(-1.0), Just(0.5), Just(1e308)],
        cats in proptest::collection::vec("[a-c]{0,2}", 0..5),
    ) {
        let toml_float = |x: f64| if x.is_nan() { "nan".to_string() } else if x.is_infinite() {
            if x > 0.0 { "inf".into() } else { "-inf".into() }
        } else { format!("{x:e}") };
        let text = format!(
            "version = 1\n[[columns]]\nname = \"c\"\nkind = {kind}\nmin = {}\nmax = {}\n\
             edges = [{}, {}]\nfrequencies = [{}]\ncategories = {cats:?}\n",
            toml_float(a), toml_float(b), toml_float(a), toml_float(b), toml_float(b)
        );
        let _ = Schema::from_toml(&text);
    }
}
