//! Sampling block by block: the blocks are the rows one whole sample gives (same generator
//! state, same order), and the block writer serialises them as the whole table would be
//! (CSV with one header; Parquet with a row group per block), so a worker can stream any
//! number of rows into an envelope with memory for one block.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use burn::prelude::*;
use fedsynth_privacy::rng::SecureRng;
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::model::TvaeConfig;
use fedsynth_synth::sample::{sample, sample_blocks};
use fedsynth_synth::schema::Schema;
use fedsynth_synth::table::{BlockWriter, ColumnData, Format, Table, read_table, table_bytes};

fn concat(blocks: &[Table]) -> Table {
    let mut out = blocks[0].clone();
    for b in &blocks[1..] {
        for (acc, col) in out.columns.iter_mut().zip(&b.columns) {
            match (acc, col) {
                (ColumnData::Float(a), ColumnData::Float(c)) => a.extend(c.iter().copied()),
                (ColumnData::Int(a), ColumnData::Int(c)) => a.extend(c.iter().copied()),
                (ColumnData::Text(a), ColumnData::Text(c)) => a.extend(c.iter().cloned()),
                _ => panic!("blocks disagree on a column's type"),
            }
        }
    }
    out
}

#[test]
fn blocks_are_the_whole_sample_and_serialise_as_it_would() {
    let schema = Schema::from_toml(
        "version = 1\n\
         [[columns]]\nname = \"c\"\nkind = \"categorical\"\nnullable = false\ncategories = [\"a\", \"=b\", \"c\"]\n\
         [[columns]]\nname = \"x\"\nkind = \"continuous\"\nnullable = true\nedges = [0.0, 1.0, 2.5]\n\
         [[columns]]\nname = \"n\"\nkind = \"integer\"\nnullable = false\nedges = [-0.5, 0.5, 1.5]\n",
    )
    .unwrap();
    let types = Table {
        names: vec!["c".into(), "x".into(), "n".into()],
        columns: vec![
            ColumnData::Text(vec![]),
            ColumnData::Float(vec![]),
            ColumnData::Int(vec![]),
        ],
    };
    let encoder = Encoder::new(&schema, &types).unwrap();
    let device = Device::flex();
    device.seed(3);
    let model = TvaeConfig::new(encoder.width())
        .with_hidden(8)
        .with_latent(3)
        .init(&device);
    // More rows than one block (65,536).
    let rows = 70_001;
    let whole = sample(
        &model,
        &encoder,
        rows,
        &device,
        &mut SecureRng::from_seed(5),
    );
    let mut blocks = Vec::new();
    sample_blocks(
        &model,
        &encoder,
        rows,
        &device,
        &mut SecureRng::from_seed(5),
        |t| -> Result<(), std::convert::Infallible> {
            blocks.push(t);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(concat(&blocks), whole);

    // CSV: one header, formulas defused, byte for byte the whole table's serialisation.
    let mut csv = Vec::new();
    let mut writer = BlockWriter::new(&mut csv, Format::Csv);
    for b in &blocks {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!(csv, table_bytes(&whole, Format::Csv).unwrap());
    let text = String::from_utf8(csv).unwrap();
    assert_eq!(text.lines().filter(|l| *l == "c,x,n").count(), 1);
    assert!(!text.lines().any(|l| l.starts_with("=b")), "a live formula");

    // Parquet: read back, the whole table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.parquet");
    let mut writer = BlockWriter::new(std::fs::File::create(&path).unwrap(), Format::Parquet);
    for b in &blocks {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!(read_table(&path).unwrap(), whole);
}
