//! Signed outputs: a worker's signature with its enrolled key verifies against the
//! federation's CA, and nothing else does — another job, changed bytes, another CA's
//! certificate, another key behind a genuine certificate, or a malformed file.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use fedsynth_privacy::signature::{ArtifactSignature, SignatureError, digest_hex};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A worker certificate and its key (PEM), issued by `ca` for `name`.
fn worker(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_signature_verifies_only_for_its_job_bytes_and_ca() {
    let federation = ca("federation CA");
    let (cert, key) = worker(&federation, "clinic-a");
    let sealed = b"sealed bytes of the output".to_vec();
    let sig =
        ArtifactSignature::sign("job-1", &digest_hex(&sealed), key.as_bytes(), &cert).unwrap();
    let back = ArtifactSignature::from_text(&sig.to_text()).unwrap();
    assert_eq!(back, sig);
    assert_eq!(
        back.verify("job-1", &digest_hex(&sealed), federation.pem.as_bytes())
            .unwrap(),
        ["clinic-a"]
    );
    // Another job, or other bytes.
    assert!(matches!(
        back.verify("job-2", &digest_hex(&sealed), federation.pem.as_bytes()),
        Err(SignatureError::Invalid(_))
    ));
    let mut changed = sealed.clone();
    changed[3] ^= 1;
    assert!(
        back.verify("job-1", &digest_hex(&changed), federation.pem.as_bytes())
            .is_err()
    );
    // Checked against another CA.
    let other = ca("another CA");
    assert!(
        back.verify("job-1", &digest_hex(&sealed), other.pem.as_bytes())
            .is_err()
    );
    // A certificate of another CA's, or another key behind a genuine certificate.
    let (rogue_cert, rogue_key) = worker(&other, "clinic-a");
    let forged = ArtifactSignature::sign(
        "job-1",
        &digest_hex(&sealed),
        rogue_key.as_bytes(),
        &rogue_cert,
    )
    .unwrap();
    assert!(
        forged
            .verify("job-1", &digest_hex(&sealed), federation.pem.as_bytes())
            .is_err()
    );
    let mut swapped =
        ArtifactSignature::sign("job-1", &digest_hex(&sealed), rogue_key.as_bytes(), &cert)
            .unwrap();
    assert!(
        swapped
            .verify("job-1", &digest_hex(&sealed), federation.pem.as_bytes())
            .is_err()
    );
    // A tampered signature or digest.
    swapped = sig.clone();
    swapped.signature.replace_range(0..2, "00");
    assert!(
        swapped
            .verify("job-1", &digest_hex(&sealed), federation.pem.as_bytes())
            .is_err()
    );
    let mut redigest = sig.clone();
    redigest.sha256 = digest_hex(&changed);
    assert!(
        redigest
            .verify("job-1", &digest_hex(&changed), federation.pem.as_bytes())
            .is_err()
    );
}

#[test]
fn malformed_signatures_and_keys_are_errors() {
    for text in ["", "{}", "not json", &"x".repeat(1 << 17)] {
        assert!(ArtifactSignature::from_text(text).is_err());
    }
    let federation = ca("federation CA");
    let (cert, _) = worker(&federation, "clinic-a");
    assert!(ArtifactSignature::sign("j", &digest_hex(b"x"), b"not a key", &cert).is_err());
    let sig = ArtifactSignature {
        job_id: "j".into(),
        sha256: digest_hex(b"x"),
        certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        signature: "zz".into(),
    };
    assert!(
        sig.verify("j", &digest_hex(b"x"), federation.pem.as_bytes())
            .is_err()
    );
    assert!(sig.verify("j", &digest_hex(b"x"), b"no CA here").is_err());
}
