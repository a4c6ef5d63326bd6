//! Who made an encrypted output. Anyone who knows the recipients' public keys can encrypt a
//! file to them (HPKE base mode authenticates nobody), so a federated job's artifact also
//! carries a signature by the worker that sampled it, with the key of its enrolled identity:
//! the client certificate its federation's CA issued it for mutual TLS. The job owner checks
//! the certificate against that CA and the signature against the certificate before
//! opening the file (`fedsynth fetch`, `fedsynth decrypt --signer-ca`); neither the
//! coordinator nor anyone else without an enrolled worker's key can forge it.
//!
//! The signed message is a domain tag, the job's id and the SHA-256 of the sealed bytes.
//! Keys: ECDSA P-256 (what `fedsynth certs` issues) or Ed25519, in PKCS#8 PEM.

use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair,
    UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};

/// Largest signature file accepted (a certificate and a few lines).
pub const MAX_SIGNATURE_BYTES: usize = 64 << 10;

const DOMAIN: &[u8] = b"fedsynth-artifact-v1\0";

/// A detached signature of a job's encrypted output (`JOB.fsx.sig`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSignature {
    /// The job whose output this is.
    pub job_id: String,
    /// Hex SHA-256 of the sealed file.
    pub sha256: String,
    /// The signer's certificate (PEM), issued by the federation's CA.
    pub certificate: String,
    /// Hex of the signature over the domain tag, the job id and the digest.
    pub signature: String,
}

/// Why a signature does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The key or certificate cannot be read or used.
    #[error("signing key: {0}")]
    Key(String),
    /// The signature file, certificate or CA is malformed.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed for another job or other bytes, or by a key the CA did not certify.
    #[error("{0}")]
    Invalid(String),
}

fn message(job_id: &str, sha256: &str) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&(job_id.len() as u64).to_le_bytes());
    m.extend_from_slice(job_id.as_bytes());
    m.extend_from_slice(sha256.as_bytes());
    m
}

/// Hex SHA-256 of bytes.
pub fn digest_hex(bytes: &[u8]) -> String {
    digest_parts([bytes])
}

/// Hex SHA-256 of bytes that arrived in parts (the chunks of a download).
pub fn digest_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    parts.into_iter().for_each(|p| h.update(p));
    hex::encode(h.finalize())
}

/// Hex SHA-256 of a file, read as a stream.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

impl ArtifactSignature {
    /// Signs the sealed file whose hex SHA-256 is `sha256` (the encrypted output of `job_id`)
    /// with a PKCS#8 PEM key, attaching the PEM certificate that goes with it.
    pub fn sign(
        job_id: &str,
        sha256: &str,
        key_pem: &[u8],
        certificate_pem: &str,
    ) -> Result<Self, SignatureError> {
        let sha256 = sha256.to_ascii_lowercase();
        let signature = sign_bytes(&message(job_id, &sha256), key_pem)?;
        Ok(Self {
            job_id: job_id.into(),
            sha256,
            certificate: certificate_pem.trim().to_string() + "\n",
            signature: hex::encode(signature),
        })
    }

    /// The signature file's text.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a signature file's text.
    pub fn from_text(text: &str) -> Result<Self, SignatureError> {
        if text.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::Malformed(
                "the signature file is too large".into(),
            ));
        }
        serde_json::from_str(text).map_err(|e| SignatureError::Malformed(e.to_string()))
    }

    /// Checks that this signs the sealed file whose hex SHA-256 is `sha256` (see
    /// [`digest_hex`]; a caller streaming the file hashes it as it goes) as the output of
    /// `job_id`, by a key whose certificate
    /// the CA (`ca_pem`) issued and which is valid now. Returns the names (DNS subject
    /// alternative names) the signer's certificate was issued for.
    pub fn verify(
        &self,
        job_id: &str,
        sha256: &str,
        ca_pem: &[u8],
    ) -> Result<Vec<String>, SignatureError> {
        if self.job_id != job_id {
            return Err(SignatureError::Invalid(format!(
                "the signature is for job {}, not {job_id}",
                self.job_id.escape_debug()
            )));
        }
        if !self.sha256.eq_ignore_ascii_case(sha256) {
            return Err(SignatureError::Invalid(
                "the file is not the one that was signed (its SHA-256 differs)".into(),
            ));
        }
        verify_certified(
            &self.certificate,
            &message(job_id, &self.sha256),
            &self.signature,
            ca_pem,
        )
    }
}

/// Signs `msg` with a PKCS#8 PEM key (ECDSA P-256 or Ed25519).
pub fn sign_bytes(msg: &[u8], key_pem: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| SignatureError::Key(format!("not a PEM private key ({e})")))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(SignatureError::Key(
            "the key must be PKCS#8 (\"BEGIN PRIVATE KEY\")".into(),
        ));
    };
    let der = pkcs8.secret_pkcs8_der();
    let rng = ring::rand::SystemRandom::new();
    if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng) {
        Ok(k.sign(&rng, msg)
            .map_err(|_| SignatureError::Key("ECDSA signing failed".into()))?
            .as_ref()
            .to_vec())
    } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        Ok(k.sign(msg).as_ref().to_vec())
    } else {
        Err(SignatureError::Key(
            "only ECDSA P-256 and Ed25519 keys can sign".into(),
        ))
    }
}

/// Checks that `signature_hex` signs `msg` with the key of `certificate_pem`, which the CA
/// (`ca_pem`) issued and which is valid now. Returns the names (DNS subject alternative
/// names) the certificate was issued for.
pub fn verify_certified(
    certificate_pem: &str,
    msg: &[u8],
    signature_hex: &str,
    ca_pem: &[u8],
) -> Result<Vec<String>, SignatureError> {
    let pem_der = |what: &str, pem: &[u8]| {
        CertificateDer::from_pem_slice(pem)
            .map_err(|e| SignatureError::Malformed(format!("{what}: not a PEM certificate ({e})")))
    };
    let ca_der = pem_der("CA", ca_pem)?;
    let signer_der = pem_der("signer certificate", certificate_pem.as_bytes())?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref())
        .map_err(|_| SignatureError::Malformed("the CA certificate does not parse".into()))?;
    let (_, signer) = x509_parser::parse_x509_certificate(signer_der.as_ref())
        .map_err(|_| SignatureError::Malformed("the signer certificate does not parse".into()))?;
    signer
        .verify_signature(Some(ca.public_key()))
        .map_err(|_| {
            SignatureError::Invalid("the signer's certificate was not issued by this CA".into())
        })?;
    if !signer.validity().is_valid() {
        return Err(SignatureError::Invalid(
            "the signer's certificate is expired or not yet valid".into(),
        ));
    }
    let spki = signer.public_key();
    let algorithm: &dyn ring::signature::VerificationAlgorithm =
        if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            &ECDSA_P256_SHA256_ASN1
        } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
            &ED25519
        } else {
            return Err(SignatureError::Invalid(
                "the signer's key is neither ECDSA P-256 nor Ed25519".into(),
            ));
        };
    let signature = hex::decode(signature_hex)
        .map_err(|_| SignatureError::Malformed("the signature is not hex".into()))?;
    UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(msg, &signature)
        .map_err(|_| SignatureError::Invalid("the signature does not verify".into()))?;
    Ok(dns_names(&signer))
}

/// The DNS subject alternative names of a parsed certificate: the names it was issued for.
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some((*n).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names (DNS subject alternative names) a DER certificate was issued for; none if it
/// does not parse.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| dns_names(&cert))
        .unwrap_or_default()
}
