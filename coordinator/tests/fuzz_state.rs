//! Property test of the stored server-optimiser state's parser: the artifact store is
//! outside the coordinator's trust (an S3 bucket, a disk), so arbitrary bytes and a valid
//! state with one byte changed, cut or extended must be refused, never panic.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use fedsynth_coordinator::optimizer::ServerAdam;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(ServerAdam::from_bytes(&bytes).is_err());
    }

    #[test]
    fn a_changed_state_is_refused(
        n in 1usize..64,
        at in any::<prop::sample::Index>(),
        edit in 0u8..3,
        byte in 1u8..=255,
    ) {
        let mut adam = ServerAdam::new(n);
        let mut w = vec![0.5f32; n];
        adam.step(&mut w, &vec![0.25f32; n], 0.01).unwrap();
        let mut bytes = adam.to_bytes();
        prop_assert_eq!(ServerAdam::from_bytes(&bytes).unwrap().to_bytes(), bytes.clone());
        let i = at.index(bytes.len());
        match edit {
            0 => bytes[i] ^= byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
        prop_assert!(ServerAdam::from_bytes(&bytes).is_err());
    }
}
