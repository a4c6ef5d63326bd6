//! Criterion benchmarks for fedsynth live beside this file; run them with `cargo bench -p fedsynth-benches`.
