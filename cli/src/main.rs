//! `fedsynth`: the one binary. Argument parsing and dispatch live here; each command's work
//! lives in its own module and in the libraries.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fedsynth_synth::device::DeviceChoice;

mod budget;
mod evaluate;
mod federation;
mod keys;
mod synth;

/// fedsynth trains differentially private generators of tabular data, on one machine or
/// federated across data holders, and hands back encrypted synthetic datasets.
#[derive(Debug, Parser)]
#[command(name = "fedsynth", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Turn one sensitive table into a differentially private synthetic table.
    Synth(SynthArgs),
    /// Score a synthetic table against the real one (shapes, pair trends, marginals, utility,
    /// membership inference, identifiability) and write report.html.
    Evaluate(EvaluateArgs),
    /// Privacy accounting: ε spent by DP-SGD, or the noise needed for a target ε.
    Budget(BudgetArgs),
    /// Create a recipient key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Keygen(KeygenArgs),
    /// Encrypt a file for one or more recipients' public keys.
    Encrypt(EncryptArgs),
    /// Decrypt a fedsynth encrypted file with a recipient's secret key.
    Decrypt(DecryptArgs),
    /// Run the coordinator of a federation (gRPC server; state in SQLite or PostgreSQL).
    Coordinator(ConfigArgs),
    /// Run a data holder's worker: connects out to the coordinator and trains locally with DP.
    Worker(ConfigArgs),
    /// Submit a federated job (JOB.toml); prints the job id.
    Submit(SubmitArgs),
    /// Show jobs: one or all, once or until they finish (--watch).
    Status(StatusArgs),
    /// Download a finished job's encrypted synthetic dataset.
    Fetch(FetchArgs),
    /// List the coordinator's audit trail: who did what, when.
    Audit(AuditArgs),
    /// Create a development CA and TLS certificates for a local federation.
    Certs(CertsArgs),
}

/// `--config FILE` of a long-running process.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file (TOML); see configs/ for commented examples.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// How the job owner's CLI reaches the coordinator.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The coordinator's URL.
    #[arg(
        long,
        value_name = "URL",
        env = "FEDSYNTH_COORDINATOR",
        default_value = "https://localhost:7443"
    )]
    coordinator: String,
    /// File holding the owner token (the coordinator's owner_token).
    #[arg(long, value_name = "FILE", env = "FEDSYNTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The owner token itself (prefer --token-file).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FEDSYNTH_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// CA certificate that signed the coordinator's certificate (PEM); omit for http://.
    #[arg(long, value_name = "FILE", env = "FEDSYNTH_CA")]
    ca: Option<PathBuf>,
    /// Name to check the coordinator's certificate against (default: the URL's host).
    #[arg(long, value_name = "NAME")]
    tls_domain: Option<String>,
    /// The owner's client certificate (PEM, signed by the federation's CA; `fedsynth certs`
    /// writes owner.pem): the coordinator turns away a TLS peer without one.
    #[arg(
        long,
        value_name = "FILE",
        env = "FEDSYNTH_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "FEDSYNTH_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
}

/// Arguments of `fedsynth submit`.
#[derive(Debug, Args)]
#[command(
    after_help = "JOB.toml names the federation, the schema file (public bin edges and \
categories for every column), the recipients' public key files, ε and δ per holder, rounds, \
local steps, the server optimiser (adam: FedAdam, the default; or average: FedAvg), \
min_workers and the output rows; see configs/job.toml."
)]
pub struct SubmitArgs {
    /// The job file.
    job: PathBuf,
    /// Idempotency key: submitting twice with the same id gives one job (default: random).
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `fedsynth status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One job (default: all).
    job: Option<String>,
    /// Refresh every second until the job(s) finish.
    #[arg(long)]
    watch: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print the schema the holders completed from their DP statistics (a job submitted
    /// with a partial schema), as TOML.
    #[arg(long, requires = "job")]
    schema: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `fedsynth fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The job.
    job: String,
    /// Directory to write JOB_ID.fsx (and its signature, JOB_ID.fsx.sig) into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The federation's CA, which issued the workers' certificates: the output must be
    /// signed by a worker it certified (default: --ca).
    #[arg(long, value_name = "FILE")]
    signer_ca: Option<PathBuf>,
    /// Accept an output no worker signed (a plaintext loopback federation, whose workers
    /// have no certificate). Anyone who knows the recipients' keys could have made it.
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `fedsynth audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this job's entries.
    #[arg(long, value_name = "JOB_ID")]
    job: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `fedsynth certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for ca.pem and NAME.pem / NAME.key pairs.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The coordinator's certificate name (also valid for localhost and 127.0.0.1).
    #[arg(long, value_name = "NAME", default_value = "coordinator")]
    server: String,
    /// A worker's certificate name; repeat for each worker.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// The job owner's certificate name (for submit, status, fetch and audit).
    #[arg(long, value_name = "NAME", default_value = "owner")]
    owner: String,
}

/// Arguments of `fedsynth budget`.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Examples:\n  \
    fedsynth budget --sampling-rate 0.01 --noise-multiplier 1.1 --steps 2000 --delta 1e-5\n  \
    fedsynth budget --calibrate --epsilon 3 --sampling-rate 0.01 --steps 2000 --delta 1e-5"
)]
pub struct BudgetArgs {
    /// Poisson sampling rate q: the chance that a row joins a batch (0 < q ≤ 1).
    #[arg(long, value_name = "Q")]
    sampling_rate: f64,
    /// Noise multiplier σ: noise std dev over the clipping norm (not with --calibrate).
    #[arg(
        long,
        value_name = "S",
        required_unless_present = "calibrate",
        conflicts_with = "calibrate"
    )]
    noise_multiplier: Option<f64>,
    /// Number of DP-SGD steps.
    #[arg(long, value_name = "T")]
    steps: u64,
    /// Target δ of the (ε, δ) guarantee (0 < δ < 1); a common choice is below 1/rows.
    #[arg(long, value_name = "D")]
    delta: f64,
    /// Accountant: pld (tight privacy loss distributions) or rdp (Rényi DP).
    #[arg(long, default_value = "pld", value_parser = ["pld", "rdp"])]
    accountant: String,
    /// Find the smallest noise multiplier that keeps ε at or below --epsilon.
    #[arg(long, requires = "epsilon")]
    calibrate: bool,
    /// Target ε for --calibrate.
    #[arg(long, value_name = "E")]
    epsilon: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `fedsynth synth`.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Every privacy spend is checked against the dataset's cap in the ledger before \
any row is used; a run that would pass the cap stops before training.\n\nExample:\n  \
fedsynth synth --input customers.csv --out synth.csv --epsilon 1"
)]
pub struct SynthArgs {
    /// The sensitive table (.csv or .parquet).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write the synthetic table (.csv, .parquet, or .fsx with --recipient).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Schema (TOML): column kinds (`integer`, `continuous`, `number`, `categorical`,
    /// `datetime`, `id`) and public bounds or categories. Without it, a CSV column's kind is a
    /// small charged DP release (a noisy count of numbers against text) and everything else is
    /// estimated privately; a schema column that gives its name only gets the same release.
    /// A table of fewer rows than 5σ of those statistics' noise (a handful of rows, or
    /// hundreds of columns on a few dozen rows) is refused unless the schema gives every
    /// column's edges or categories and their frequencies.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Generator model: tvae (a variational autoencoder; the default) or ctgan (a conditional
    /// GAN whose discriminator alone sees real rows, so only its steps are DP; conditions are
    /// drawn from the released column frequencies).
    #[arg(long, default_value = "tvae", value_parser = ["tvae", "ctgan"])]
    model: String,
    /// Total privacy budget ε for this run (row count, preprocessing and training); `inf`
    /// disables DP.
    #[arg(long, default_value = "3", value_name = "E")]
    epsilon: String,
    /// δ of the guarantee (default 1/n^1.5 and at most 1e-5, n the noisy row count); one of
    /// 1/n or more is refused.
    #[arg(long, value_name = "D")]
    delta: Option<f64>,
    /// Training epochs (default: 30, fewer for a large table so that training stays within
    /// 2,400 DP-SGD steps: a table of 300,000 rows gets 8).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Rows to generate (default: the noisy row count, about as many as the input).
    #[arg(long, value_name = "N")]
    rows: Option<usize>,
    /// Encrypt the output for this public key (NAME.pub); repeat for several recipients.
    #[arg(long = "recipient", value_name = "PUB")]
    recipients: Vec<PathBuf>,
    /// Write a quality and privacy report into this directory: report.html (self-contained:
    /// opens offline), the metrics.json behind it and its images (img/). It compares the
    /// output with the input, itemises this run's charges from the ledger and draws the
    /// training curve. It shows the real data's distributions: keep it with the real data.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// For the report only: real rows of the same table NOT in --input. Adds the
    /// membership-inference audit, utility (with --target) and the holdout baselines.
    #[arg(long, value_name = "FILE", requires = "report")]
    holdout: Option<PathBuf>,
    /// The column a downstream model will predict (a label, an outcome). Its two-way
    /// margins with every other column are measured privately (charged beside the
    /// preprocessing statistics, at their noise, on groups of values that each hold several
    /// times that noise) and the output is calibrated to them; the TVAE's decoder is
    /// conditioned on it. So the label keeps its link to each predictor, a rare class's
    /// included. With --report and --holdout, also the report's utility target.
    #[arg(long, value_name = "COL")]
    target: Option<String>,
    /// Without --target: measure no two-way margins. By default a run without a target
    /// picks a spanning tree of the table's strongest dependencies privately (one
    /// exponential mechanism per pair, as MST does), measures those margins at the
    /// statistics' noise and calibrates the output to those the generated rows can meet, so
    /// that a label one may later predict keeps its link to its strongest partner. At most
    /// a fifth of the statistics' budget, unless the table is large for its noise (about
    /// 860 rows per unit of σ or more: then as much of the whole tree as keeps that true);
    /// none on a table under 16σ rows. Both the picks and the margins are charged beside
    /// the preprocessing statistics.
    #[arg(long, conflicts_with = "target")]
    no_pairs: bool,
    /// For the report only: columns an adversary may know about a person (comma-separated):
    /// the output's k-anonymity on them.
    #[arg(long, value_name = "COLS", value_delimiter = ',', requires = "report")]
    quasi_identifiers: Vec<String>,
    /// Seed of the model's initialisation, latent noise and output sampling. Never of the DP
    /// noise or the batch sampling, which always come from the operating system (knowing
    /// the seed must not let anyone subtract the noise), so two runs still differ.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Where to train: cpu (burn's CPU backend), or wgpu for the best GPU wgpu finds
    /// (Vulkan, Metal or DX12). Pick an adapter with wgpu:discrete[:N], wgpu:integrated[:N],
    /// wgpu:virtual[:N], or wgpu:software (a software adapter such as Mesa's lavapipe: the GPU
    /// code path without a GPU, slower than cpu). The run says which adapter it found.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceChoice,
    /// Privacy ledger (default ~/.local/share/fedsynth/ledger.db).
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Name of the dataset in the ledger (default: `sha256:` and the digest of the input's
    /// bytes, so a copy of the file shares its budget).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// Cap on total ε for the dataset, set on its first run (later runs keep the stored cap).
    #[arg(long, default_value_t = 10.0, value_name = "E")]
    cap: f64,
    /// Expected batch size (Poisson sampling rate = batch / rows). Default: a tenth of the
    /// (noisy) row count, between 64 and 1,000, so a small table still gets a few hundred
    /// DP-SGD steps over its epochs (full batches would give it only one per epoch).
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Adam learning rate (default 5e-3 for tvae, 1e-3 for ctgan).
    #[arg(long, value_name = "LR")]
    learning_rate: Option<f64>,
    /// Per-example clipping norm C of DP-SGD (the noise std is σ·C).
    #[arg(long, default_value_t = 1.0, value_name = "C")]
    clip_norm: f64,
    /// Share of ε spent on the private preprocessing statistics (bounds, bins, categories)
    /// when the schema does not give them; unused with a complete public schema. Default:
    /// chosen from the table's size and width, the smallest of 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    /// 0.65, 0.8 at which the statistics' noise is at most 1% of the rows (the run prints its
    /// choice): a small table's statistics carry more of its output than its model does.
    #[arg(long, value_name = "SHARE")]
    preprocess_share: Option<f64>,
    /// Share of the sampler's proposals drawn from the released statistics instead of the
    /// model (0 to 1): the columns' one-way shares along the tree of the measured two-way
    /// margins, as MST samples (each column on its own where none was measured);
    /// calibration then weighs the model's rows and these alike. Default: the share of ε
    /// the plan gives the statistics (none at ε = inf, nor with --no-pairs or a --target
    /// whose margins were all too thin to measure), so a small table's weak model leans on
    /// its statistics and a large table's on its model.
    #[arg(long, value_name = "SHARE", value_parser = parse_unit_share)]
    margin_proposals: Option<f64>,
    /// Width of the hidden layers (default 128 for tvae, 256 for ctgan's generator and
    /// discriminator).
    #[arg(long, value_name = "N")]
    hidden: Option<usize>,
    /// ctgan only: rows per discriminator input (PacGAN). Default 1 with DP, 10 without. A
    /// pack is the clipped unit; with more than one row per pack each pack is clipped at C/2
    /// so that a row still moves a step by at most C, and a step has `pac` times fewer units:
    /// under DP, packing costs far more signal than it buys.
    #[arg(long, value_name = "N")]
    pac: Option<usize>,
    /// ctgan only: width of the discriminator's hidden layers. Its gradient is the noised
    /// one, and the noise grows with the square root of its size: keep it narrow.
    #[arg(long, default_value_t = 64, value_name = "N")]
    critic_hidden: usize,
    /// Weight of the VAE's KL term (below 1 keeps more of the dependencies between columns).
    #[arg(long, default_value_t = 0.15, value_name = "W")]
    kl_weight: f64,
}

/// Arguments of `fedsynth evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The real (training) table.
    #[arg(long, value_name = "FILE")]
    real: PathBuf,
    /// The synthetic table.
    #[arg(long, value_name = "FILE")]
    synth: PathBuf,
    /// Real rows held out of training: baseline for marginals and DCR, test set for utility,
    /// non-members and reference of the membership-inference audit.
    #[arg(long, value_name = "FILE")]
    holdout: Option<PathBuf>,
    /// Column to predict for the utility score (needs --holdout).
    #[arg(long, value_name = "COL")]
    target: Option<String>,
    /// Columns an adversary may know about a person (comma-separated): the synthetic table's
    /// k-anonymity on them, beside the real table's.
    #[arg(long, value_name = "COLS", value_delimiter = ',')]
    quasi_identifiers: Vec<String>,
    /// The run.json of a `fedsynth synth --report` run: its ledger charges and training curve
    /// go into this report too.
    #[arg(long, value_name = "FILE")]
    run: Option<PathBuf>,
    /// Directory for report.html (self-contained), metrics.json and img/. The report shows
    /// the real data's distributions: keep it with the real data.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Arguments of `fedsynth keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Base name: writes NAME.key and NAME.pub (never overwrites existing files).
    #[arg(long, value_name = "NAME")]
    out: PathBuf,
}

/// Arguments of `fedsynth encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// File to encrypt.
    file: PathBuf,
    /// A recipient's public key file (NAME.pub); repeat for several recipients.
    #[arg(long = "recipient", value_name = "PUB", required = true)]
    recipients: Vec<PathBuf>,
    /// Encrypted file to write (conventionally *.fsx).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Arguments of `fedsynth decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Encrypted file.
    file: PathBuf,
    /// Your secret key file (NAME.key, readable only by you).
    #[arg(long, value_name = "NAME.key")]
    key: PathBuf,
    /// Where to write the plaintext; written only once the whole file has authenticated.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Check, before decrypting, that a worker certified by this CA signed the file (its
    /// signature is FILE.sig, as `fedsynth fetch` writes it).
    #[arg(long, value_name = "CA.pem")]
    signer_ca: Option<PathBuf>,
}

/// `--margin-proposals`: a share between 0 and 1, refused when the flags are read.
fn parse_unit_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("'{s}' is not a share between 0 and 1")),
    }
}

/// `--device`: read when the flags are, so a misspelt device names the choices.
fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
        .map_err(|e: fedsynth_synth::SynthError| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's message up to its usage block, joined.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see fedsynth --help)", message.join(" "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Synth(args) => synth::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Budget(args) => budget::run(&args),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Encrypt(args) => keys::encrypt(&args),
        Command::Decrypt(args) => keys::decrypt(&args),
        Command::Coordinator(args) => federation::coordinator(&args.config),
        Command::Worker(args) => federation::worker(&args.config),
        Command::Submit(args) => federation::submit(&args),
        Command::Status(args) => federation::status(&args),
        Command::Fetch(args) => federation::fetch(&args),
        Command::Audit(args) => federation::audit(&args),
        Command::Certs(args) => federation::certs(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
