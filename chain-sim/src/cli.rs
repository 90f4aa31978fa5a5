//! The command line of `chain-sim`: the chain and its gateway for development, tests
//! and demos.
//!
//! Without a subcommand it runs the simulator until SIGTERM or Ctrl-C; `chain-sim erp
//! partner|order` plays an ERP against a running simulator. See [the crate](crate) and
//! docs/protocol.md §8. It lives in the library, not in the binary's file, so that the
//! end-to-end tests (another package) can build the very same program as a binary of
//! their own and run it as a process.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::{Reply, ReplyBody, Topic};
use mes_core::domain::{AgentKey, RequestId};
use mes_core::signing::SigningKey;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

use crate::{
    DEFAULT_GROUP, DEFAULT_TOKEN, ErpOrder, ErpPartner, ErpRequest, GatewayOptions, LedgerState,
    SimConfig, SimTopics, Simulator, send_erp,
};

/// The simulated chain gateway of mes-bridge (and, with `erp`, an ERP).
#[derive(Debug, Parser)]
#[command(
    name = "chain-sim",
    version,
    about = "The simulated chain gateway of mes-bridge, and an ERP for it (chain-sim erp …)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Common {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "MES_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    brokers: String,
    /// Master token the chain knows (repeat or separate with commas); default: the
    /// protocol's example token.
    #[arg(
        long = "token",
        env = "CHAIN_SIM_TOKEN",
        value_delimiter = ',',
        global = true
    )]
    tokens: Vec<String>,
    /// librdkafka setting passed through (security.protocol, sasl.*, ssl.*, …).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value, global = true)]
    settings: Vec<(String, String)>,
    /// Rename a topic, by its default name (BLK_Rec=chain-records).
    #[arg(long = "topic", value_name = "DEFAULT=NAME", value_parser = key_value, global = true)]
    topics: Vec<(String, String)>,
    /// Append this to every topic name (one broker, several simulators).
    #[arg(long, value_name = "SUFFIX", global = true, allow_hyphen_values = true)]
    topic_suffix: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The MES's agent key (receiving agent of every item); default: derived from the
    /// simulator's key.
    #[arg(long, value_name = "HEX", value_parser = agent_key)]
    mes_agent: Option<AgentKey>,
    /// The simulator's secret key (64 hex characters); created if the file is missing.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Write replies as Python literals, as the original gateway did.
    #[arg(long)]
    python_literal: bool,
    /// Echo neither `corr` nor the correlation_id header, as the original gateway.
    #[arg(long)]
    no_echo: bool,
    /// Publish each reply this many milliseconds after applying its request.
    #[arg(long, value_name = "N", default_value_t = 0)]
    delay_ms: u64,
    /// Seed N partner requests and N orders, an hour apart (partners: ACCEPTED, OPEN,
    /// REJECTED in turn; orders from the accepted partners: OPEN, ACCEPTED, OPEN,
    /// REJECTED in turn).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_alias = "ledger-size"
    )]
    demo: usize,
    /// Reply only to requests on these topics (protocol names, comma-separated, e.g.
    /// BLK_Part_Lst,BLK_Part_Ans,BLK_Act_Lst,BLK_Act_Ans as the original gateway);
    /// requests on the others are applied but get no reply. Default: every topic.
    #[arg(long, value_name = "TOPICS", value_delimiter = ',', value_parser = topic_name)]
    answer_topics: Option<Vec<Topic>>,
    /// Lose this fraction (0.0–1.0) of replies at random: the request is applied, its
    /// reply never published.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = fraction)]
    lose_replies: f64,
    /// Apply the answer to request ID but never publish its reply (repeatable).
    #[arg(long, value_name = "ID", value_parser = request_id)]
    lose_reply_for: Vec<RequestId>,
    /// Apply answers (BLK_Part_Ans, BLK_Act_Ans) only this many milliseconds after they
    /// arrive, then reply; other requests are not held up.
    #[arg(long, value_name = "N", default_value_t = 0)]
    commit_delay_ms: u64,
    /// Apply the answer to request ID at once but publish its reply MS milliseconds
    /// later than the others, which overtake it (repeatable).
    #[arg(long, value_name = "ID:MS", value_parser = late_reply)]
    late_reply: Vec<(RequestId, u64)>,
    /// Publish the reply to a list whose page starts at index START MS milliseconds
    /// later than the others, which overtake it (repeatable).
    #[arg(long, value_name = "START:MS", value_parser = late_list_reply)]
    late_list_reply: Vec<(u32, u64)>,
    /// Sign replies with the simulator's key; each signed reply carries the request's
    /// `corr` and the digest of its envelope (`req`, docs/protocol.md §5).
    #[arg(long)]
    sign_replies: bool,
    /// Refuse requests that are not signed (`unauthorized`).
    #[arg(long)]
    require_signed: bool,
    /// Keep a JSON snapshot of the ledger at PATH (rewritten after changes, and on exit),
    /// request counters included (`counters.by_topic`, `counters.lost_replies`, …).
    #[arg(long, value_name = "PATH")]
    ledger_dump: Option<PathBuf>,
    /// Start from the ledger snapshot at PATH (as --ledger-dump writes it) instead of an
    /// empty chain; give the --key-file of the run that wrote it, so the MES is still
    /// the same agent. A malformed file is refused.
    #[arg(long, value_name = "PATH", conflicts_with = "demo")]
    ledger: Option<PathBuf>,
    /// Consumer group of the request consumer.
    #[arg(long, default_value = DEFAULT_GROUP)]
    group_id: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play an ERP: publish to a simulator-only topic and print the simulator's reply.
    Erp {
        #[command(subcommand)]
        request: ErpCommand,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ErpCommand {
    /// Ask to become the MES's partner (SIM_Erp_Part).
    Partner {
        /// The ERP's agent key.
        #[arg(long, value_name = "HEX", value_parser = agent_key)]
        agent: AgentKey,
    },
    /// Place an order (SIM_Erp_Act); the ERP must be an accepted partner.
    Order {
        /// The ERP's agent key.
        #[arg(long, value_name = "HEX", value_parser = agent_key)]
        agent: AgentKey,
        /// Kind of order.
        #[arg(long = "type", default_value = "dummy_action")]
        order_type: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// What to produce, as JSON.
        #[arg(long, default_value = "{}", value_parser = json_value)]
        metadata: serde_json::Value,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn agent_key(text: &str) -> Result<AgentKey, String> {
    text.trim().parse().map_err(|e| format!("{e}"))
}

fn topic_name(text: &str) -> Result<Topic, String> {
    Topic::from_name(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
        format!(
            "{text:?} is not a request topic; expected one of {}",
            names.join(", ")
        )
    })
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a fraction from 0.0 to 1.0, got {text:?}")),
    }
}

fn request_id(text: &str) -> Result<RequestId, String> {
    text.trim().parse().map_err(|e| format!("{e}"))
}

fn late_reply(text: &str) -> Result<(RequestId, u64), String> {
    let (id, ms) = text
        .split_once(':')
        .ok_or_else(|| format!("expected ID:MS, got {text:?}"))?;
    let ms = ms
        .trim()
        .parse()
        .map_err(|_| format!("expected ID:MS with MS in milliseconds, got {text:?}"))?;
    Ok((request_id(id)?, ms))
}

fn late_list_reply(text: &str) -> Result<(u32, u64), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(start, ms)| Some((start.trim().parse().ok()?, ms.trim().parse().ok()?)));
    parsed.ok_or_else(|| format!("expected START:MS (an index and milliseconds), got {text:?}"))
}

fn json_value(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// Runs `chain-sim` with the process's arguments: the `main` of the `chain-sim` binary
/// and of the end-to-end tests' copy of it. Errors are printed on stderr with their
/// causes; the exit code is 1 for them, 2 for a bad command line.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run_cli(cli)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chain-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_cli(cli: Cli) -> anyhow::Result<ExitCode> {
    let kafka = KafkaConfig {
        brokers: cli.common.brokers.clone(),
        settings: cli
            .common
            .settings
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>(),
    };
    let topics = topics(&cli.common)?;
    let tokens = if cli.common.tokens.is_empty() {
        vec![DEFAULT_TOKEN.to_owned()]
    } else {
        cli.common.tokens.clone()
    };
    match cli.command {
        None => run(kafka, topics, tokens, cli.run)
            .await
            .map(|()| ExitCode::SUCCESS),
        Some(Command::Erp { request, timeout }) => {
            erp(kafka, topics, &tokens[0], request, timeout).await
        }
    }
}

fn topics(common: &Common) -> anyhow::Result<SimTopics> {
    let mut topics = match &common.topic_suffix {
        Some(suffix) => SimTopics::with_suffix(suffix),
        None => SimTopics::default(),
    };
    for (default, name) in &common.topics {
        if !topics.set(default, name) {
            bail!("--topic {default}={name}: {default} is not a topic of the simulator");
        }
    }
    Ok(topics)
}

async fn run(
    kafka: KafkaConfig,
    topics: SimTopics,
    tokens: Vec<String>,
    args: RunArgs,
) -> anyhow::Result<()> {
    // Read first: a bad file is refused before anything touches the broker.
    let ledger = args.ledger.as_deref().map(read_ledger).transpose()?;
    let key = match &args.key_file {
        Some(path) => load_or_create_key(path)?,
        None => SigningKey::generate(),
    };
    let mut config = SimConfig::new(kafka.brokers.clone());
    config.kafka = kafka;
    config.topics = topics;
    config.group_id = args.group_id;
    config.tokens = tokens;
    config.mes_agent = args.mes_agent;
    config.key = Some(key);
    config.gateway = GatewayOptions {
        python_literal: args.python_literal,
        no_echo: args.no_echo,
        require_signed: args.require_signed,
        sign_replies: args.sign_replies,
        answer_topics: args
            .answer_topics
            .map(|topics| topics.into_iter().collect()),
        lose_replies: args.lose_replies,
        lose_reply_for: args.lose_reply_for.into_iter().collect(),
        commit_delay: Duration::from_millis(args.commit_delay_ms),
        late_replies: args
            .late_reply
            .into_iter()
            .map(|(id, ms)| (id, Duration::from_millis(ms)))
            .collect(),
        late_list_replies: args
            .late_list_reply
            .into_iter()
            .map(|(start, ms)| (start, Duration::from_millis(ms)))
            .collect(),
    };
    config.delay = Duration::from_millis(args.delay_ms);
    config.demo = args.demo;
    config.ledger = ledger;
    let sim = Simulator::start(config)
        .await
        .context("starting the simulator")?;

    let t = sim.topics();
    let mut out = std::io::stdout().lock();
    writeln!(out, "chain-sim public key: {}", sim.public_key())?;
    writeln!(out, "MES agent: {}", sim.mes_agent())?;
    writeln!(
        out,
        "requests: {} {} {} {} {} {}",
        t.chain.partner_list,
        t.chain.partner_answer,
        t.chain.order_list,
        t.chain.order_answer,
        t.chain.record_type,
        t.chain.record
    )?;
    writeln!(out, "replies: {}", t.chain.reply)?;
    writeln!(out, "erp: {} {}", t.erp_partner, t.erp_order)?;
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    let dump = args.ledger_dump;
    if let Some(path) = &dump {
        write_dump(path, &sim.ledger_snapshot())?;
    }
    let mut changes = sim.changes();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut dirty = false;
    let mut due = Instant::now();
    let mut last_write = Instant::now();
    loop {
        tokio::select! {
            signal = &mut stop => {
                signal?;
                break;
            }
            changed = changes.changed(), if !dirty && dump.is_some() => {
                if changed.is_err() {
                    break;
                }
                dirty = true;
                due = (last_write + Duration::from_millis(100)).max(Instant::now());
            }
            () = tokio::time::sleep_until(due), if dirty => {
                if let Some(path) = &dump {
                    write_dump(path, &sim.ledger_snapshot())?;
                }
                dirty = false;
                last_write = Instant::now();
            }
        }
    }
    tracing::info!("stopping");
    let snapshot = sim.ledger_snapshot();
    sim.shutdown().await.context("stopping the simulator")?;
    if let Some(path) = &dump {
        write_dump(path, &snapshot)?;
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}

/// Writes the snapshot next to `path` and renames it into place, so a reader never
/// sees half a file.
fn write_dump(path: &Path, snapshot: &LedgerState) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(snapshot).context("serialising the ledger")?;
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Reads a ledger snapshot as [`write_dump`] writes it.
fn read_ledger(path: &Path) -> anyhow::Result<LedgerState> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "--ledger {}: not a ledger snapshot (the JSON that --ledger-dump writes)",
            path.display()
        )
    })
}

fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => SigningKey::from_hex(&text)
            .with_context(|| format!("reading the key in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{}", key.to_hex())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!("created a new key in {}", path.display());
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn erp(
    kafka: KafkaConfig,
    topics: SimTopics,
    token: &str,
    command: ErpCommand,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let request = match command {
        ErpCommand::Partner { agent } => ErpRequest::Partner(ErpPartner {
            issuing_agent: agent,
        }),
        ErpCommand::Order {
            agent,
            order_type,
            description,
            metadata,
        } => ErpRequest::Order(ErpOrder {
            issuing_agent: agent,
            order_type,
            description,
            metadata,
            files: Vec::new(),
        }),
    };
    let reply: Reply = send_erp(
        &kafka,
        &topics,
        token,
        &request,
        Duration::from_secs(timeout),
    )
    .await
    .context("asking the simulator")?;
    println!("{}", String::from_utf8_lossy(&reply.to_json_bytes()));
    if let ReplyBody::Error { code, .. } = &reply.body {
        eprintln!(
            "chain-sim: the simulator refused: {} ({})",
            reply.body.text(),
            code.as_deref().unwrap_or("no code")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
