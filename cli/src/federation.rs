//! The federation commands: `coordinator` and `worker` (long-running processes), the job
//! owner's `submit`, `status`, `fetch` and `audit`, and `certs` (a development CA).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fedsynth_coordinator::CoordinatorConfig;
use fedsynth_privacy::envelope::{self, PublicKey};
use fedsynth_privacy::signature::ArtifactSignature;
use fedsynth_proto::client::{ClientTls, Token, connect};
use fedsynth_proto::v1::jobs_client::JobsClient;
use fedsynth_proto::v1::{self as pb};
use fedsynth_proto::{JobSpec, MAX_MESSAGE_BYTES};
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::models::ModelSettings;
use fedsynth_synth::schema::Schema;
use fedsynth_synth::stats::Plan;
use fedsynth_worker::WorkerConfig;
use serde_json::json;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use crate::{AuditArgs, CertsArgs, ClientArgs, FetchArgs, StatusArgs, SubmitArgs};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `fedsynth coordinator --config FILE`.
pub fn coordinator(config: &Path) -> Result<()> {
    let config = CoordinatorConfig::read(config)?;
    if config.insecure_plaintext {
        eprintln!(
            "WARNING: insecure_plaintext = true: no TLS, tokens travel in clear. Loopback experiments only."
        );
    }
    let port_file = config.port_file.clone();
    let db = config.database_url.clone();
    runtime()?.block_on(async move {
        fedsynth_coordinator::serve(
            config,
            |addr| {
                eprintln!("coordinator listening on {addr} (store {db})");
                if let Some(path) = &port_file {
                    let text = addr.port().to_string();
                    if let Err(e) = envelope::write_atomically(path, |w| {
                        std::io::Write::write_all(w, text.as_bytes())
                    }) {
                        eprintln!("cannot write the port file: {e}");
                    }
                }
            },
            ctrl_c(),
        )
        .await
    })?;
    Ok(())
}

/// `fedsynth worker --config FILE`.
pub fn worker(config: &Path) -> Result<()> {
    let config = WorkerConfig::read(config)?;
    if config.insecure_plaintext {
        eprintln!("WARNING: insecure_plaintext = true: no TLS. Loopback experiments only.");
    }
    runtime()?.block_on(fedsynth_worker::run(config, ctrl_c()))?;
    Ok(())
}

type Jobs = JobsClient<InterceptedService<Channel, Token>>;

async fn jobs_client(args: &ClientArgs) -> Result<Jobs> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        (None, None) => bail!("give the owner token: --token-file FILE or FEDSYNTH_TOKEN"),
    };
    let tls = args.ca.as_ref().map(|ca| ClientTls {
        ca: ca.clone(),
        cert: args.client_cert.clone(),
        key: args.client_key.clone(),
        domain: args.tls_domain.clone(),
    });
    let channel = connect(&args.coordinator, tls.as_ref())
        .await
        .map_err(|e| anyhow!(e))?;
    let token = Token::new(&token).map_err(|e| anyhow!(e))?;
    Ok(JobsClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Unauthenticated => "UNAUTHENTICATED",
        PermissionDenied => "PERMISSION_DENIED",
        InvalidArgument => "INVALID_ARGUMENT",
        NotFound => "NOT_FOUND",
        FailedPrecondition => "FAILED_PRECONDITION",
        Unavailable => "UNAVAILABLE",
        _ => "ERROR",
    }
}

/// Turns the user's job file (paths to the schema and public keys) into a [`JobSpec`]
/// with both inlined, and validates it.
pub fn job_spec(path: &Path) -> Result<(JobSpec, Option<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {}",
            path.display(),
            e.message().lines().next().unwrap_or("invalid TOML")
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let relative = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_relative() { base.join(p) } else { p }
    };
    let request_id = match table.remove("request_id") {
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => bail!("{}: request_id must be text", path.display()),
        None => None,
    };
    let schema_path = match table.remove("schema") {
        Some(toml::Value::String(s)) => relative(&s),
        _ => bail!(
            "{}: give schema = \"FILE.schema.toml\" (complete: public bin edges and categories for every column; or partial: names, with or without kinds, completed from the holders' DP statistics)",
            path.display()
        ),
    };
    // The model and its settings, checked here as the holders will check them.
    let model_spec: fedsynth_proto::ModelSpec = match table.get("model") {
        None => fedsynth_proto::ModelSpec::default(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|_| anyhow!("{}: model: give a name or a table", path.display()))?,
    };
    model_spec
        .validate()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let settings = ModelSettings::from_table(&model_spec.to_table())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let read = Schema::read(&schema_path)?;
    let complete = read.clone().nullable_by_default();
    let parameters = if Plan::for_schema(&complete).is_free() {
        table.insert(
            "schema_toml".into(),
            toml::Value::String(complete.to_toml()),
        );
        // The model's size, which fixes the size of every update the coordinator takes.
        let encoder = Encoder::for_schema(&complete)
            .map_err(|e| anyhow!("{}: {e}", schema_path.display()))?;
        settings.parameters(&encoder)
    } else {
        // A partial schema: the holders complete it from their DP statistics (under secure
        // aggregation) and the model's size follows from what they complete.
        if read.columns.is_empty() {
            bail!(
                "{}: list the table's columns (names, and kinds where known)",
                schema_path.display()
            );
        }
        table.insert("schema_toml".into(), toml::Value::String(read.to_toml()));
        0
    };
    table.insert(
        "parameters".into(),
        toml::Value::Integer(i64::try_from(parameters).unwrap_or(i64::MAX)),
    );
    let recipients = match table.remove("recipients") {
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                let p = v
                    .as_str()
                    .ok_or_else(|| anyhow!("recipients: list the public key files"))?;
                Ok(toml::Value::String(PublicKey::read(relative(p))?.to_text()))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => bail!(
            "{}: give recipients = [\"team.pub\", …]: the artifact is always encrypted",
            path.display()
        ),
    };
    table.insert("recipients".into(), toml::Value::Array(recipients));
    if !table.contains_key("init_seed") {
        table.insert(
            "init_seed".into(),
            toml::Value::Integer((rand::random::<u32>()) as i64),
        );
    }
    let spec = JobSpec::from_table(table).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((spec, request_id))
}

/// `fedsynth submit JOB.toml`.
pub fn submit(args: &SubmitArgs) -> Result<()> {
    let (spec, request_id) = job_spec(&args.job)?;
    let request_id = args
        .request_id
        .clone()
        .or(request_id)
        .unwrap_or_else(|| format!("req-{}", hex::encode(rand::random::<[u8; 12]>())));
    runtime()?.block_on(async {
        let mut client = jobs_client(&args.client).await?;
        let reply = client
            .submit(pb::SubmitRequest {
                client_request_id: request_id,
                spec_toml: spec.to_toml(),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        println!("{}", reply.job_id);
        if !reply.created {
            eprintln!("(this request id was submitted before: same job)");
        }
        Ok(())
    })
}

fn status_json(s: &pb::JobStatus) -> serde_json::Value {
    json!({
        "job_id": s.job_id, "name": s.name, "federation": s.federation, "state": s.state,
        "round": s.round, "rounds": s.rounds, "workers": s.workers, "refusals": s.refusals,
        "reason": s.reason, "artifact_bytes": s.artifact_bytes, "aggregation": s.aggregation,
        "created_at_ms": s.created_at_ms, "updated_at_ms": s.updated_at_ms,
        "schema_toml": s.schema_toml,
    })
}

fn status_line(s: &pb::JobStatus) -> String {
    let mut line = format!(
        "{}  {:<9} round {}/{}  {} worker(s)  {}",
        s.job_id,
        s.state,
        s.round,
        s.rounds,
        s.workers.len(),
        s.name
    );
    if !s.reason.is_empty() {
        line.push_str(&format!("  — {}", s.reason));
    }
    if s.state == "done" {
        line.push_str(&format!("  ({} bytes, encrypted)", s.artifact_bytes));
    }
    if !s.aggregation.is_empty() {
        line.push_str(&format!("\n    {}", s.aggregation));
    }
    if !s.schema_toml.is_empty() {
        let columns = Schema::from_toml(&s.schema_toml).map_or(0, |c| c.columns.len());
        line.push_str(&format!(
            "\n    schema completed by the holders from their DP statistics ({columns} columns; `fedsynth status {} --schema` prints it)",
            s.job_id
        ));
    }
    for r in &s.refusals {
        line.push_str(&format!("\n    refused by {r}"));
    }
    line
}

/// `fedsynth status [JOB_ID] [--watch] [--json]`.
pub fn status(args: &StatusArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = jobs_client(&args.client).await?;
        loop {
            let jobs = match &args.job {
                Some(id) => vec![
                    client
                        .get_job(pb::GetJobRequest { job_id: id.clone() })
                        .await
                        .map_err(status_err)?
                        .into_inner(),
                ],
                None => {
                    client
                        .list_jobs(pb::ListJobsRequest {})
                        .await
                        .map_err(status_err)?
                        .into_inner()
                        .jobs
                }
            };
            if args.schema {
                let s = &jobs[0];
                if s.schema_toml.is_empty() {
                    bail!(
                        "job {}: no schema completed by the holders (its schema was complete when submitted, or its statistics are not done yet)",
                        s.job_id
                    );
                }
                print!("{}", s.schema_toml);
                return Ok(());
            }
            if args.json {
                let values: Vec<_> = jobs.iter().map(status_json).collect();
                let out = if args.job.is_some() {
                    values[0].clone()
                } else {
                    json!(values)
                };
                println!("{out}");
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                for j in &jobs {
                    println!("{}", status_line(j));
                }
            }
            let finished = jobs
                .iter()
                .all(|j| j.state == "done" || j.state == "failed");
            if !args.watch || finished {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// `fedsynth fetch JOB_ID --out DIR`.
pub fn fetch(args: &FetchArgs) -> Result<()> {
    fedsynth_proto::JobId::new(args.job.clone()).map_err(|e| anyhow!(e))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let target = args.out.join(format!("{}.fsx", args.job));
    runtime()?.block_on(async {
        let mut client = jobs_client(&args.client).await?;
        let mut stream = client
            .fetch_artifact(pb::FetchArtifactRequest { job_id: args.job.clone() })
            .await
            .map_err(status_err)?
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(status_err)? {
            chunks.push(chunk.data);
        }
        let total: usize = chunks.iter().map(Vec::len).sum();
        // Who made it: checked before anything is written.
        let text = client
            .fetch_signature(pb::FetchArtifactRequest { job_id: args.job.clone() })
            .await
            .map_err(status_err)?
            .into_inner()
            .text;
        let signed_by = if text.is_empty() {
            if !args.allow_unsigned {
                bail!(
                    "job {}: the output is not signed (its worker had no certificate), so anyone \
                     who knows the recipients' keys could have made it; pass --allow-unsigned to take it anyway",
                    args.job
                );
            }
            eprintln!("WARNING: job {}: the output is not signed by any worker", args.job);
            None
        } else {
            let ca = args.signer_ca.as_ref().or(args.client.ca.as_ref()).ok_or_else(|| {
                anyhow!("pass --signer-ca (the federation's CA) to check who signed the output")
            })?;
            let ca_pem =
                std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let signature = ArtifactSignature::from_text(&text)?;
            let sha256 = fedsynth_privacy::signature::digest_parts(chunks.iter().map(Vec::as_slice));
            let signers = signature
                .verify(&args.job, &sha256, &ca_pem)
                .with_context(|| format!("job {}: the output's signature does not hold", args.job))?;
            Some((signature, signers))
        };
        envelope::write_atomically(&target, |w| {
            for c in &chunks {
                std::io::Write::write_all(w, c)?;
            }
            Ok(())
        })?;
        if let Some((signature, signers)) = &signed_by {
            let sig_path = args.out.join(format!("{}.fsx.sig", args.job));
            envelope::write_atomically(&sig_path, |w| {
                std::io::Write::write_all(w, signature.to_text().as_bytes())
            })?;
            eprintln!(
                "signed by worker {} (certificate issued by the federation's CA); signature in {}",
                signers.join(", "),
                sig_path.display()
            );
        }
        // A job whose holders completed its schema: that schema (DP facts, no rows) beside
        // the output, as `fedsynth synth` writes its own.
        let status = client
            .get_job(pb::GetJobRequest {
                job_id: args.job.clone(),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        if !status.schema_toml.is_empty() {
            let schema_path = args.out.join(format!("{}.schema.toml", args.job));
            envelope::write_atomically(&schema_path, |w| {
                std::io::Write::write_all(w, status.schema_toml.as_bytes())
            })?;
            eprintln!(
                "the schema the holders completed from their DP statistics: {}",
                schema_path.display()
            );
        }
        println!(
            "wrote {} ({total} bytes, encrypted): open it with fedsynth decrypt {} --key NAME.key --out FILE",
            target.display(),
            target.display()
        );
        Ok(())
    })
}

/// `fedsynth audit [--job ID] [--json]`.
pub fn audit(args: &AuditArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = jobs_client(&args.client).await?;
        // Page through the trail, then check its hash chain before printing any of it.
        let mut entries: Vec<pb::AuditEntry> = Vec::new();
        loop {
            let page = client
                .list_audit(pb::ListAuditRequest {
                    job_id: args.job.clone().unwrap_or_default(),
                    after_seq: entries.last().map_or(0, |e| e.seq),
                    limit: fedsynth_proto::AUDIT_PAGE,
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .entries;
            let done = page.len() < fedsynth_proto::AUDIT_PAGE as usize;
            entries.extend(page);
            if done {
                break;
            }
        }
        if let Err((seq, what)) = fedsynth_proto::verify_audit(&entries, args.job.is_none()) {
            bail!("the audit trail is broken at entry {seq}: {what}");
        }
        eprintln!(
            "audit trail: {} entries, hash chain verified{}",
            entries.len(),
            if args.job.is_some() {
                " (entry by entry: a job's entries are not consecutive)"
            } else {
                " from the first entry"
            }
        );
        for e in &entries {
            if args.json {
                println!(
                    "{}",
                    json!({"seq": e.seq, "at_ms": e.at_ms, "actor": e.actor, "action": e.action, "job_id": e.job_id, "detail": e.detail, "hash": e.hash})
                );
            } else {
                println!(
                    "{:>5}  {}  {:<24} {:<9} {:<22} {}",
                    e.seq,
                    utc(e.at_ms),
                    e.actor,
                    e.action,
                    if e.job_id.is_empty() { "-" } else { &e.job_id },
                    e.detail
                );
            }
        }
        Ok(())
    })
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn utc(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}.{milli:03}")
}

/// `fedsynth certs --out DIR --server NAME --client NAME…`: a development CA and
/// certificates for a local federation.
pub fn certs(args: &CertsArgs) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let write = |name: &str, text: &str, secret: bool| -> Result<()> {
        let path = args.out.join(name);
        if path.exists() {
            bail!("{} exists: refusing to overwrite", path.display());
        }
        envelope::write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fedsynth development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write("ca.pem", &ca_cert.pem(), false)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<()> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer)?;
        write(&format!("{name}.pem"), &cert.pem(), false)?;
        write(&format!("{name}.key"), &key.serialize_pem(), true)?;
        Ok(())
    };
    issue(
        &args.server,
        vec![args.server.clone(), "localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    if args.clients.contains(&args.owner) || args.owner == args.server {
        bail!(
            "--owner {}: the owner's certificate needs a name of its own",
            args.owner
        );
    }
    for client in args.clients.iter().chain(std::iter::once(&args.owner)) {
        issue(
            client,
            vec![client.clone()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    println!(
        "wrote {}/ca.pem, {}, {} worker certificate(s) and the owner's {}.pem (development use only: the CA key is not kept)",
        args.out.display(),
        args.server,
        args.clients.len(),
        args.owner
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use fedsynth_privacy::envelope::SecretKey;
    use fedsynth_privacy::rng::SecureRng;

    /// The commented example job in configs/ is a valid job, read as `submit` reads it.
    #[test]
    fn the_example_job_file_is_a_valid_spec() {
        let repo = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("..");
        let dir = tempfile::tempdir().unwrap();
        for f in ["job.toml", "wage.schema.toml"] {
            std::fs::copy(repo.join("configs").join(f), dir.path().join(f)).unwrap();
        }
        let key = SecretKey::generate(&mut SecureRng::from_seed(1));
        std::fs::write(dir.path().join("team.pub"), key.public().to_text()).unwrap();
        let (spec, _) = super::job_spec(&dir.path().join("job.toml")).unwrap();
        assert_eq!(spec.server_optimizer, fedsynth_proto::ServerOptimizer::Adam);
        assert_eq!(spec.local_steps, 1);
        // A wrong optimiser is one line that names the field.
        let bad = std::fs::read_to_string(dir.path().join("job.toml"))
            .unwrap()
            .replace("server_optimizer = \"adam\"", "server_optimizer = \"sgd\"");
        std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
        let e = super::job_spec(&dir.path().join("bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server_optimizer") && !e.contains('\n'), "{e}");

        // The model's settings size the model: a wider TVAE has more parameters; a model
        // federated jobs cannot train, or a setting out of range, is one line naming it.
        let job = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
        let wide = job.replace(
            "model = \"tvae\"",
            "model = { kind = \"tvae\", hidden = 256, kl_weight = 0.1 }",
        );
        std::fs::write(dir.path().join("wide.toml"), wide).unwrap();
        let (wide, _) = super::job_spec(&dir.path().join("wide.toml")).unwrap();
        assert!(wide.parameters > spec.parameters);
        assert_eq!(wide.model.kind(), Some("tvae"));
        for (model, needle) in [
            ("model = { kind = \"ctgan\", pac = 0 }", "pac"),
            ("model = { kind = \"tvae\", hidden = 0 }", "hidden"),
            ("model = { kind = \"tvae\", depth = 3 }", "depth"),
            ("model = \"Not A Model\"", "not a model's name"),
        ] {
            std::fs::write(
                dir.path().join("m.toml"),
                job.replace("model = \"tvae\"", model),
            )
            .unwrap();
            let e = super::job_spec(&dir.path().join("m.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{model}: {e}");
        }
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(super::utc(1_795_784_940_986), "2026-11-27 13:09:00.986");
    }
}
