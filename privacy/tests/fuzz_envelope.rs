//! Property tests of the envelope parser, which reads files anyone can hand a recipient:
//! arbitrary bytes and valid envelopes with one byte changed, cut or extended are refused
//! with an error — never a panic — and `decrypt_file` leaves no output behind.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Cursor;

use fedsynth_privacy::envelope::{SecretKey, decrypt, decrypt_file, encrypt};
use fedsynth_privacy::rng::SecureRng;
use proptest::prelude::*;

fn sealed(key: &SecretKey, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encrypt(
        Cursor::new(plain),
        &mut out,
        &[key.public().clone()],
        &mut SecureRng::from_seed(2),
    )
    .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let key = SecretKey::generate(&mut SecureRng::from_seed(1));
        let mut out = Vec::new();
        prop_assert!(decrypt(Cursor::new(&bytes), &mut out, &key).is_err());
    }

    #[test]
    fn any_change_to_an_envelope_is_refused_and_leaves_no_file(
        len in 0usize..200_000,
        at in any::<prop::sample::Index>(),
        edit in 0u8..3,
        byte in 1u8..=255,
    ) {
        let key = SecretKey::generate(&mut SecureRng::from_seed(1));
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut env = sealed(&key, &plain);
        let i = at.index(env.len());
        match edit {
            0 => env[i] ^= byte,
            1 => env.truncate(i),
            _ => env.insert(i, byte),
        }
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.fsx"), dir.path().join("out.csv"));
        std::fs::write(&input, &env).unwrap();
        prop_assert!(decrypt_file(&input, &output, &key).is_err());
        prop_assert!(!output.exists());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        prop_assert_eq!(leftovers, 1, "a temporary file was left behind");
    }
}
