//! End to end: a coordinator and three workers as real processes on loopback, with mutual
//! TLS, each worker holding a third of a real table (ISLR Wage), training one generator.
//! Also the crash cases: the coordinator killed mid-job and restarted, a worker killed
//! mid-round and restarted, the coordinator killed between two statistics waves; the GAN
//! trained by the same three under secure aggregation.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// These tests start several processes each; they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const OWNER: &str = "owner-token-for-tests-0001";
const CLINICS: &str = "clinics-token-for-tests-01";
const OTHER: &str = "other-token-for-tests-0001";
const WORKERS: [&str; 3] = ["clinic-a", "clinic-b", "clinic-c"];

fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

/// The `fedsynth` binary built beside this test (cargo test --workspace builds it).
fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("fedsynth");
    assert!(
        path.exists(),
        "{} is missing: run cargo test --workspace (or cargo build -p fedsynth-cli)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.coordinator))
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let c = Self {
            dir,
            port,
            coordinator: None,
            workers: vec![None, None, None],
        };
        let mut certs = vec!["certs", "--out", "certs"];
        for w in WORKERS {
            certs.extend(["--client", w]);
        }
        c.ok(&certs);
        c.ok(&["keygen", "--out", "team"]);
        // Three shards of the table, each with the header.
        let text = std::fs::read_to_string(repo().join("cli/tests/data/wage.csv")).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let rows: Vec<&str> = lines.collect();
        for (k, w) in WORKERS.iter().enumerate() {
            let shard: Vec<&str> = rows.iter().skip(k).step_by(3).copied().collect();
            std::fs::write(
                c.path(&format!("{w}.csv")),
                format!("{header}\n{}\n", shard.join("\n")),
            )
            .unwrap();
        }
        for schema in [
            "wage.schema.toml",
            "wage.partial.schema.toml",
            "wage.names.schema.toml",
        ] {
            std::fs::copy(repo().join("configs").join(schema), c.path(schema)).unwrap();
        }
        std::fs::write(
            c.path("coordinator.toml"),
            format!(
                r#"listen = "127.0.0.1:{port}"
database_url = "sqlite://coordinator.db"
artifacts = "artifacts"
owner_token = "{OWNER}"
poll_interval_ms = 100
[tls]
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
client_ca = "certs/ca.pem"
[[federation]]
name = "clinics"
enrolment_token = "{CLINICS}"
[[federation]]
name = "other"
enrolment_token = "{OTHER}"
"#
            ),
        )
        .unwrap();
        for w in WORKERS {
            std::fs::write(
                c.path(&format!("{w}.toml")),
                format!(
                    r#"coordinator = "https://localhost:{port}"
federation = "clinics"
name = "{w}"
enrolment_token = "{CLINICS}"
data = "{w}.csv"
dataset = "wage"
state_dir = "state-{w}"
ledger = "state-{w}/ledger.db"
cap_epsilon = 10.0
cap_delta = 1e-5
[tls]
ca = "certs/ca.pem"
cert = "certs/{w}.pem"
key = "certs/{w}.key"
domain = "coordinator"
"#
                ),
            )
            .unwrap();
        }
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env(
                "FEDSYNTH_COORDINATOR",
                format!("https://localhost:{}", self.port),
            )
            .env("FEDSYNTH_TOKEN", OWNER)
            .env("FEDSYNTH_CA", self.path("certs/ca.pem"))
            .env("FEDSYNTH_CLIENT_CERT", self.path("certs/owner.pem"))
            .env("FEDSYNTH_CLIENT_KEY", self.path("certs/owner.key"))
            .env_remove("FEDSYNTH_TOKEN_FILE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fedsynth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn spawn(&self, args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.path(log)).unwrap();
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn start_coordinator(&mut self) {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        self.coordinator = Some(self.spawn(
            &["coordinator", "--config", "coordinator.toml"],
            &format!("coordinator-{n}.log"),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the coordinator did not start: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn start_worker(&mut self, k: usize) {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let config = format!("{}.toml", WORKERS[k]);
        self.workers[k] = Some(self.spawn(
            &["worker", "--config", &config],
            &format!("{}-{n}.log", WORKERS[k]),
        ));
    }

    fn kill_worker(&mut self, k: usize) {
        if let Some(mut c) = self.workers[k].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                ));
            }
        }
        out
    }

    fn job_file(
        &self,
        rounds: u32,
        local_steps: u32,
        min_workers: u32,
        rows: u32,
        aggregation: &str,
    ) -> PathBuf {
        let path = self.path("job.toml");
        std::fs::write(
            &path,
            format!(
                r#"name = "wage, three clinics"
federation = "clinics"
schema = "wage.schema.toml"
epsilon = 3.0
delta = 1e-5
rounds = {rounds}
local_steps = {local_steps}
batch_size = 100
min_workers = {min_workers}
round_deadline_s = 60
enrol_deadline_s = 20
round_tries = 3
rows = {rows}
format = "csv"
recipients = ["team.pub"]
init_seed = 11
secure_aggregation = "{aggregation}"
"#
            ),
        )
        .unwrap();
        path
    }

    /// Waits until `ready(status)`; panics with the logs on timeout or failure.
    fn wait(&self, job: &str, secs: u64, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.run(&["status", job, "--json"]);
            if out.status.success() {
                let s: Value = serde_json::from_slice(&out.stdout).unwrap();
                if ready(&s) {
                    return s;
                }
                assert_ne!(s["state"], "failed", "job failed: {s}\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for job {job}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The coordinator and the three workers.
    fn start_all(&mut self) {
        self.start_coordinator();
        for k in 0..WORKERS.len() {
            self.start_worker(k);
        }
    }

    /// Worker `k` was charged for `job` once: the noisy count, then the training, within the
    /// job's ε of 3 (`why` says when).
    fn assert_charged_once(&self, k: usize, job: &str, why: &str) {
        let (notes, spent) = self.ledger(k);
        assert_eq!(
            notes,
            vec![format!("job {job}: row count"), format!("job {job}")],
            "{why}"
        );
        assert!(spent <= 3.0 + 1e-9, "holder {k} spent {spent}");
    }

    /// Each worker's ledger: its spends (notes) and composed ε.
    fn ledger(&self, k: usize) -> (Vec<String>, f64) {
        let ledger = fedsynth_privacy::ledger::Ledger::open(
            self.path(&format!("state-{}/ledger.db", WORKERS[k])),
        )
        .unwrap();
        let st = ledger
            .statement(fedsynth_privacy::ledger::HOST, "wage")
            .unwrap();
        (st.spends.iter().map(|s| s.note.clone()).collect(), st.spent)
    }

    /// Submits a job of ε = 3 over the three clinics with the partial Wage schema (names and
    /// kinds only), a statistics share of 0.3 and `rounds` rounds; its id.
    fn submit_partial(&self, name: &str, rounds: u32) -> String {
        self.submit_partial_with(name, rounds, "wage.partial.schema.toml")
    }

    /// [`Cluster::submit_partial`] with the partial schema `schema`.
    fn submit_partial_with(&self, name: &str, rounds: u32, schema: &str) -> String {
        let job_file = self.path("partial.toml");
        std::fs::write(
            &job_file,
            format!(
                r#"name = "{name}"
federation = "clinics"
schema = "{schema}"
epsilon = 3.0
delta = 1e-5
rounds = {rounds}
local_steps = 1
batch_size = 100
min_workers = 3
round_deadline_s = 60
enrol_deadline_s = 20
round_tries = 3
recipients = ["team.pub"]
init_seed = 5
statistics_share = 0.3
"#
            ),
        )
        .unwrap();
        self.ok(&["submit", job_file.to_str().unwrap()])
    }

    /// Fetches `job`'s artifact into `fetched/` and decrypts it with the team's key: the
    /// synthetic table's text.
    fn fetch_decrypted(&self, job: &str) -> String {
        self.ok(&["fetch", job, "--out", "fetched"]);
        self.ok(&[
            "decrypt",
            &format!("fetched/{job}.fsx"),
            "--key",
            "team.key",
            "--out",
            "synthetic.csv",
        ]);
        std::fs::read_to_string(self.path("synthetic.csv")).unwrap()
    }

    /// Each holder charged the count, the statistics and the training of `job` once, within
    /// its ε of 3 (the statistics' events, Skellam sums and discoveries, share one note).
    fn assert_statistics_charged_once(&self, job: &str) {
        for k in 0..3 {
            let (mut notes, spent) = self.ledger(k);
            notes.dedup();
            assert_eq!(
                notes,
                vec![
                    format!("job {job}: row count"),
                    format!("job {job}: statistics"),
                    format!("job {job}")
                ],
                "holder {k}"
            );
            assert!(spent <= 3.0 + 1e-9, "holder {k} spent {spent}");
        }
    }

    fn audit(&self, job: &str) -> Vec<Value> {
        self.ok(&["audit", "--job", job, "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Round numbers committed, in audit order, with their worker counts.
fn committed_rounds(audit: &[Value]) -> Vec<(u32, u32)> {
    audit
        .iter()
        .filter(|e| e["action"] == "round")
        .map(|e| {
            let d = e["detail"].as_str().unwrap();
            // "round R committed with N worker(s): …"
            let words: Vec<&str> = d.split_whitespace().collect();
            (words[1].parse().unwrap(), words[4].parse().unwrap())
        })
        .collect()
}

#[test]
fn three_holders_train_one_generator_over_mutual_tls() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    c.start_all();
    let job_file = c.job_file(4, 1, 3, 600, "secagg");
    let job = c.ok(&[
        "submit",
        job_file.to_str().unwrap(),
        "--request-id",
        "demo-1",
    ]);
    // The same request id again: the same job.
    assert_eq!(
        c.ok(&[
            "submit",
            job_file.to_str().unwrap(),
            "--request-id",
            "demo-1"
        ]),
        job
    );
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 4);
    assert_eq!(done["workers"].as_array().unwrap().len(), 3);

    // The artifact is ciphertext; only the recipient opens it.
    c.ok(&["fetch", &job, "--out", "fetched"]);
    let sealed = std::fs::read(c.path(&format!("fetched/{job}.fsx"))).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("wage"),
        "the artifact must be encrypted"
    );
    // Signed by the sampling worker's enrolled key, checked against the federation's CA.
    let signature = std::fs::read_to_string(c.path(&format!("fetched/{job}.fsx.sig"))).unwrap();
    assert!(signature.contains(&job), "{signature}");
    c.ok(&[
        "decrypt",
        &format!("fetched/{job}.fsx"),
        "--key",
        "team.key",
        "--out",
        "synthetic.csv",
        "--signer-ca",
        "certs/ca.pem",
    ]);
    // A file changed in the artifact store (by anyone who can write there, the coordinator
    // included) is refused by fetch, which writes nothing; so is a forged signature file.
    let stored = c.path(&format!("artifacts/jobs/{job}/synthetic.csv.fsx"));
    let mut forged = std::fs::read(&stored).unwrap();
    let mid = forged.len() / 2;
    forged[mid] ^= 1;
    std::fs::write(&stored, &forged).unwrap();
    let out = c.run(&["fetch", &job, "--out", "refetched"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signature does not hold"), "{err}");
    assert!(!c.path(&format!("refetched/{job}.fsx")).exists());
    std::fs::write(c.path("forged.fsx"), &forged).unwrap();
    std::fs::copy(
        c.path(&format!("fetched/{job}.fsx.sig")),
        c.path("forged.fsx.sig"),
    )
    .unwrap();
    let out = c.run(&[
        "decrypt",
        "forged.fsx",
        "--key",
        "team.key",
        "--out",
        "forged.csv",
        "--signer-ca",
        "certs/ca.pem",
    ]);
    assert!(!out.status.success());
    assert!(!c.path("forged.csv").exists());
    let text = std::fs::read_to_string(c.path("synthetic.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let real = std::fs::read_to_string(repo().join("cli/tests/data/wage.csv")).unwrap();
    let real_header = real.lines().next().unwrap();
    assert_eq!(header.split(',').count(), real_header.split(',').count());
    assert_eq!(lines.count(), 600);

    // Each holder was charged once, within its cap and the job's ε.
    for k in 0..3 {
        c.assert_charged_once(
            k,
            &job,
            "the noisy count, then the training, each charged once",
        );
    }
    let audit = c.audit(&job);
    assert_eq!(
        committed_rounds(&audit),
        vec![(0, 3), (1, 3), (2, 3), (3, 3)]
    );
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for needed in [
        "submit", "accept", "keys", "initial", "round", "artifact", "fetch",
    ] {
        assert!(actions.contains(&needed), "{actions:?}");
    }
    assert!(
        done["aggregation"]
            .as_str()
            .unwrap()
            .starts_with("secure aggregation"),
        "{done}"
    );

    // The owner's commands refuse a wrong token with one clear line.
    let out = c
        .command(&["status", &job])
        .env("FEDSYNTH_TOKEN", "a-wrong-token-000000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNAUTHENTICATED") && err.trim().lines().count() == 1,
        "{err}"
    );
    // A peer without a client certificate is turned away in the TLS handshake, even with
    // the right token: no handler (and no audit entry) ever sees its request.
    let before = c.audit(&job).len();
    let out = c
        .command(&["status", &job])
        .env_remove("FEDSYNTH_CLIENT_CERT")
        .env_remove("FEDSYNTH_CLIENT_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("UNAUTHENTICATED") && err.trim().lines().count() == 1,
        "{err}"
    );
    // (Reading the trail may itself be audited: compare with one more read.)
    let after = c.audit(&job).len();
    let again = c.audit(&job).len();
    assert_eq!(
        after - before,
        again - after,
        "the refused peer was audited"
    );
}

#[test]
fn three_holders_train_the_gan_under_secure_aggregation() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    c.start_all();
    let job_file = c.job_file(3, 1, 3, 300, "secagg");
    let mut text = std::fs::read_to_string(&job_file).unwrap();
    text.push_str("model = { kind = \"ctgan\", hidden = 64 }\n");
    std::fs::write(&job_file, text).unwrap();
    let job = c.ok(&["submit", job_file.to_str().unwrap()]);
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 3);
    assert_eq!(done["workers"].as_array().unwrap().len(), 3);
    assert!(
        done["aggregation"]
            .as_str()
            .unwrap()
            .starts_with("secure aggregation"),
        "{done}"
    );
    c.ok(&["fetch", &job, "--out", "fetched"]);
    c.ok(&[
        "decrypt",
        &format!("fetched/{job}.fsx"),
        "--key",
        "team.key",
        "--out",
        "gan.csv",
        "--signer-ca",
        "certs/ca.pem",
    ]);
    let text = std::fs::read_to_string(c.path("gan.csv")).unwrap();
    let mut lines = text.lines();
    let real = std::fs::read_to_string(repo().join("cli/tests/data/wage.csv")).unwrap();
    assert_eq!(lines.next(), real.lines().next(), "the table's columns");
    assert_eq!(lines.count(), 300);
    // The GAN is charged as the TVAE is: the count, then every round's release, once.
    for k in 0..3 {
        c.assert_charged_once(k, &job, "the GAN's charges");
    }
    assert_eq!(
        committed_rounds(&c.audit(&job)),
        vec![(0, 3), (1, 3), (2, 3)]
    );
}

#[test]
fn three_holders_complete_a_partial_schema_from_their_dp_statistics() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    // A race category that only the third clinic holds: 200 of its 1,000 rows (7% of all).
    // A class must clear one holder's own discovery threshold: with 0.3 of ε = 3 for the
    // statistics of eleven columns, about 90 rows (a tenth of a 1,000-row shard).
    let shard = c.path("clinic-c.csv");
    let text = std::fs::read_to_string(&shard).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in lines.iter_mut().skip(1).take(200) {
        let mut cells: Vec<&str> = line.split(',').collect();
        cells[3] = "9. Held by one clinic";
        *line = cells.join(",");
    }
    std::fs::write(&shard, lines.join("\n") + "\n").unwrap();
    c.start_all();
    let job = c.submit_partial("wage, three clinics, no public schema", 3);
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 3);
    // The schema the holders completed is stored with the job and shown by status.
    let schema = c.ok(&["status", &job, "--schema"]);
    assert!(schema.contains("9. Held by one clinic"), "{schema}");
    assert!(schema.contains("source = \"dp\""), "{schema}");
    let line = c.ok(&["status", &job]);
    assert!(line.contains("schema completed by the holders"), "{line}");
    // The output has about the holders' summed DP row count, and the class of one holder.
    let out = c.fetch_decrypted(&job);
    let beside = std::fs::read_to_string(c.path(&format!("fetched/{job}.schema.toml"))).unwrap();
    assert_eq!(
        beside.trim(),
        schema.trim(),
        "fetch writes the completed schema beside"
    );
    let rows = out.lines().count() - 1;
    // The sum of three counts each noised at σ = 50 rows (σ ≈ 87 in all): within 4.5σ.
    assert!((2_610..=3_390).contains(&rows), "{rows} rows");
    assert!(
        out.contains("9. Held by one clinic"),
        "the one holder's class is missing"
    );
    c.assert_statistics_charged_once(&job);
    let audit = c.audit(&job);
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for needed in [
        "keys",
        "statistics",
        "schema",
        "initial",
        "round",
        "artifact",
    ] {
        assert!(actions.contains(&needed), "{actions:?}");
    }
}

#[test]
fn three_holders_decide_the_kinds_of_a_names_only_schema_from_their_dp_type_counts() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    // And a visit number, one per row (an identifier), named like every other column.
    for (k, w) in WORKERS.iter().enumerate() {
        let shard = c.path(&format!("{w}.csv"));
        let text = std::fs::read_to_string(&shard).unwrap();
        let lines: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, line)| match i {
                0 => format!("{line},visit"),
                _ => format!("{line},V{k}-{i:04}"),
            })
            .collect();
        std::fs::write(&shard, lines.join("\n") + "\n").unwrap();
    }
    let names = std::fs::read_to_string(c.path("wage.names.schema.toml")).unwrap();
    std::fs::write(
        c.path("visits.names.schema.toml"),
        format!("{names}\n[[columns]]\nname = \"visit\"\n"),
    )
    .unwrap();
    c.start_all();
    let job = c.submit_partial_with("wage, names only", 2, "visits.names.schema.toml");
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 2);
    let schema = c.ok(&["status", &job, "--schema"]);
    let kind_of = |name: &str| -> String {
        let at = schema
            .find(&format!("name = \"{name}\""))
            .unwrap_or_else(|| panic!("{name} missing: {schema}"));
        let rest = &schema[at..];
        let k = rest.find("kind = ").expect("a kind");
        rest[k + 8..].split('"').next().unwrap().to_string()
    };
    // Decided from the summed type counts, then completed like a declared kind.
    assert_eq!(kind_of("age"), "integer", "{schema}");
    assert_eq!(kind_of("year"), "integer", "{schema}");
    assert_eq!(kind_of("wage"), "continuous", "{schema}");
    assert_eq!(kind_of("maritl"), "categorical", "{schema}");
    assert_eq!(kind_of("education"), "categorical", "{schema}");
    // Every visit is rare: the holders read the column as an identifier.
    assert_eq!(kind_of("visit"), "id", "{schema}");
    assert!(!schema.contains("auto"), "{schema}");
    c.assert_statistics_charged_once(&job);
    let out = c.fetch_decrypted(&job);
    let header = out.lines().next().unwrap();
    assert_eq!(
        header,
        "year,age,maritl,race,education,region,jobclass,health,health_ins,logwage,wage,visit"
    );
    assert!(out.contains("1. Never Married"), "categories are generated");
    // No real visit number is written: pseudonyms only (or a null).
    let visits: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert!(visits.iter().any(|v| v.starts_with("anon-")));
    assert!(
        visits
            .iter()
            .all(|v| v.is_empty() || v.starts_with("anon-")),
        "{:?}",
        &visits[..visits.len().min(5)]
    );
}

#[test]
fn a_coordinator_killed_mid_job_resumes_from_the_last_committed_round() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    c.start_all();
    let job_file = c.job_file(8, 1, 3, 100, "secagg");
    let job = c.ok(&["submit", job_file.to_str().unwrap()]);
    c.wait(&job, 300, |s| s["round"].as_u64().unwrap_or(0) >= 2);
    c.kill_coordinator();
    std::thread::sleep(Duration::from_millis(500));
    c.start_coordinator();
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 8);
    let audit = c.audit(&job);
    let rounds: Vec<u32> = committed_rounds(&audit).iter().map(|r| r.0).collect();
    assert_eq!(
        rounds,
        (0..8).collect::<Vec<_>>(),
        "every round committed exactly once, in order"
    );
    assert!(
        audit.iter().any(|e| e["action"] == "resume"),
        "the restart is in the audit trail"
    );
    for k in 0..3 {
        let (notes, spent) = c.ledger(k);
        assert_eq!(
            notes,
            vec![format!("job {job}: row count"), format!("job {job}")],
            "charged once across the restart"
        );
        assert!(
            notes.len() <= 2 && spent <= 3.0 + 1e-9,
            "holder {k} charged {} times, ε {spent}",
            notes.len()
        );
    }
}

#[test]
fn a_coordinator_killed_mid_statistics_resumes_from_the_published_waves() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    // Workers poll every 1.5 s here, so that a statistics wave takes long enough to stop the
    // coordinator between two of them.
    let config = c.path("coordinator.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("poll_interval_ms = 100"));
    std::fs::write(
        &config,
        text.replace("poll_interval_ms = 100", "poll_interval_ms = 1500"),
    )
    .unwrap();
    c.start_all();
    let job = c.submit_partial("wage, no public schema, coordinator restarted", 2);
    // Stopped once the first wave is published and before the schema is agreed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let published = loop {
        let audit = c.audit(&job);
        assert!(
            !audit.iter().any(|e| e["action"] == "schema"),
            "the schema was agreed before the coordinator could be stopped mid-statistics"
        );
        let waves = audit.iter().filter(|e| e["action"] == "statistics").count();
        if waves >= 1 {
            break waves;
        }
        assert!(
            Instant::now() < deadline,
            "no statistics wave: {}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    c.kill_coordinator();
    std::thread::sleep(Duration::from_millis(500));
    c.start_coordinator();
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 2);
    let schema = done["schema_toml"].as_str().unwrap();
    assert!(schema.contains("source = \"dp\""), "{schema}");
    let audit = c.audit(&job);
    // The waves published before the stop were kept, not asked again: each wave number is
    // published once.
    let waves: Vec<&str> = audit
        .iter()
        .filter(|e| e["action"] == "statistics")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    let mut unique = waves.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        waves.len(),
        "a wave published twice: {waves:?}"
    );
    eprintln!("stopped after {published} wave(s) of {}", waves.len());
    assert!(waves.len() > published, "{waves:?}");
    c.assert_statistics_charged_once(&job);
}

#[test]
fn a_killed_worker_is_dropped_and_a_restarted_one_rejoins() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    c.start_all();
    let job_file = c.job_file(80, 1, 2, 100, "secagg");
    let job = c.ok(&["submit", job_file.to_str().unwrap()]);
    c.wait(&job, 300, |s| {
        s["state"] == "running" && s["round"].as_u64().unwrap_or(0) >= 1
    });
    c.kill_worker(2);
    // The others carry on without it.
    let after_kill = c.wait(&job, 300, |s| s["round"].as_u64().unwrap_or(0) >= 4)["round"]
        .as_u64()
        .unwrap();
    c.start_worker(2);
    let done = c.wait(&job, 300, |s| s["state"] == "done");
    assert_eq!(done["round"], 80);
    let audit = c.audit(&job);
    // The attempt the killed worker was in (or was counted live for) was void, its
    // received uploads dropped still masked, and the survivors retried: no partial sum.
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "retry"
                && e["detail"].as_str().unwrap().contains("attempt void")),
        "{audit:?}"
    );
    let rounds = committed_rounds(&audit);
    assert_eq!(
        rounds.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..80).collect::<Vec<_>>()
    );
    assert!(
        rounds.iter().any(|&(_, n)| n == 2),
        "some round went on with two workers: {rounds:?}"
    );
    assert!(
        rounds
            .iter()
            .any(|&(r, n)| u64::from(r) > after_kill && n == 3),
        "the restarted worker delivered a later round: {rounds:?}"
    );
    c.assert_charged_once(2, &job, "charged once across the restart");
}

#[test]
fn a_worker_with_another_federations_credentials_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::new();
    c.start_coordinator();
    // A worker of federation "other" (its token) that claims to belong to "clinics".
    let config = std::fs::read_to_string(c.path("clinic-a.toml"))
        .unwrap()
        .replace(CLINICS, OTHER);
    std::fs::write(c.path("intruder.toml"), config).unwrap();
    let out = c.run(&["worker", "--config", "intruder.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("federation"),
        "{err}"
    );
    // A member cannot enrol extra workers with its certificate: a worker is bound to the
    // name its certificate was issued for.
    let config = std::fs::read_to_string(c.path("clinic-a.toml"))
        .unwrap()
        .replace("name = \"clinic-a\"", "name = \"clinic-x\"")
        .replace("state-clinic-a", "state-x");
    std::fs::write(c.path("sybil.toml"), config).unwrap();
    let out = c.run(&["worker", "--config", "sybil.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not issued for"), "{err}");
    // A worker without a client certificate cannot even connect for work.
    let plain = std::fs::read_to_string(c.path("clinic-b.toml"))
        .unwrap()
        .replace("cert = \"certs/clinic-b.pem\"\n", "")
        .replace("key = \"certs/clinic-b.key\"\n", "");
    std::fs::write(c.path("nocert.toml"), plain).unwrap();
    let out = c.run(&["worker", "--config", "nocert.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("client certificate"));

    // A holder whose cap the job would pass refuses it, is charged nothing, and tells the
    // coordinator only that it declined (the reason stays in its own log).
    let config = std::fs::read_to_string(c.path("clinic-c.toml"))
        .unwrap()
        .replace("cap_epsilon = 10.0", "cap_epsilon = 0.5");
    std::fs::write(c.path("clinic-c.toml"), config).unwrap();
    // This job runs without secure aggregation, which each holder must allow.
    for w in WORKERS {
        let path = c.path(&format!("{w}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{text}[policy]\nallow_plain_aggregation = true\n"),
        )
        .unwrap();
    }
    for k in 0..3 {
        c.start_worker(k);
    }
    let job_file = c.job_file(2, 5, 2, 50, "none");
    let job = c.ok(&["submit", job_file.to_str().unwrap()]);
    let s = c.wait(&job, 120, |s| {
        !s["refusals"].as_array().unwrap().is_empty() && s["state"] != "enrolling"
    });
    let refusal = s["refusals"][0].as_str().unwrap();
    assert!(
        refusal.starts_with("clinics/clinic-c") && refusal.contains("declined by the holder"),
        "{refusal}"
    );
    for detail in ["cap", "ε", "policy:", "exceeded", "wage"] {
        assert!(
            !refusal.contains(detail),
            "the refusal says '{detail}': {refusal}"
        );
    }
    assert_eq!(c.ledger(2).0.len(), 0, "a refused job costs nothing");
    c.wait(&job, 300, |s| s["state"] == "done");
}
