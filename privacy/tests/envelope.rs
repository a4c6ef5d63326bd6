//! Envelope encryption: round trips of every size class, several recipients, and every
//! kind of tampering, wrong keys and unsafe key files.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Cursor;

use fedsynth_privacy::envelope::{
    DEFAULT_CHUNK_SIZE, EnvelopeError, PublicKey, SecretKey, decrypt, decrypt_file, encrypt,
    encrypt_file,
};
use fedsynth_privacy::rng::SecureRng;

const CS: usize = DEFAULT_CHUNK_SIZE as usize;

fn data(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn keys(n: usize) -> Vec<SecretKey> {
    let mut rng = SecureRng::from_os();
    (0..n).map(|_| SecretKey::generate(&mut rng)).collect()
}

fn seal(plain: &[u8], to: &[&SecretKey]) -> Vec<u8> {
    let pubs: Vec<PublicKey> = to.iter().map(|k| k.public().clone()).collect();
    let mut out = Vec::new();
    encrypt(
        Cursor::new(plain),
        &mut out,
        &pubs,
        &mut SecureRng::from_os(),
    )
    .unwrap();
    out
}

fn open(sealed: &[u8], key: &SecretKey) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    decrypt(Cursor::new(sealed), &mut out, key).map(|_| out)
}

/// Size of the header for `n` recipients.
fn header_len(n: usize) -> usize {
    8 + 2 + 4 + 7 + 2 + n * (8 + 32 + 2 + 48)
}

#[test]
fn round_trips_every_size() {
    let k = keys(1);
    for n in [0, 1, CS - 1, CS, CS + 1, 3 * CS + 17, 10 * CS] {
        let plain = data(n);
        let sealed = seal(&plain, &[&k[0]]);
        // Header + one tag per chunk (a final short or empty chunk always closes the stream).
        assert_eq!(
            sealed.len(),
            header_len(1) + n + 16 * (n / CS + 1),
            "size {n}"
        );
        assert_eq!(open(&sealed, &k[0]).unwrap(), plain, "size {n}");
    }
}

#[test]
fn every_recipient_can_open_and_others_cannot() {
    let k = keys(4);
    let plain = data(2 * CS + 5);
    let sealed = seal(&plain, &[&k[0], &k[1], &k[2]]);
    for key in &k[..3] {
        assert_eq!(open(&sealed, key).unwrap(), plain);
    }
    let err = open(&sealed, &k[3]).unwrap_err();
    assert!(matches!(err, EnvelopeError::NotARecipient(_)), "{err}");
}

#[test]
fn tampering_is_detected() {
    let k = keys(1);
    let plain = data(3 * CS + 100);
    let sealed = seal(&plain, &[&k[0]]);
    let h = header_len(1);
    let chunk = CS + 16;
    // Any altered byte: header fields, wrapped key, each chunk, the last tag.
    for pos in [
        10,
        15,
        20,
        30,
        60,
        h - 1,
        h,
        h + 5000,
        h + chunk + 1,
        h + 3 * chunk + 3,
        sealed.len() - 1,
    ] {
        let mut bad = sealed.clone();
        bad[pos] ^= 0x40;
        assert!(open(&bad, &k[0]).is_err(), "flip at {pos} went unnoticed");
    }
    // Reordered chunks.
    let mut swapped = sealed.clone();
    let (a, b) = (h, h + chunk);
    let first: Vec<u8> = swapped[a..a + chunk].to_vec();
    let second: Vec<u8> = swapped[b..b + chunk].to_vec();
    swapped[a..a + chunk].copy_from_slice(&second);
    swapped[b..b + chunk].copy_from_slice(&first);
    assert!(matches!(
        open(&swapped, &k[0]),
        Err(EnvelopeError::Tampered(0))
    ));
    // Truncated: at a chunk boundary, inside a chunk, inside the header.
    assert!(matches!(
        open(&sealed[..h + 3 * chunk], &k[0]),
        Err(EnvelopeError::Truncated)
    ));
    assert!(matches!(
        open(&sealed[..h + 2 * chunk], &k[0]),
        Err(EnvelopeError::Truncated)
    ));
    assert!(open(&sealed[..h + chunk + 500], &k[0]).is_err());
    assert!(matches!(
        open(&sealed[..h - 3], &k[0]),
        Err(EnvelopeError::MalformedHeader(_))
    ));
    assert!(matches!(
        open(&sealed[..4], &k[0]),
        Err(EnvelopeError::NotAnEnvelope)
    ));
    // Extended: trailing bytes, or a copied chunk appended.
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        open(&longer, &k[0]),
        Err(EnvelopeError::Tampered(3))
    ));
    let mut dup = sealed.clone();
    dup.extend_from_slice(&sealed[h..h + chunk]);
    assert!(open(&dup, &k[0]).is_err());
    // Not an envelope at all.
    assert!(matches!(
        open(b"carat,cut\n0.2,Ideal\n", &k[0]),
        Err(EnvelopeError::NotAnEnvelope)
    ));
}

#[test]
fn the_header_of_one_file_does_not_open_another() {
    let k = keys(1);
    let a = seal(&data(1000), &[&k[0]]);
    let b = seal(&data(1000), &[&k[0]]);
    let h = header_len(1);
    let mut spliced = a[..h].to_vec();
    spliced.extend_from_slice(&b[h..]);
    assert!(open(&spliced, &k[0]).is_err());
}

#[test]
fn key_files_round_trip_and_unsafe_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (sk_path, pk_path) = (dir.path().join("team.key"), dir.path().join("team.pub"));
    let key = SecretKey::generate(&mut SecureRng::from_os());
    key.write_pair(&sk_path, &pk_path).unwrap();
    assert_eq!(
        std::fs::metadata(&sk_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = SecretKey::read(&sk_path).unwrap();
    let public = PublicKey::read(&pk_path).unwrap();
    assert_eq!(again.public().key_id(), key.public().key_id());
    assert_eq!(public.key_id(), key.public().key_id());
    // Never overwrite an existing key.
    assert!(key.write_pair(&sk_path, &pk_path).is_err());
    // World- or group-readable secret keys are refused, as ssh does.
    std::fs::set_permissions(&sk_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SecretKey::read(&sk_path).unwrap_err().to_string();
    assert!(err.contains("too open"), "{err}");
    // Garbage is a clear error.
    std::fs::write(&pk_path, "hello").unwrap();
    assert!(
        PublicKey::read(&pk_path)
            .unwrap_err()
            .to_string()
            .contains("fedsynth-x25519-pub:")
    );
}

#[test]
fn failed_decryption_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(2);
    let plain_path = dir.path().join("synth.csv");
    std::fs::write(&plain_path, data(5 * CS + 3)).unwrap();
    let sealed_path = dir.path().join("synth.fsx");
    encrypt_file(&plain_path, &sealed_path, &[k[0].public().clone()]).unwrap();
    let out = dir.path().join("out.csv");
    // Wrong key.
    assert!(decrypt_file(&sealed_path, &out, &k[1]).is_err());
    // Tampered near the end, after several chunks were already decrypted and written.
    let mut bytes = std::fs::read(&sealed_path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    let tampered = dir.path().join("tampered.fsx");
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(matches!(
        decrypt_file(&tampered, &out, &k[0]),
        Err(EnvelopeError::Tampered(5))
    ));
    // Truncated.
    std::fs::write(&tampered, &bytes[..n - 20]).unwrap();
    assert!(decrypt_file(&tampered, &out, &k[0]).is_err());
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "temporary files left behind: {leftovers:?}"
    );
    // The right key works.
    decrypt_file(&sealed_path, &out, &k[0]).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&plain_path).unwrap()
    );
}

#[test]
fn the_x25519_secret_inside_a_secret_key_wipes_itself() {
    // hpke keeps a recipient's scalar in x25519_dalek::StaticSecret. That crate derives
    // `Zeroize` for it, together with `#[zeroize(drop)]` (a Drop that wipes it), only under
    // its `zeroize` feature: the bound below holds only when the feature is on.
    fn zeroisable<T: zeroize::Zeroize>() {}
    zeroisable::<x25519_dalek::StaticSecret>();
}

#[test]
fn decrypt_hands_out_nothing_before_the_end_authenticates() {
    let key = SecretKey::generate(&mut SecureRng::from_seed(3));
    let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut sealed = Vec::new();
    fedsynth_privacy::envelope::encrypt(
        Cursor::new(&plain),
        &mut sealed,
        &[key.public().clone()],
        &mut SecureRng::from_seed(4),
    )
    .unwrap();
    // Cut in the last chunk, or its tag altered: several chunks before it authenticate, yet
    // the writer receives none of them.
    let mut cut = sealed.clone();
    cut.truncate(sealed.len() - 10);
    let mut altered = sealed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    for bad in [cut, altered] {
        let mut out = Vec::new();
        assert!(fedsynth_privacy::envelope::decrypt(Cursor::new(&bad), &mut out, &key).is_err());
        assert!(
            out.is_empty(),
            "{} bytes written before the failure",
            out.len()
        );
    }
    let mut out = Vec::new();
    fedsynth_privacy::envelope::decrypt(Cursor::new(&sealed), &mut out, &key).unwrap();
    assert_eq!(out, plain);
}
