//! `fedsynth keygen`, `encrypt` and `decrypt`: recipient keys and encrypted files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedsynth_privacy::envelope::{PublicKey, SecretKey, decrypt_file, encrypt_file};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::signature::ArtifactSignature;

use crate::{DecryptArgs, EncryptArgs, KeygenArgs};

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub fn keygen(args: &KeygenArgs) -> Result<()> {
    let (sk, pk) = (with_ext(&args.out, "key"), with_ext(&args.out, "pub"));
    let key = SecretKey::generate(&mut SecureRng::from_os());
    key.write_pair(&sk, &pk)?;
    println!(
        "wrote {} (secret: keep it, mode 0600) and {} (public: share it); key id {}",
        sk.display(),
        pk.display(),
        key.public().key_id()
    );
    Ok(())
}

pub fn encrypt(args: &EncryptArgs) -> Result<()> {
    let recipients = args
        .recipients
        .iter()
        .map(PublicKey::read)
        .collect::<Result<Vec<_>, _>>()?;
    if args.out == args.file {
        bail!("--out must differ from the input file");
    }
    let n = encrypt_file(&args.file, &args.out, &recipients)?;
    let ids: Vec<String> = recipients.iter().map(PublicKey::key_id).collect();
    println!(
        "encrypted {n} bytes into {} for {}",
        args.out.display(),
        ids.join(", ")
    );
    Ok(())
}

pub fn decrypt(args: &DecryptArgs) -> Result<()> {
    let key = SecretKey::read(&args.key)?;
    if args.out == args.file {
        bail!("--out must differ from the input file");
    }
    if let Some(ca) = &args.signer_ca {
        let sig_path = with_ext(&args.file, "sig");
        let text = std::fs::read_to_string(&sig_path)
            .with_context(|| format!("cannot read the signature {}", sig_path.display()))?;
        let sha256 = fedsynth_privacy::signature::file_digest(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let signature = ArtifactSignature::from_text(&text)
            .with_context(|| format!("{}", sig_path.display()))?;
        let signers = signature
            .verify(&signature.job_id.clone(), &sha256, &ca_pem)
            .with_context(|| {
                format!("{}: not signed by a worker of this CA", args.file.display())
            })?;
        eprintln!(
            "signed by worker {} for job {} (certificate issued by {})",
            signers.join(", "),
            signature.job_id,
            ca.display()
        );
    }
    let n = decrypt_file(&args.file, &args.out, &key)
        .with_context(|| format!("cannot decrypt {}", args.file.display()))?;
    println!("decrypted {n} bytes into {}", args.out.display());
    Ok(())
}
