//! Encrypted files for named recipients ("envelopes").
//!
//! A fresh random 256-bit data key per file encrypts the body with AES-256-GCM in the
//! STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015; big-endian 32-bit chunk
//! counter and a last-chunk flag in the nonce) over 64 KiB chunks. The data key is wrapped
//! for each recipient's X25519 public key with HPKE (RFC 9180, base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM). The whole header is bound to
//! every chunk as associated data, so reordered, truncated, extended or altered files fail
//! to decrypt. The format is documented in `docs/envelope-format.md`.
//!
//! Both directions stream: memory stays at about one chunk whatever the file size.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::rng::SecureRng;

type Kem = X25519HkdfSha256;

/// File magic: "FSYNENC" and a zero byte.
pub const MAGIC: &[u8; 8] = b"FSYNENC\0";
/// Format version written by this build.
pub const FORMAT_VERSION: u16 = 1;
/// Plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
const TAG_LEN: usize = 16;
const NONCE_PREFIX_LEN: usize = 7;
const KEY_ID_LEN: usize = 8;
const ENCAPPED_LEN: usize = 32;
const MAX_RECIPIENTS: u16 = 1024;
const HPKE_INFO: &[u8] = b"fedsynth envelope v1";
const PUB_PREFIX: &str = "fedsynth-x25519-pub:";
const SECRET_PREFIX: &str = "fedsynth-x25519-secret:";

/// What can go wrong reading or writing envelopes and keys.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input does not start with the envelope magic.
    #[error("not a fedsynth encrypted file (bad magic)")]
    NotAnEnvelope,
    /// A newer or unknown format version.
    #[error("unsupported encrypted-file version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// The header is malformed or truncated.
    #[error("malformed encrypted-file header: {0}")]
    MalformedHeader(String),
    /// The key given is not one of the file's recipients, or its wrapped key is altered.
    #[error(
        "this key cannot open the file: it is not a recipient (key id {0}), or the header was altered"
    )]
    NotARecipient(String),
    /// A chunk failed authentication: the file was altered or reordered, or the header changed.
    #[error("the file was tampered with: chunk {0} failed authentication")]
    Tampered(u64),
    /// The file ends early.
    #[error("the file is truncated: it ends before its last chunk")]
    Truncated,
    /// Bytes follow the authenticated last chunk.
    #[error("the file was extended: data follows its last chunk")]
    TrailingData,
    /// No recipient was given.
    #[error("at least one recipient public key is needed")]
    NoRecipients,
    /// A key file is malformed.
    #[error("key file {path}: {message}")]
    KeyFile {
        /// Key file path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EnvelopeError {
    let context = context.into();
    move |source| EnvelopeError::Io { context, source }
}

/// A recipient's public key.
#[derive(Clone)]
pub struct PublicKey(<Kem as KemTrait>::PublicKey);

/// A recipient's secret key. The X25519 scalar inside is wiped on drop: hpke keeps it in an
/// `x25519_dalek::StaticSecret`, which zeroises itself when that crate's `zeroize` feature
/// is on, and `fedsynth-privacy` depends on `x25519-dalek` only to switch it on.
pub struct SecretKey {
    sk: <Kem as KemTrait>::PrivateKey,
    pk: PublicKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(for {})", self.pk.key_id())
    }
}

impl PublicKey {
    fn id_bytes(&self) -> [u8; KEY_ID_LEN] {
        let digest = Sha256::digest(self.0.to_bytes());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// Short identifier: hex of the first 8 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex::encode(self.id_bytes())
    }

    /// The text form written to `NAME.pub`: `fedsynth-x25519-pub:<hex>`.
    pub fn to_text(&self) -> String {
        format!("{PUB_PREFIX}{}", hex::encode(self.0.to_bytes()))
    }

    /// Parses the text form (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let hex_part = text
            .trim()
            .strip_prefix(PUB_PREFIX)
            .ok_or_else(|| format!("a public key starts with `{PUB_PREFIX}`"))?;
        let bytes = hex::decode(hex_part).map_err(|e| format!("bad hex in public key: {e}"))?;
        <Kem as KemTrait>::PublicKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| "a public key is 32 bytes".to_string())
    }

    /// Reads `NAME.pub`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, EnvelopeError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
        Self::from_text(&text).map_err(|message| EnvelopeError::KeyFile {
            path: path.display().to_string(),
            message,
        })
    }
}

impl SecretKey {
    /// A fresh key pair from the secure generator.
    pub fn generate(rng: &mut SecureRng) -> Self {
        let (sk, pk) = Kem::gen_keypair(rng);
        Self {
            sk,
            pk: PublicKey(pk),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> &PublicKey {
        &self.pk
    }

    /// The text form written to `NAME.key`.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SECRET_PREFIX}{}\n",
            hex::encode(self.sk.to_bytes())
        ))
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let hex_part = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a secret key starts with `{SECRET_PREFIX}`"))?;
        let bytes =
            Zeroizing::new(hex::decode(hex_part).map_err(|_| "bad hex in secret key".to_string())?);
        let sk = <Kem as KemTrait>::PrivateKey::from_bytes(&bytes)
            .map_err(|_| "a secret key is 32 bytes".to_string())?;
        let pk = PublicKey(Kem::sk_to_pk(&sk));
        Ok(Self { sk, pk })
    }

    /// Reads `NAME.key`, refusing (as ssh does) a file that group or others can read.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, EnvelopeError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(io_err(format!("reading {shown}")))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(EnvelopeError::KeyFile {
                    path: shown,
                    message: format!(
                        "permissions {mode:04o} are too open: a secret key must not be readable by others (chmod 600)"
                    ),
                });
            }
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(io_err(format!("reading {shown}")))?,
        );
        Self::from_text(&text).map_err(|message| EnvelopeError::KeyFile {
            path: shown,
            message,
        })
    }

    /// Writes `NAME.key` (mode 0600, created fresh: an existing file is not overwritten)
    /// and `NAME.pub`.
    pub fn write_pair(&self, secret_path: &Path, public_path: &Path) -> Result<(), EnvelopeError> {
        for p in [secret_path, public_path] {
            if p.exists() {
                return Err(EnvelopeError::KeyFile {
                    path: p.display().to_string(),
                    message: "already exists; refusing to overwrite a key".into(),
                });
            }
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let shown = secret_path.display().to_string();
        let mut f = opts
            .open(secret_path)
            .map_err(io_err(format!("creating {shown}")))?;
        f.write_all(self.to_text().as_bytes())
            .map_err(io_err(format!("writing {shown}")))?;
        f.sync_all().map_err(io_err(format!("writing {shown}")))?;
        write_atomically(public_path, |w| writeln!(w, "{}", self.pk.to_text()))
    }
}

/// The parsed file header.
struct Header {
    chunk_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    recipients: Vec<WrappedKey>,
    /// SHA-256 of the serialised header: the associated data of every chunk.
    digest: [u8; 32],
}

struct WrappedKey {
    key_id: [u8; KEY_ID_LEN],
    encapped: [u8; ENCAPPED_LEN],
    wrapped: Vec<u8>,
}

fn fixed_prefix(chunk_size: u32, nonce_prefix: &[u8; NONCE_PREFIX_LEN], n: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + 4 + NONCE_PREFIX_LEN + 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&chunk_size.to_le_bytes());
    out.extend_from_slice(nonce_prefix);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), EnvelopeError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            EnvelopeError::MalformedHeader(format!("file ends inside the {what}"))
        } else {
            EnvelopeError::Io {
                context: "reading the header".into(),
                source: e,
            }
        }
    })
}

fn read_header(r: &mut impl Read) -> Result<Header, EnvelopeError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => EnvelopeError::NotAnEnvelope,
        _ => EnvelopeError::Io {
            context: "reading the header".into(),
            source: e,
        },
    })?;
    if &magic != MAGIC {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let mut b2 = [0u8; 2];
    read_exact_or(r, &mut b2, "version")?;
    let version = u16::from_le_bytes(b2);
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let mut b4 = [0u8; 4];
    read_exact_or(r, &mut b4, "chunk size")?;
    let chunk_size = u32::from_le_bytes(b4);
    if !(1024..=16 * 1024 * 1024).contains(&chunk_size) {
        return Err(EnvelopeError::MalformedHeader(format!(
            "chunk size {chunk_size} is out of range"
        )));
    }
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    read_exact_or(r, &mut nonce_prefix, "nonce prefix")?;
    read_exact_or(r, &mut b2, "recipient count")?;
    let n = u16::from_le_bytes(b2);
    if n == 0 || n > MAX_RECIPIENTS {
        return Err(EnvelopeError::MalformedHeader(format!("{n} recipients")));
    }
    let mut hasher = Sha256::new();
    hasher.update(fixed_prefix(chunk_size, &nonce_prefix, n));
    let mut recipients = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let mut key_id = [0u8; KEY_ID_LEN];
        read_exact_or(r, &mut key_id, "recipient list")?;
        let mut encapped = [0u8; ENCAPPED_LEN];
        read_exact_or(r, &mut encapped, "recipient list")?;
        read_exact_or(r, &mut b2, "recipient list")?;
        let len = usize::from(u16::from_le_bytes(b2));
        if len != 32 + TAG_LEN {
            return Err(EnvelopeError::MalformedHeader(format!(
                "wrapped key of {len} bytes"
            )));
        }
        let mut wrapped = vec![0u8; len];
        read_exact_or(r, &mut wrapped, "recipient list")?;
        hasher.update(key_id);
        hasher.update(encapped);
        hasher.update(b2);
        hasher.update(&wrapped);
        recipients.push(WrappedKey {
            key_id,
            encapped,
            wrapped,
        });
    }
    Ok(Header {
        chunk_size,
        nonce_prefix,
        recipients,
        digest: hasher.finalize().into(),
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Encrypts `input` for `recipients` into `output`; returns the plaintext length.
pub fn encrypt(
    mut input: impl Read,
    mut output: impl Write,
    recipients: &[PublicKey],
    rng: &mut SecureRng,
) -> Result<u64, EnvelopeError> {
    encrypt_with_chunk_size(&mut input, &mut output, recipients, rng, DEFAULT_CHUNK_SIZE)
}

/// [`encrypt`] with an explicit chunk size (1 KiB to 16 MiB).
pub fn encrypt_with_chunk_size(
    input: &mut impl Read,
    output: &mut impl Write,
    recipients: &[PublicKey],
    rng: &mut SecureRng,
    chunk_size: u32,
) -> Result<u64, EnvelopeError> {
    if recipients.is_empty() {
        return Err(EnvelopeError::NoRecipients);
    }
    if recipients.len() > usize::from(MAX_RECIPIENTS) {
        return Err(EnvelopeError::MalformedHeader(format!(
            "at most {MAX_RECIPIENTS} recipients"
        )));
    }
    if !(1024..=16 * 1024 * 1024).contains(&chunk_size) {
        return Err(EnvelopeError::MalformedHeader(format!(
            "chunk size {chunk_size} is out of range"
        )));
    }
    let mut data_key = Zeroizing::new([0u8; 32]);
    rng.fill(data_key.as_mut());
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    rng.fill(&mut nonce_prefix);
    let n = recipients.len() as u16;
    let prefix = fixed_prefix(chunk_size, &nonce_prefix, n);
    let mut header = prefix.clone();
    for pk in recipients {
        let (encapped, wrapped) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &pk.0,
            HPKE_INFO,
            data_key.as_ref(),
            &prefix,
            rng,
        )
        .map_err(|e| {
            EnvelopeError::MalformedHeader(format!("wrapping the data key failed: {e}"))
        })?;
        header.extend_from_slice(&pk.id_bytes());
        header.extend_from_slice(&encapped.to_bytes());
        header.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
        header.extend_from_slice(&wrapped);
    }
    let aad: [u8; 32] = Sha256::digest(&header).into();
    output
        .write_all(&header)
        .map_err(io_err("writing the header"))?;

    let cipher = Aes256Gcm::new(data_key.as_ref().into());
    let mut enc = EncryptorBE32::from_aead(cipher, nonce_prefix.as_ref().into());
    let cs = chunk_size as usize;
    let mut buf = Vec::with_capacity(cs + TAG_LEN);
    let mut total = 0u64;
    loop {
        buf.resize(cs, 0);
        let got = fill(input, &mut buf).map_err(io_err("reading the input"))?;
        buf.truncate(got);
        total += got as u64;
        if got < cs {
            enc.encrypt_last_in_place(&aad, &mut buf)
                .map_err(|_| EnvelopeError::MalformedHeader("encryption failed".into()))?;
            output
                .write_all(&buf)
                .map_err(io_err("writing the output"))?;
            break;
        }
        enc.encrypt_next_in_place(&aad, &mut buf)
            .map_err(|_| EnvelopeError::MalformedHeader("too many chunks".into()))?;
        output
            .write_all(&buf)
            .map_err(io_err("writing the output"))?;
    }
    output.flush().map_err(io_err("writing the output"))?;
    Ok(total)
}

/// Decrypts `input` with `key` into `output`; returns the plaintext length. Nothing reaches
/// `output` before the whole file has authenticated, its last chunk included: the plaintext
/// is spooled to an unlinked temporary file first (a truncated or tampered file can never
/// hand a caller a valid-looking prefix). [`decrypt_streaming`] skips the spool.
pub fn decrypt(
    input: impl Read,
    mut output: impl Write,
    key: &SecretKey,
) -> Result<u64, EnvelopeError> {
    let spool = tempfile::tempfile().map_err(io_err("creating a temporary file"))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, spool);
    let n = decrypt_streaming(input, &mut writer, key)?;
    let mut spool = writer.into_inner().map_err(|e| EnvelopeError::Io {
        context: "writing a temporary file".into(),
        source: e.into_error(),
    })?;
    io::Seek::rewind(&mut spool).map_err(io_err("reading a temporary file"))?;
    io::copy(&mut spool, &mut output).map_err(io_err("writing the output"))?;
    output.flush().map_err(io_err("writing the output"))?;
    Ok(n)
}

/// [`decrypt`] without the spool: plaintext is written to `output` as each chunk
/// authenticates, so on an error `output` may hold a prefix that the caller must discard
/// (as [`decrypt_file`] does, renaming its output into place only on success).
pub fn decrypt_streaming(
    mut input: impl Read,
    mut output: impl Write,
    key: &SecretKey,
) -> Result<u64, EnvelopeError> {
    let header = read_header(&mut input)?;
    let my_id = key.pk.id_bytes();
    let prefix = fixed_prefix(
        header.chunk_size,
        &header.nonce_prefix,
        header.recipients.len() as u16,
    );
    let mut data_key = None;
    for w in header.recipients.iter().filter(|w| w.key_id == my_id) {
        let Ok(encapped) = <Kem as KemTrait>::EncappedKey::from_bytes(&w.encapped) else {
            continue;
        };
        if let Ok(k) = hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &key.sk,
            &encapped,
            HPKE_INFO,
            &w.wrapped,
            &prefix,
        ) {
            data_key = Some(Zeroizing::new(k));
            break;
        }
    }
    let data_key = data_key.ok_or_else(|| EnvelopeError::NotARecipient(key.pk.key_id()))?;
    if data_key.len() != 32 {
        return Err(EnvelopeError::NotARecipient(key.pk.key_id()));
    }
    let cipher = Aes256Gcm::new(data_key.as_slice().into());
    let mut dec = DecryptorBE32::from_aead(cipher, header.nonce_prefix.as_ref().into());
    let full = header.chunk_size as usize + TAG_LEN;
    let mut buf = Vec::with_capacity(full);
    let mut total = 0u64;
    let mut index = 0u64;
    loop {
        buf.resize(full, 0);
        let got = fill(&mut input, &mut buf).map_err(io_err("reading the input"))?;
        buf.truncate(got);
        if got == full {
            dec.decrypt_next_in_place(&header.digest, &mut buf)
                .map_err(|_| EnvelopeError::Tampered(index))?;
        } else if got < TAG_LEN {
            return Err(EnvelopeError::Truncated);
        } else {
            dec.decrypt_last_in_place(&header.digest, &mut buf)
                .map_err(|_| {
                    // A short chunk that is not a valid last chunk: cut off, or altered.
                    if got == 0 {
                        EnvelopeError::Truncated
                    } else {
                        EnvelopeError::Tampered(index)
                    }
                })?;
            output
                .write_all(&buf)
                .map_err(io_err("writing the output"))?;
            total += buf.len() as u64;
            let mut probe = [0u8; 1];
            if fill(&mut input, &mut probe).map_err(io_err("reading the input"))? != 0 {
                return Err(EnvelopeError::TrailingData);
            }
            break;
        }
        output
            .write_all(&buf)
            .map_err(io_err("writing the output"))?;
        total += buf.len() as u64;
        index += 1;
    }
    output.flush().map_err(io_err("writing the output"))?;
    Ok(total)
}

/// Writes `path` through a temporary file in the same directory, renamed into place only
/// if `write` succeeds; on failure nothing is left behind.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), EnvelopeError> {
    try_write_atomically(path, |w| {
        write(w).map_err(io_err(format!("writing {}", path.display())))
    })
}

/// [`write_atomically`] for writers that fail with an [`EnvelopeError`].
pub fn try_write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<(), EnvelopeError>,
) -> Result<(), EnvelopeError> {
    let shown = path.display().to_string();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".fedsynth-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io_err(format!("creating a temporary file beside {shown}")))?;
    {
        let mut w = BufWriter::with_capacity(256 * 1024, tmp.as_file());
        write(&mut w)?;
        w.flush().map_err(io_err(format!("writing {shown}")))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err(format!("writing {shown}")))?;
    tmp.persist(path).map_err(|e| EnvelopeError::Io {
        context: format!("renaming into {shown}"),
        source: e.error,
    })?;
    Ok(())
}

/// Encrypts the file `input` into `output` (written atomically).
pub fn encrypt_file(
    input: &Path,
    output: &Path,
    recipients: &[PublicKey],
) -> Result<u64, EnvelopeError> {
    let f = File::open(input).map_err(io_err(format!("opening {}", input.display())))?;
    let mut reader = BufReader::with_capacity(256 * 1024, f);
    let mut rng = SecureRng::from_os();
    let mut n = 0;
    try_write_atomically(output, |w| {
        n = encrypt(&mut reader, w, recipients, &mut rng)?;
        Ok(())
    })?;
    Ok(n)
}

/// Decrypts the file `input` into `output`: the plaintext goes to a temporary file that is
/// renamed into place only after the last chunk authenticates. A wrong key, a tampered or a
/// truncated file leaves no output behind.
pub fn decrypt_file(input: &Path, output: &Path, key: &SecretKey) -> Result<u64, EnvelopeError> {
    let f = File::open(input).map_err(io_err(format!("opening {}", input.display())))?;
    let reader = BufReader::with_capacity(256 * 1024, f);
    let mut n = 0;
    try_write_atomically(output, |w| {
        n = decrypt_streaming(reader, w, key)?;
        Ok(())
    })?;
    Ok(n)
}
