//! Envelope encryption throughput (AES-256-GCM STREAM, 64 KiB chunks) on one core.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedsynth_privacy::envelope::{SecretKey, decrypt_streaming, encrypt};
use fedsynth_privacy::rng::SecureRng;

fn envelope(c: &mut Criterion) {
    const N: usize = 64 << 20;
    let mut rng = SecureRng::from_os();
    let key = SecretKey::generate(&mut rng);
    let recipients = [key.public().clone()];
    let plain = vec![0x5au8; N];
    let mut sealed = Vec::with_capacity(N + N / 1000 + 1024);
    encrypt(Cursor::new(&plain), &mut sealed, &recipients, &mut rng).expect("encrypt");
    let mut g = c.benchmark_group("envelope");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(N as u64));
    let mut out = Vec::with_capacity(N + N / 1000 + 1024);
    g.bench_function("encrypt_64MiB", |b| {
        b.iter(|| {
            out.clear();
            encrypt(Cursor::new(&plain), &mut out, &recipients, &mut rng).expect("encrypt")
        })
    });
    g.bench_function("decrypt_64MiB", |b| {
        b.iter(|| {
            out.clear();
            decrypt_streaming(Cursor::new(&sealed), &mut out, &key).expect("decrypt")
        })
    });
    g.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
