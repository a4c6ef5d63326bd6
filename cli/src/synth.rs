//! `fedsynth synth`: one sensitive table in, one DP synthetic table out.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fedsynth_privacy::envelope::{self, EnvelopeError, PublicKey};
use fedsynth_privacy::ledger::{Budget, Ledger};
use fedsynth_privacy::rng::SecureRng;
use fedsynth_privacy::{AccountantKind, DpEvent, Epsilon, SamplingRate, Steps};
use fedsynth_synth::ctgan::{self, Conditions, CtganConfig};
use fedsynth_synth::device::{self, DeviceChoice};
use fedsynth_synth::encoder::Encoder;
use fedsynth_synth::error::SynthError;
use fedsynth_synth::model::TvaeConfig;
use fedsynth_synth::plan::{
    PlanRequest, PrivacyPlan, ROW_COUNT_NOISE, look_events, noisy_row_count, target_delta,
};
use fedsynth_synth::report::{Charge, Epoch, RunPrivacy, RunRecord};
use fedsynth_synth::sample::Generator;
use fedsynth_synth::schema::{ColumnKind, Schema, is_derived};
use fedsynth_synth::stats::{
    LocalRelease, Plan, complete_schema_inferring, distinct_columns, distinct_noise, grown_tree,
    kind_noise, mark_wide, open_untyped, private_kinds, private_open_kinds, release_distinct,
    tree_affordable, untyped_columns,
};
use fedsynth_synth::table::{
    Format, declared_temporal, output_temporal, read_raw, table_bytes_typed,
};
use fedsynth_synth::{sample, train};
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;

use crate::SynthArgs;

/// The key the run's spends are recorded under: `--dataset`, else the input's content key.
fn dataset_of(args: &SynthArgs) -> Result<String> {
    Ok(match &args.dataset {
        Some(d) => d.clone(),
        None => fedsynth_privacy::ledger::dataset_key(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?,
    })
}

/// The run's ledger (`--ledger`, else [`default_ledger`]) and its path, `dataset`'s cap
/// set from `--cap` at `delta` where it has none yet.
fn open_ledger(
    args: &SynthArgs,
    dataset: &str,
    delta: fedsynth_privacy::Delta,
) -> Result<(Ledger, PathBuf)> {
    let path = args.ledger.clone().unwrap_or_else(default_ledger);
    let ledger = Ledger::open(&path)?;
    if ledger
        .cap(fedsynth_privacy::ledger::HOST, dataset)?
        .is_none()
    {
        let cap = Budget {
            epsilon: Epsilon::new(args.cap)?,
            delta,
        };
        ledger.set_cap(fedsynth_privacy::ledger::HOST, dataset, cap)?;
    }
    Ok((ledger, path))
}

/// The default ledger, shared with `fedsynth worker` on this host.
pub fn default_ledger() -> PathBuf {
    fedsynth_privacy::ledger::default_path()
}

/// The plaintext format of an output path: its extension, or for `NAME.fsx` the extension
/// inside (`synth.csv.fsx`), CSV by default.
fn output_format(out: &Path, encrypted: bool) -> Result<Format> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if encrypted && ext.eq_ignore_ascii_case("fsx") {
        let inner = Path::new(out.file_stem().unwrap_or_default());
        return Ok(Format::of(inner).unwrap_or(Format::Csv));
    }
    Format::of(out).map_err(|_| {
        anyhow::anyhow!(
            "--out {}: use a .csv or .parquet name (or .fsx with --recipient)",
            out.display()
        )
    })
}

/// What the run's output says of two-way margins measured at the budget of more planned
/// ones (see [`fedsynth_synth::stats::concentrated_sigma`]).
fn budget_of(planned: u64, measured: usize) -> String {
    if measured > 0 && (measured as u64) < planned {
        format!(", the budget of the {planned} planned")
    } else {
        String::new()
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn run(args: &SynthArgs) -> Result<()> {
    let started = Instant::now();
    let gan = match args.model.as_str() {
        "tvae" => false,
        "ctgan" => true,
        other => bail!("--model {other}: use tvae or ctgan"),
    };
    let hidden = args.hidden.unwrap_or(if gan { 256 } else { 128 });
    let learning_rate = args.learning_rate.unwrap_or(if gan { 1e-3 } else { 5e-3 });
    if let Some(pac) = args.pac
        && !(1..=64).contains(&pac)
    {
        bail!("--pac must be between 1 and 64, not {pac}");
    }
    if !(1..=4096).contains(&args.critic_hidden) {
        bail!(
            "--critic-hidden must be between 1 and 4096, not {}",
            args.critic_hidden
        );
    }
    let device_choice = args.device;
    let recipients = args
        .recipients
        .iter()
        .map(PublicKey::read)
        .collect::<Result<Vec<_>, _>>()?;
    let format = output_format(&args.out, !recipients.is_empty())?;
    if args.out == args.input {
        bail!("--out must differ from --input");
    }
    let epsilon: f64 = match args.epsilon.as_str() {
        "inf" | "infinity" | "∞" => f64::INFINITY,
        text => text
            .parse()
            .map_err(|_| anyhow::anyhow!("--epsilon {text}: not a number (or inf)"))?,
    };
    if !(epsilon > 0.0) {
        bail!("--epsilon must be > 0 (or inf for no privacy)");
    }

    if !(1..=4096).contains(&hidden) {
        bail!("--hidden must be between 1 and 4096, not {hidden}");
    }
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        bail!("--learning-rate: the learning rate must be a number > 0, not {learning_rate}");
    }
    if !(args.kl_weight.is_finite() && args.kl_weight >= 0.0) {
        bail!("--kl-weight must be a number ≥ 0, not {}", args.kl_weight);
    }
    let raw = read_raw(&args.input)?;
    // The report's inputs are checked before anything is spent or trained.
    let holdout_raw = args.holdout.as_deref().map(read_raw).transpose()?;
    for (flag, name) in args.target.iter().map(|t| ("--target", t)).chain(
        args.quasi_identifiers
            .iter()
            .map(|q| ("--quasi-identifiers", q)),
    ) {
        if !raw.names.contains(name) {
            bail!("{flag} {name}: not a column of {}", args.input.display());
        }
    }
    if let Some(h) = &holdout_raw
        && let Some(missing) = raw.names.iter().find(|n| !h.names.contains(n))
    {
        bail!(
            "--holdout: column '{missing}' of {} is missing",
            args.input.display()
        );
    }
    let declared = declared_temporal(&args.input)?;
    let given = args.schema.as_deref().map(Schema::read).transpose()?;
    let private_run = epsilon.is_finite();

    // Two generators: `rng` (seeded by --seed when given) for the model's initialisation, the
    // latent noise and the output's sampling; `private` (always the operating system's) for
    // every DP release and the batch sampling, so that a known seed never removes the noise.
    let mut rng = match args.seed {
        Some(s) => SecureRng::from_seed(s),
        None => SecureRng::from_os(),
    };
    let mut private = SecureRng::for_dp_noise();
    // A private run never uses the exact row count: a noisy count (charged below with the
    // rest of the plan, before any of it leaves this process) sets q, δ and the output size.
    let rows = if private_run {
        noisy_row_count(raw.rows(), &mut private)
    } else {
        raw.rows()
    };
    // Without a schema, whether a CSV column holds numbers or text is a fact about its rows:
    // a noisy release decides it (charged with the plan, after the count).
    let inferred = given.is_none();
    // The columns whose kinds a given schema leaves open (every one without a schema).
    let open_kinds: Vec<String> = given.as_ref().map_or_else(Vec::new, |s| {
        s.open_kinds().into_iter().map(str::to_string).collect()
    });
    let (schema, kind_release) = match given {
        // A schema that leaves some kinds open: those columns' kinds are released as a
        // table without a schema has all of them released.
        Some(schema) if !schema.open_kinds().is_empty() => {
            let open = open_untyped(&raw, &schema);
            let sigma = if private_run && open > 0 {
                kind_noise(open, rows, epsilon, target_delta(args.delta, rows)?)
            } else {
                0.0
            };
            (
                private_open_kinds(&raw, &schema, sigma, &mut private)?,
                (sigma > 0.0).then_some((sigma, open)),
            )
        }
        Some(schema) => (schema, None),
        None => {
            let open = untyped_columns(&raw);
            let sigma = if private_run && open > 0 {
                kind_noise(open, rows, epsilon, target_delta(args.delta, rows)?)
            } else {
                0.0
            };
            (
                private_kinds(&raw, sigma, &mut private),
                (sigma > 0.0).then_some((sigma, open)),
            )
        }
    };
    let modelled = schema
        .columns
        .iter()
        .filter(|c| !is_derived(&c.name))
        .count();
    let non_numbers = raw.non_numbers(&schema.kinds());
    // Each column's cells are dropped once typed: memory never holds both whole.
    let table = raw.into_typed(&schema.kinds())?;
    // With the kinds, each text column's count of distinct values: whether most of its
    // values are rare (an identifier) is known before the statistics are planned.
    let mut schema = schema;
    let distinct_release = if inferred {
        let columns = distinct_columns(&schema);
        let sigma = if private_run {
            distinct_noise(columns, epsilon, target_delta(args.delta, rows)?)
        } else {
            0.0
        };
        release_distinct(&table, &mut schema, sigma, &mut private);
        (sigma > 0.0 && columns > 0).then_some((sigma, columns))
    } else {
        None
    };
    // The target's two-way margins: with every other column but identifiers (their
    // values carry no link worth a release), each one release.
    // Without a target (and unless --no-pairs), a spanning tree of the strongest
    // dependencies among the same columns is picked privately and measured instead (see
    // `Encoder::select_pairs`): one pick and one margin per column but one, as far as the
    // budget has room (`stats::tree_pairs`).
    let pair_columns = |schema: &Schema| -> Vec<String> {
        schema
            .columns
            .iter()
            .filter(|c| {
                args.target.as_ref() != Some(&c.name)
                    && c.kind != ColumnKind::Id
                    && !c.wide
                    && !is_derived(&c.name)
            })
            .map(|c| c.name.clone())
            .collect()
    };
    let auto_pairs = args.target.is_none() && !args.no_pairs;
    let mut pair_with: Vec<String> = if args.target.is_some() || auto_pairs {
        pair_columns(&schema)
    } else {
        Vec::new()
    };
    let stats_plan_of = |schema: &Schema, pair_with: &[String]| {
        let plan = if inferred {
            Plan::for_inferred(schema)
        } else {
            Plan::for_schema(schema)
        };
        let (pairs, selections) = if auto_pairs {
            let tree = fedsynth_synth::stats::tree_pairs(plan, pair_with.len());
            (tree, tree)
        } else {
            (pair_with.len() as u64, 0)
        };
        Plan {
            pairs,
            selections,
            ..plan
        }
    };
    let mut stats_plan = stats_plan_of(&schema, &pair_with);
    let batch_size = args
        .batch_size
        .unwrap_or_else(|| fedsynth_synth::plan::default_batch_size(rows));
    let mut request = PlanRequest {
        epsilon: Some(epsilon),
        delta: args.delta,
        rows,
        count_noise: private_run.then_some(ROW_COUNT_NOISE),
        kind_noise: kind_release,
        distinct_noise: distinct_release,
        wide_mean: None,
        epochs: args
            .epochs
            .unwrap_or_else(|| fedsynth_synth::plan::default_epochs(rows, batch_size)),
        batch_size,
        preprocess_share: args.preprocess_share,
        learning_rate,
        clip_norm: args.clip_norm,
    };
    // A table too small (or too wide) for its statistics is refused by the plan; the
    // refusal depends on the releases made so far (the noisy count, the kinds), so they
    // are charged before it is shown.
    let plan = |request: &PlanRequest, stats: Plan| -> Result<PrivacyPlan> {
        match fedsynth_synth::plan::plan(request, stats) {
            Err(SynthError::TooFewRows(message)) => {
                let looks: Vec<DpEvent> =
                    look_events(request)?.into_iter().map(|(_, e)| e).collect();
                if !looks.is_empty() {
                    let delta = target_delta(request.delta, request.rows)?;
                    let dataset = dataset_of(args)?;
                    let (ledger, _) = open_ledger(args, &dataset, delta)?;
                    ledger
                        .try_spend_all(
                            fedsynth_privacy::ledger::HOST,
                            &dataset,
                            &looks,
                            &format!("synth → {} (refused: too few rows)", args.out.display()),
                        )
                        .context("refused before training")?;
                }
                bail!(message)
            }
            other => Ok(other?),
        }
    };
    let mut privacy = plan(&request, stats_plan)?;
    // Columns whose values are seen fewer times on average than the discovery threshold
    // (identifiers) get a discovery with noise of its own, planned again.
    if private_run
        && let Some(mean) = mark_wide(
            &mut schema,
            rows,
            privacy.preprocess.threshold(),
            distinct_release.map_or(0.0, |(sigma, _)| sigma),
        )
    {
        if auto_pairs {
            pair_with = pair_columns(&schema);
        }
        stats_plan = stats_plan_of(&schema, &pair_with);
        request.wide_mean = Some(mean);
        privacy = plan(&request, stats_plan)?;
    }
    // A two-way margin splits the target in two groups at least, and each group by two of
    // the other column's, each group holding PAIR_Z·σ rows per cell (see
    // `Encoder::measure_pairs`): a table under 4·PAIR_Z·σ rows holds no such margin, and its
    // share of the budget goes to the other statistics.
    // Picked margins (no target) need twice that: most of a tree's columns must split into
    // two such groups for the picks to find a link, and below it (psid1976's 629 rows at
    // ε = 1, σ = 58) the one-way statistics keep the whole share.
    let pair_floor = if auto_pairs { 8.0 } else { 4.0 }
        * fedsynth_synth::encoder::PAIR_Z
        * privacy.preprocess.sigma;
    // Its note names the noisy count: shown once the count is charged, below.
    let mut pair_note = None;
    if stats_plan.pairs > 0 && (rows as f64) < pair_floor {
        pair_note = Some(format!(
            "note: {}: about {rows} rows hold no two-way margin clear of its noise at this ε \
             (at least {pair_floor:.0} needed); none measured",
            match &args.target {
                Some(t) => format!("--target {t}"),
                None => "two-way margins".to_string(),
            }
        ));
        pair_with.clear();
        stats_plan = stats_plan_of(&schema, &pair_with);
        privacy = plan(&request, stats_plan)?;
    }
    // A table large for its noise measures more of its tree than a fifth of the statistics'
    // budget (`stats::tree_affordable`): the most margins, up to the whole tree, whose plan
    // keeps the numeric statistics fine, by bisection (σ grows with the margins). The plans
    // it accepts only grow, so the last one is the kept count's.
    let whole_tree = pair_with.len().saturating_sub(1) as u64;
    let mut tree_grown = false;
    if auto_pairs
        && private_run
        && stats_plan.pairs > 0
        && stats_plan.pairs < whole_tree
        && tree_affordable(rows, privacy.preprocess.sigma)
    {
        let with = |k: u64| Plan {
            pairs: k,
            selections: k,
            ..stats_plan
        };
        let mut accepted = None;
        let kept = grown_tree(
            stats_plan.pairs,
            whole_tree,
            |k| match fedsynth_synth::plan::plan(&request, with(k)) {
                Ok(p) if tree_affordable(rows, p.preprocess.sigma) => {
                    accepted = Some(p);
                    true
                }
                _ => false,
            },
        );
        if let Some(p) = accepted {
            privacy = p;
            stats_plan = with(kept);
            tree_grown = true;
        }
    }

    let opened = device::open_described(device_choice, rng.next_u64())?;
    if device_choice != DeviceChoice::Cpu {
        eprintln!("device: {}", opened.description);
    }
    let device = opened.device;

    // Spend before touching the data: a refusal stops here with nothing released. Everything
    // that can fail for reasons other than the data (device, settings) is checked above.
    let dataset = dataset_of(args)?;
    let mut run_privacy: Option<RunPrivacy> = None;
    match privacy.target {
        None => eprintln!(
            "WARNING: --epsilon inf trains WITHOUT differential privacy: the output carries NO privacy \
             guarantee and may reveal individual rows. Use it only to compare against private runs."
        ),
        Some((_, delta)) => {
            let (ledger, ledger_path) = open_ledger(args, &dataset, delta)?;
            let spends = ledger
                .try_spend_all(
                    fedsynth_privacy::ledger::HOST,
                    &dataset,
                    &privacy.events,
                    &format!("synth → {}", args.out.display()),
                )
                .context("refused before training")?;
            if args.report.is_some() {
                // The last spend's ε is the dataset's total after this run (composed once,
                // by the ledger).
                run_privacy = Some(RunPrivacy {
                    ledger: ledger_path.display().to_string(),
                    dataset: dataset.clone(),
                    charges: spends
                        .iter()
                        .zip(&privacy.purposes)
                        .map(|(s, purpose)| -> Result<Charge> {
                            Ok(Charge {
                                purpose: purpose.to_string(),
                                what: s.event.describe(),
                                epsilon_alone: AccountantKind::Pld
                                    .epsilon(std::slice::from_ref(&s.event), delta)?,
                                epsilon_after: s.epsilon_after,
                            })
                        })
                        .collect::<Result<_>>()?,
                    epsilon: privacy.epsilon_total,
                    delta: delta.get(),
                    cap_epsilon: ledger
                        .cap(fedsynth_privacy::ledger::HOST, &dataset)?
                        .map_or(f64::NAN, |c| c.epsilon.get()),
                    spent_epsilon: spends.last().map_or(0.0, |s| s.epsilon_after),
                });
            }
            if let Some(note) = pair_note.take() {
                eprintln!("{note}");
            }
            if let Some((sigma, columns)) = kind_release {
                // The derived columns (a datetime's parts, the null pattern) are not the
                // file's.
                let count = |kind| {
                    schema
                        .columns
                        .iter()
                        .filter(|c| c.kind == kind && !is_derived(&c.name))
                        .filter(|c| open_kinds.is_empty() || open_kinds.contains(&c.name))
                        .count()
                };
                eprintln!(
                    "kinds: {columns} CSV columns typed by a noisy count of numbers, text and \
                     dates (σ = {sigma:.1} rows): {} numeric, {} categorical, {} datetime{}; a \
                     --schema declares them instead",
                    count(ColumnKind::Number),
                    count(ColumnKind::Categorical),
                    count(ColumnKind::Datetime),
                    match distinct_release {
                        Some((sigma, n)) => format!(
                            " (distinct values of the {n} text columns counted at σ = {sigma:.1})"
                        ),
                        None => String::new(),
                    },
                );
            }
            if !stats_plan.is_free() {
                // Only the kinds of statistic the plan has (a table of identifiers has no
                // histogram to name).
                let mut parts = Vec::new();
                if stats_plan.releases > 0 {
                    parts.push(format!(
                        "{} numeric histograms at σ = {:.1} rows",
                        stats_plan.releases, privacy.preprocess.sigma
                    ));
                }
                if stats_plan.discoveries > 0 {
                    parts.push(format!(
                        "{} category discoveries at σ = {:.1}",
                        stats_plan.discoveries, privacy.preprocess.sigma_categories
                    ));
                }
                if stats_plan.points > 0 {
                    parts.push(format!(
                        "{} point-mass discoveries at σ = {:.1} (values held by about {:.0} \
                         rows or more are generated exactly)",
                        stats_plan.points,
                        privacy.preprocess.sigma_points,
                        privacy.preprocess.threshold_points()
                    ));
                }
                if stats_plan.wide > 0 {
                    parts.push(format!(
                        "{} of a column of many rare values at σ = {:.1} (values seen about \
                         {:.0} times or more are released)",
                        stats_plan.wide,
                        privacy.preprocess.sigma_wide,
                        privacy.preprocess.threshold_wide()
                    ));
                }
                eprintln!(
                    "plan: {} columns, about {rows} rows: {}{}, {:.0}% of ε{}",
                    modelled,
                    parts.join(" and "),
                    if stats_plan.distinct > 0 {
                        format!(
                            " ({} with a count of distinct values at σ = {:.1})",
                            stats_plan.distinct, privacy.preprocess.sigma_distinct
                        )
                    } else {
                        String::new()
                    },
                    100.0 * privacy.preprocess_share,
                    if args.preprocess_share.is_some() {
                        " (--preprocess-share)"
                    } else {
                        " (chosen for the table's size and width)"
                    }
                );
                if stats_plan.pairs > 0 {
                    match &args.target {
                        Some(t) => eprintln!(
                            "plan: {} two-way margins of the target {t} at σ = {:.1} rows, in that share",
                            stats_plan.pairs, privacy.preprocess.sigma
                        ),
                        None => eprintln!(
                            "plan: {} two-way margins of the strongest dependencies ({}{}, picked \
                             privately at ε₀ = {:.3} each) at σ = {:.1} rows, in that share; \
                             --target names a label to measure its margins instead",
                            stats_plan.pairs,
                            if stats_plan.pairs == whole_tree {
                                "a whole spanning tree".to_string()
                            } else {
                                format!("of a spanning tree's {whole_tree}")
                            },
                            if tree_grown {
                                ", more than a fifth of the statistics' budget: the table is \
                                 large for its noise"
                            } else {
                                ""
                            },
                            fedsynth_synth::stats::selection_epsilon(privacy.preprocess.sigma),
                            privacy.preprocess.sigma
                        ),
                    }
                }
                if privacy.statistics_coarse {
                    eprintln!(
                        "note: the table is small for its width at this ε (noise {:.1}% of the rows \
                         even with {:.0}% of ε): bins will be coarse and rare categories may be \
                         lost; a --schema with min/max, edges or categories costs nothing",
                        100.0 * privacy.preprocess.sigma / rows as f64,
                        100.0 * privacy.preprocess_share
                    );
                }
            }
            eprintln!(
                "privacy: ε = {:.3} at δ = {:.2e} (preprocessing {:.3}, DP-SGD σ = {:.3} over {} steps at q = {:.4}); recorded in {}",
                privacy.epsilon_total,
                delta.get(),
                privacy.epsilon_preprocess,
                privacy.training.noise_multiplier.unwrap_or(0.0),
                privacy.training.steps(),
                privacy.training.sampling_rate,
                ledger_path.display()
            );
        }
    }

    if !non_numbers.is_empty() {
        eprintln!(
            "note: cells that are not a number or a date as their column's kind asks (text, \
             NA, NaN, inf, an impossible date) are read as missing in: {}",
            non_numbers.join(", ")
        );
    }
    let completion = complete_schema_inferring(
        &table,
        &schema,
        Some(privacy.preprocess),
        inferred.then_some(rows),
        &mut private,
    )?;
    if !completion.ids.is_empty() {
        eprintln!(
            "note: identifiers (kind id: many values, most too rare to release): {}; released \
             values are kept, every other row gets a pseudonym (anon-…); declare them \
             categorical in a --schema to keep only the released values",
            completion.ids.join(", ")
        );
    }
    if !completion.coarse.is_empty() {
        eprintln!(
            "note: coarsened (no value range clear of the noise; the most significant run of buckets was taken): {}; \
             give their min and max in a --schema for better bins",
            completion.coarse.join(", ")
        );
    }
    let completed = completion.schema;
    let table = fedsynth_synth::nulls::with_pattern(table, &completed);
    let mut encoder = Encoder::new(&completed, &table)?;
    // The frequencies and margins are the run's DP releases at most at the numeric
    // histograms' noise (categories get less; a public schema's are exact).
    encoder.set_target_noise(privacy.preprocess.sigma);
    let data = encoder.encode_rows(&table)?;
    // From here the typed rows are the report's only: without one, memory holds the compact
    // encoded rows through training, not the table too.
    let table = args.report.is_some().then_some(table);
    if auto_pairs && stats_plan.selections > 0 {
        let picked = encoder.select_pairs(
            &data,
            &pair_with,
            stats_plan.selections as usize,
            rows,
            privacy.preprocess.sigma,
            &mut private,
        );
        // The picks that stopped early leave budget: the picked margins share all of it.
        let noise = privacy
            .preprocess
            .for_margins(stats_plan.pairs, picked.len());
        let sigma = noise.sigma;
        let mut release = LocalRelease::new(noise, &mut private);
        let mut measured = Vec::new();
        for (a, b) in &picked {
            if let Some(m) =
                encoder.measure_pairs(&data, a, std::slice::from_ref(b), rows, &mut release)?
                && !m.is_empty()
            {
                measured.push(format!("{a}×{b}"));
            }
        }
        encoder.mark_pairs_picked();
        eprintln!(
            "pairs: the output is calibrated to {} two-way margins picked privately{}",
            measured.len(),
            if measured.is_empty() {
                String::new()
            } else {
                format!(
                    " (at σ = {sigma:.1} rows{}): {}",
                    budget_of(stats_plan.pairs, picked.len()),
                    measured.join(", ")
                )
            }
        );
    }
    if let Some(t) = &args.target {
        // The margins go through the same release as every other histogram of the run, the
        // budget of those that cannot be measured (seen from the released frequencies)
        // shared by the rest.
        let measurable = encoder
            .measurable_pairs(t, &pair_with, rows, privacy.preprocess.sigma)
            .unwrap_or_default();
        let noise = privacy
            .preprocess
            .for_margins(stats_plan.pairs, measurable.len());
        let sigma = noise.sigma;
        let mut release = LocalRelease::new(noise, &mut private);
        match encoder.measure_pairs(&data, t, &measurable, rows, &mut release)? {
            // A datetime or an identifier is no label: its share of the plan stays
            // charged, unused.
            None => eprintln!(
                "note: --target {t} is a datetime or an identifier here, not a label: no two-way margins measured"
            ),
            Some(measured) => {
                let skipped: Vec<&str> = pair_with
                    .iter()
                    .filter(|n| !measured.contains(n))
                    .map(String::as_str)
                    .collect();
                eprintln!(
                    "target {t}: the output is calibrated to its two-way margins with {} of {} \
                     columns at σ = {sigma:.1} rows{}{}",
                    measured.len(),
                    pair_with.len(),
                    budget_of(stats_plan.pairs, measurable.len()),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (not {}: an identifier, a datetime, too many cells, or too few \
                             rows in one of its groups for the noise)",
                            skipped.join(", ")
                        )
                    }
                );
                if !measured.is_empty() {
                    eprintln!(
                        "target {t}: the rows kept are drawn within its classes, each at its \
                         released share"
                    );
                }
            }
        }
    }
    // A share of the proposals drawn from the released statistics, the rest from the model:
    // the plan's split of ε between the two unless the flag gives one. None by default
    // where --no-pairs turned the margins off, nor where a target's margins were all too
    // thin to measure: its model, conditioned on the target's classes, holds the target's
    // links that rows of independent columns would dilute (psid1976 at ε = 1 with
    // --target participation, the four of sixteen noise seeds without a margin: 3-way
    // error 1.358 → 1.423 with them; without a target, nine seeds, 1.344 → 1.335).
    let default_share = if args.no_pairs || (args.target.is_some() && !encoder.has_margins()) {
        0.0
    } else {
        privacy.preprocess_share
    };
    encoder.set_margin_proposals(args.margin_proposals.unwrap_or(default_share));
    let share = encoder.margin_proposals();
    if share > 0.0 {
        eprintln!(
            "proposals: {:.0}% drawn from the released statistics ({}), the rest from the \
             model{}",
            100.0 * share,
            if encoder.has_margins() {
                "one-way shares along the tree of the measured two-way margins"
            } else {
                "each column on its own at its one-way shares: no two-way margin was measured"
            },
            if args.margin_proposals.is_some() {
                " (--margin-proposals)"
            } else {
                ": the share of ε the statistics got"
            }
        );
    }
    let bar = ProgressBar::new(privacy.training.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] epoch {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("training");
    let pre_events: Vec<DpEvent> = privacy
        .events
        .iter()
        .filter(|e| !matches!(e, DpEvent::SubsampledGaussian { .. }))
        .cloned()
        .collect();
    let spent_after = |steps: u64| -> Option<f64> {
        let (_, delta) = privacy.target?;
        let mut events = pre_events.clone();
        events.push(DpEvent::SubsampledGaussian {
            sampling_rate: SamplingRate::new(privacy.training.sampling_rate).ok()?,
            noise_multiplier: fedsynth_privacy::NoiseMultiplier::new(
                privacy.training.noise_multiplier?,
            )
            .ok()?,
            steps: Steps::new(steps).ok()?,
        });
        AccountantKind::Pld.epsilon(&events, delta).ok()
    };
    let mut epochs: Vec<Epoch> = Vec::new();
    let on_epoch = |r: train::EpochReport| {
        let spent = spent_after(r.steps);
        if args.report.is_some() {
            epochs.push(Epoch {
                epoch: r.epoch as u64,
                loss: r.loss,
                epsilon: spent,
            });
        }
        let eps = spent.map_or_else(|| "ε ∞".to_string(), |e| format!("ε {e:.2}"));
        bar.set_message(format!("loss {:.3}  {eps}", r.loss));
        bar.inc(1);
        if !bar.is_hidden() {
            return;
        }
        eprintln!(
            "epoch {}/{}: loss {:.3}, {eps}",
            r.epoch, privacy.training.epochs, r.loss
        );
    };
    let model: Box<dyn Generator> = if gan {
        let conditions = Conditions::new(encoder.slot_frequencies());
        let mut model = CtganConfig::new(encoder.width())
            .with_hidden(hidden)
            .with_pac(args.pac.unwrap_or(if private_run {
                ctgan::DP_PAC
            } else {
                CtganConfig::new(1).pac
            }))
            .with_critic_hidden(args.critic_hidden)
            .init(conditions, &device)?;
        // The expected batch is public: q times the noisy row count.
        let expected_batch = privacy.training.sampling_rate * rows as f64;
        ctgan::train(
            &mut model,
            &data,
            encoder.spans(),
            &privacy.training,
            expected_batch,
            &device,
            private,
            &mut rng,
            on_epoch,
        )?;
        Box::new(model)
    } else {
        // With a target, the decoder is conditioned on its slot, drawn in sampling from the
        // released frequencies.
        let (condition_at, condition_shares) = args
            .target
            .as_ref()
            .and_then(|t| encoder.column_frequencies(t))
            .unwrap_or_default();
        let mut model = TvaeConfig::new(encoder.width())
            .with_hidden(hidden)
            .with_kl_weight(args.kl_weight)
            .with_condition_at(condition_at)
            .with_condition_shares(condition_shares)
            .init(&device);
        train::train(
            &mut model,
            &data,
            encoder.spans(),
            &privacy.training,
            &device,
            private,
            &mut rng,
            on_epoch,
        )?;
        Box::new(model)
    };
    bar.finish_and_clear();

    // The encoded rows are the training's only.
    drop(data);
    let n_out = args.rows.unwrap_or(rows);
    // Datetimes go back to a Parquet file as dates or timestamps: the input's own types
    // where it declared them (Parquet), else the type their pattern reads as.
    let temporal = output_temporal(&schema, &declared);
    // The sampling's progress, a block at a time; its seconds include writing the output.
    let sampling = Instant::now();
    let bar = sampling_bar(n_out);
    let mut progress = |rows: usize| {
        bar.inc(rows as u64);
        let sampled = bar.position() as usize;
        // Without a terminal, a line per block where there are several.
        if bar.is_hidden() && (sampled < n_out || rows < sampled) {
            eprintln!(
                "sampling: {sampled} of {n_out} rows ({:.1} s)",
                sampling.elapsed().as_secs_f64()
            );
        }
    };
    // The report compares the modelled columns (a datetime's day and parts apart), so it
    // keeps the whole output; without one, memory holds a block of 65,536 rows at a time,
    // sampled, serialised (and sealed) as it goes.
    let modelled = if args.report.is_some() {
        let synthetic = sample::sample_with_progress(
            &*model,
            &encoder,
            n_out,
            &device,
            &mut rng,
            &mut progress,
        );
        let bytes = table_bytes_typed(&encoder.finish(synthetic.clone()), format, temporal)?;
        envelope::try_write_atomically(&args.out, |w| {
            if recipients.is_empty() {
                std::io::Write::write_all(w, &bytes).map_err(|e| EnvelopeError::Io {
                    context: format!("writing {}", args.out.display()),
                    source: e,
                })
            } else {
                envelope::encrypt(
                    Cursor::new(&bytes),
                    w,
                    &recipients,
                    &mut SecureRng::from_os(),
                )
                .map(|_| ())
            }
        })?;
        Some(synthetic)
    } else {
        envelope::try_write_atomically(&args.out, |w| {
            sample::write_blocks(
                &*model,
                &encoder,
                n_out,
                &device,
                &mut rng,
                w,
                (format, temporal),
                &recipients,
                &mut progress,
            )
            .map_err(|e| EnvelopeError::Io {
                context: format!("writing {}", args.out.display()),
                source: std::io::Error::other(e),
            })
        })?;
        None
    };
    bar.finish_and_clear();
    let sampling_secs = sampling.elapsed().as_secs_f64();
    if let (Some(dir), Some(synthetic), Some(table)) = (&args.report, &modelled, &table) {
        // The holdout goes through the input's typing and null pattern, like the input.
        let holdout = holdout_raw
            .map(|h| -> Result<_> {
                let typed = h.typed(&schema.kinds())?;
                Ok(fedsynth_synth::nulls::with_pattern(typed, &completed))
            })
            .transpose()?;
        let run = RunRecord {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            privacy: run_privacy,
            epochs,
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_json::to_string_pretty(&run)?;
        envelope::write_atomically(&dir.join("run.json"), |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })?;
        let metrics = crate::evaluate::report(
            crate::evaluate::ReportInput {
                real: table,
                synth: synthetic,
                holdout: holdout.as_ref(),
                target: holdout.as_ref().and(args.target.clone()),
                quasi_identifiers: args.quasi_identifiers.clone(),
                run: Some(run),
            },
            dir,
        )?;
        eprintln!(
            "report: {} → {}",
            crate::evaluate::headline(&metrics),
            dir.join("report.html").display()
        );
    }
    drop(table);
    let schema_path = with_suffix(&args.out, ".schema.toml");
    envelope::write_atomically(&schema_path, |w| {
        std::io::Write::write_all(w, completed.to_toml().as_bytes())
    })?;

    let privacy_line = match privacy.target {
        None => "NO differential privacy (ε = ∞)".to_string(),
        Some((_, delta)) => format!(
            "ε = {:.3} at δ = {:.2e} (preprocessing {:.3} + training, composed)",
            privacy.epsilon_total,
            delta.get(),
            privacy.epsilon_preprocess
        ),
    };
    eprintln!(
        "wrote {n_out} rows to {}{} and the schema to {}; {privacy_line}; {:.1} s (sampling \
         and writing {sampling_secs:.1} s)",
        args.out.display(),
        if recipients.is_empty() {
            String::new()
        } else {
            format!(" (encrypted for {} recipient(s))", recipients.len())
        },
        schema_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The sampling's progress, in rows: a bar on a terminal (hidden elsewhere, where
/// [`run`] prints a line per block instead).
fn sampling_bar(rows: usize) -> ProgressBar {
    let bar = ProgressBar::new(rows as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} rows ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("sampling");
    bar
}
