//! The `mes-api` command line: the server (`serve`, the default) and the
//! administration commands. Every command reads the same settings as the server and
//! applies pending migrations first, so `mes-api token put` works on a new database.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{
    Arg, ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum,
};
use clap_complete::Shell;
use mes_core::db::{operators, outbox, tokens};
use mes_core::signing::SigningKey;

use crate::config::{self, ConfigError, LogFormat, Settings, reference};
use crate::{check, logging, server};
use rocket::figment::Figment;
use rocket::figment::providers::Serialized;
use rocket::figment::value::{Dict, Value};

/// The MES side of mes-bridge: HTTP API, jobs and administration.
#[derive(Debug, Parser)]
#[command(name = "mes-api", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP server (the default). With no configuration: the embedded demo.
    Serve,
    /// The MES's identity on the chain (`kafka_tokens`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// People and programs allowed to use the API.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The outbox of chain messages: list it, retry or discard failed rows, purge old
    /// delivered ones.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Writes a new secp256k1 key for signing requests and prints its public key.
    Keygen {
        /// Where to write it; default `MES_SIGNING_KEY_FILE`, else `{data dir}/signing.key`.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Checks the settings live and says how to fix what fails.
    ///
    /// As the server would use them: database reachable and migrated, master token,
    /// brokers reachable, topics present or creatable, key files and their modes, reply
    /// trust decided. Prints ✔ or ✗ with the fix for each and exits 0 only if every
    /// check passes. Changes nothing.
    CheckConfig,
    /// Prints a completion script for the shell.
    ///
    /// E.g. `mes-api completions bash > /etc/bash_completion.d/mes-api`, or for zsh
    /// `mes-api completions zsh > ~/.zfunc/_mes-api`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `mes-api token …`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only complicate the clap derive"
)]
pub enum TokenCommand {
    /// Stores a token; `--instance-type Master` replaces the master token.
    ///
    /// Secrets given as arguments are visible to every local user (`ps`): prefer
    /// `--token-file` and `--password-file` (`-` reads standard input).
    Put {
        /// `Master` for the token every request carries.
        #[arg(long)]
        instance_type: String,
        /// The token (visible in `ps`: prefer `--token-file`).
        #[arg(
            long,
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// A file holding the token (its first line), or `-` for standard input.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The MES's public key on the chain.
        #[arg(long)]
        public_key: Option<String>,
        /// A password that goes with the identity (visible in `ps`: prefer
        /// `--password-file`).
        #[arg(long, conflicts_with = "password_file")]
        password: Option<String>,
        /// A file holding the password (its first line), or `-` for standard input.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The chain record that stands for this MES.
        #[arg(long)]
        record_id: Option<String>,
        /// Topic of the identity.
        #[arg(long)]
        topic: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists the tokens, secrets redacted.
    List,
}

/// `mes-api operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Adds an operator and prints its key, once.
    Add {
        /// Unique name, recorded with each decision.
        name: String,
        /// What the operator may do.
        #[arg(long, value_enum, default_value_t = RoleArg::Operator)]
        role: RoleArg,
    },
    /// Removes an operator: its key and its console sessions stop working on every
    /// instance within 2 s. Its past decisions keep its name.
    Remove {
        /// The operator's name.
        name: String,
    },
    /// Gives an operator a new key and prints it, once: the old key and its console
    /// sessions stop working on every instance within 2 s.
    Rotate {
        /// The operator's name.
        name: String,
    },
    /// Lists the operators with role, when added and when last used (never keys).
    List,
}

/// `mes-api outbox …`: what the console's outbox tab and `/api/outbox` offer, for a
/// shell on the server.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Lists rows, newest first: id, status, attempts, topic, ordering key, dedup key,
    /// when enqueued, last error.
    List {
        /// Only rows in this status.
        #[arg(long, value_parser = outbox::STATUSES)]
        status: Option<String>,
        /// Most rows listed.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Puts failed rows back to pending, due now, their attempts kept; a running
    /// server's relay sends them at its next poll.
    Retry {
        /// The rows' ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<i64>,
    },
    /// Marks failed rows discarded, with the reason (and `cli:$USER` as who): never sent.
    Discard {
        /// The rows' ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<i64>,
        /// Why they are given up on (kept with each row).
        #[arg(long)]
        reason: String,
    },
    /// Empties the payload of rows delivered longer ago than `--older-than`, in batches
    /// of 500, keeping each row (and its dedup key) as a tombstone; failed rows are never
    /// purged. What the server's retention (`MES_OUTBOX_RETENTION_DAYS`) does daily.
    Purge {
        /// e.g. `30d`, `12h`.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: std::time::Duration,
    },
}

/// `--older-than`: a duration such as `30d` (humantime).
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("not a duration like 30d or 12h: {e}"))
}

/// Rows purged per transaction: short transactions that leave the relay's claims alone.
pub const PURGE_BATCH: i64 = 500;

/// `--role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Lists and reads only.
    Viewer,
    /// Also answers requests, changes units, stores and runs reports.
    Operator,
    /// Also manages tokens and operators.
    Admin,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Viewer => operators::ROLE_VIEWER,
            RoleArg::Operator => operators::ROLE_OPERATOR,
            RoleArg::Admin => operators::ROLE_ADMIN,
        }
    }
}

/// What `--help` says after the settings.
const SETTINGS_HELP: &str = "\
Each setting is read from its flag, else its MES_* environment variable, else the \
active Rocket.toml profile, else its default. MES_KAFKA_<PROPERTY> passes any librdkafka \
property (MES_KAFKA_SECURITY_PROTOCOL=SASL_SSL sets security.protocol). The values of \
environment variables are never shown. example.env lists every setting; \
docs/operations.md explains them.";

/// The heading of the settings in `--help`.
const SETTINGS_HEADING: &str = "Settings";

/// The command line: [`Cli`]'s commands, and every setting of [`Settings`] as a flag
/// before the command that also reads its `MES_*` variable (clap's `env`), so `--help`
/// lists every setting with its variable and its default.
pub fn command() -> clap::Command {
    let mut command = Cli::command().after_long_help(SETTINGS_HELP);
    for setting in reference::settings() {
        let mut arg = Arg::new(setting.key)
            .long(setting.key.replace('_', "-"))
            .env(setting.env.clone())
            .hide_env_values(true)
            .value_name("VALUE")
            .help_heading(SETTINGS_HEADING)
            .help(setting.summary().to_owned())
            .long_help(setting.doc.clone());
        if let Some(default) = setting.default {
            arg = arg.default_value(default);
        }
        command = command.arg(arg);
    }
    command
}

/// The settings given as flags, as figment reads the environment's ("10" a number,
/// "true" a boolean); clap also read the `MES_*` variables, which figment reads itself.
fn flags(matches: &ArgMatches) -> Dict {
    reference::settings()
        .into_iter()
        .filter(|setting| matches.value_source(setting.key) == Some(ValueSource::CommandLine))
        .filter_map(|setting| {
            let text = matches.get_one::<String>(setting.key)?;
            let value: Value = text.parse().unwrap_or_else(|e| match e {});
            Some((setting.key.to_owned(), value))
        })
        .collect()
}

/// Runs the command line; the process's exit code. Errors are one line on stderr.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let figment = config::figment().merge(Serialized::globals(flags(&matches)));
    let result = match cli.command.unwrap_or(Command::Serve) {
        // Neither needs valid settings: completions need none, and the check reports
        // a bad one in its table.
        Command::Completions { shell } => return completions(shell),
        Command::CheckConfig => return check::main(&figment),
        // The log's format is a setting: read them first, so that a bad one is the one
        // line the start ends with and nothing is logged in the wrong format.
        command => config::extract(&figment).and_then(|settings| {
            logging::init(settings.log_format, config::rocket_log_level(&figment));
            run(command, settings, &figment)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error's source wrote (libpq's are multi-line).
            let line = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("mes-api: error: {line}");
            ExitCode::from(2)
        }
    }
}

/// `mes-api completions SHELL`: the script on standard output.
fn completions(shell: Shell) -> ExitCode {
    clap_complete::generate(shell, &mut command(), "mes-api", &mut std::io::stdout());
    ExitCode::SUCCESS
}

fn run(command: Command, settings: Settings, figment: &Figment) -> Result<(), ConfigError> {
    match command {
        Command::Serve => serve(settings, figment),
        Command::Token(command) => token(command, &settings),
        Command::Operator(command) => operator(command, &settings),
        Command::Outbox(command) => outbox_command(command, &settings),
        Command::Keygen { out, force } => keygen(&settings, out, force),
        // Answered by `main` before the settings are read.
        Command::CheckConfig | Command::Completions { .. } => Ok(()),
    }
}

fn io_error(e: std::io::Error) -> ConfigError {
    ConfigError::new("stdout", e.to_string())
}

fn db_error(e: diesel::result::Error) -> ConfigError {
    ConfigError::new("MES_DATABASE_URL", e.to_string())
}

fn serve(settings: Settings, figment: &Figment) -> Result<(), ConfigError> {
    let figment = figment.clone();
    rocket::execute(async move {
        let rocket_config = rocket::Config::try_from(&figment).map_err(|e| {
            ConfigError::new(
                "Rocket.toml/ROCKET_*",
                e.to_string().lines().next().unwrap_or_default(),
            )
        })?;
        let scheme = if figment.contains("tls") {
            "https"
        } else {
            "http"
        };
        let url = format!(
            "{scheme}://{}:{}",
            rocket_config.address, rocket_config.port
        );
        // What `prepare` would refuse first, refused before the banner.
        settings.validate()?;
        settings.check_demo_database()?;
        settings.reply_verification()?;
        settings.bridge_config(&settings.kafka_brokers)?;
        settings.check_embedded_built()?;
        let banner = Banner::new(&settings, url);
        banner.print(settings.log_format)?;
        let prepared = server::prepare(settings).await?;
        let format = prepared.app.settings.log_format;
        let rocket = server::rocket(figment, prepared.app);
        let rocket = rocket
            .ignite()
            .await
            .map_err(|e| ConfigError::new("ROCKET_ADDRESS/ROCKET_PORT", e.to_string()))?;
        if let Some(key) = prepared.demo_key.as_deref() {
            demo_key(&banner.url, key, format)?;
        }
        rocket
            .launch()
            .await
            .map(|_| ())
            .map_err(|e| ConfigError::new("ROCKET_ADDRESS/ROCKET_PORT", e.to_string()))
    })
}

/// The first thing `serve` says, before anything is started: where it will listen
/// and what it runs against, so that the one look an operator gives a start answers
/// "is this the right one?". Nothing in it is a secret: the database is named without
/// its user and password.
#[derive(Debug)]
pub struct Banner {
    /// Where the server listens.
    pub url: String,
    /// `embedded demo` or `cluster`.
    pub mode: &'static str,
    /// The database's kind and location, without credentials.
    pub database: String,
    /// The brokers (`bootstrap.servers`), or the in-process mock cluster.
    pub brokers: String,
    /// Whether replies from the chain are verified, and with which key.
    pub reply_trust: String,
}

impl Banner {
    /// The banner of a server with `settings` listening on `url`. The settings are
    /// checked already: with neither a gateway key nor `MES_REPLY_TRUST=unsigned`, a
    /// server on a real broker does not start.
    pub fn new(settings: &Settings, url: String) -> Banner {
        let embedded = settings.is_embedded();
        let reply_trust = match &settings.gateway_key_file {
            Some(path) => format!(
                "signed (replies verified with the gateway key in {})",
                path.display()
            ),
            // The demo's simulated chain signs, and the demo verifies with its key.
            None if embedded => "signed (replies verified with the simulated chain's key)".to_owned(),
            None => "unsigned (replies from the chain are NOT verified: MES_REPLY_TRUST=unsigned, docs/security.md)".to_owned(),
        };
        Banner {
            url,
            mode: if embedded { "embedded demo" } else { "cluster" },
            database: settings.database_display(),
            brokers: if embedded {
                "in-process mock cluster, with a simulated chain and ERP".to_owned()
            } else {
                settings.kafka_brokers.trim().to_owned()
            },
            reply_trust,
        }
    }

    /// The banner as text lines on standard output, or as one log event in JSON.
    fn print(&self, format: LogFormat) -> Result<(), ConfigError> {
        let version = env!("CARGO_PKG_VERSION");
        if format == LogFormat::Json {
            tracing::info!(
                version,
                url = %self.url,
                mode = self.mode,
                database = %self.database,
                brokers = %self.brokers,
                reply_trust = %self.reply_trust,
                "mes-api {version} on {}",
                self.url
            );
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "mes-api {version} on {}\n  mode:        {}\n  database:    {}\n  brokers:     {}\n  reply trust: {}",
            self.url, self.mode, self.database, self.brokers, self.reply_trust
        )
        .and_then(|()| out.flush())
        .map_err(io_error)
    }
}

/// What `serve` says once the demo is ready: the operator key, and how to use it.
fn demo_key(url: &str, key: &str, format: LogFormat) -> Result<(), ConfigError> {
    if format == LogFormat::Json {
        // The demo's key is meant to be read, and in JSON the log is what is read.
        tracing::info!(
            demo_key = key,
            "demo operator key (valid until the next start)"
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Demo operator key (shown once, valid until the next start):\n  {key}\nTry:\n  {url}/#performance   (the console, in a browser: sign in with the key)\n  curl -H 'Authorization: Bearer {key}' {url}/api/KafkaPartner/LIST\n  curl {url}/api/openapi.json"
    )
    .and_then(|()| out.flush())
    .map_err(io_error)
}

fn token(command: TokenCommand, settings: &Settings) -> Result<(), ConfigError> {
    let mut conn = server::connect_db(settings)?;
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::Put {
            instance_type,
            token,
            token_file,
            public_key,
            password,
            password_file,
            record_id,
            topic,
            name,
        } => {
            if token_file.as_deref().is_some_and(is_stdin)
                && password_file.as_deref().is_some_and(is_stdin)
            {
                return Err(ConfigError::new(
                    "--token-file/--password-file",
                    "only one of them can read standard input (`-`)",
                ));
            }
            let token = match token_file {
                Some(path) => read_secret(&path, "--token-file")?,
                None => token.unwrap_or_default(),
            };
            let password = match password_file {
                Some(path) => Some(read_secret(&path, "--password-file")?),
                None => password,
            };
            if instance_type.trim().is_empty() || token.trim().is_empty() {
                return Err(ConfigError::new(
                    "--instance-type/--token",
                    "must not be empty",
                ));
            }
            let stored = tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: &instance_type,
                    token: &token,
                    public_key: public_key.as_deref(),
                    password: password.as_deref(),
                    record_id: record_id.as_deref(),
                    topic: topic.as_deref(),
                    name: name.as_deref(),
                },
            )
            .map_err(db_error)?;
            writeln!(
                out,
                "stored {} token (id {})",
                stored.instance_type, stored.id
            )
            .map_err(io_error)?;
        }
        TokenCommand::List => {
            let rows = tokens::list(&mut conn).map_err(db_error)?;
            if rows.is_empty() {
                writeln!(
                    out,
                    "no tokens (add one: mes-api token put --instance-type Master --token …)"
                )
                .map_err(io_error)?;
            }
            for t in rows {
                writeln!(
                    out,
                    "{}\t{}\ttoken=<redacted>\tpassword={}\tpublic_key={}\trecord_id={}\ttopic={}\tname={}",
                    t.id,
                    t.instance_type,
                    if t.password.is_some() { "<redacted>" } else { "-" },
                    t.public_key.as_deref().unwrap_or("-"),
                    t.record_id.as_deref().unwrap_or("-"),
                    t.topic.as_deref().unwrap_or("-"),
                    t.name.as_deref().unwrap_or("-"),
                )
                .map_err(io_error)?;
            }
        }
    }
    Ok(())
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The first line of `path` (or of standard input for `-`), without its line end: how
/// `token put` takes a secret without putting it on the command line.
fn read_secret(path: &Path, flag: &str) -> Result<String, ConfigError> {
    let text = if is_stdin(path) {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| ConfigError::new(flag, format!("cannot read standard input: {e}")))?;
        line
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(flag, format!("cannot read {}: {e}", path.display())))?
    };
    let secret = text.lines().next().unwrap_or_default().trim().to_owned();
    if secret.is_empty() {
        return Err(ConfigError::new(flag, "the secret is empty"));
    }
    Ok(secret)
}

/// `2026-12-01 10:42:00 UTC`, or `never`.
fn when(at: Option<chrono::NaiveDateTime>) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |at| format!("{} UTC", at.format("%Y-%m-%d %H:%M:%S")),
    )
}

fn operator(command: OperatorCommand, settings: &Settings) -> Result<(), ConfigError> {
    let mut conn = server::connect_db(settings)?;
    let mut out = std::io::stdout().lock();
    match command {
        OperatorCommand::Add { name, role } => {
            let name = name.trim();
            if name.is_empty() {
                return Err(ConfigError::new("NAME", "must not be empty"));
            }
            if operators::by_name(&mut conn, name)
                .map_err(db_error)?
                .is_some()
            {
                return Err(ConfigError::new(
                    "NAME",
                    format!("an operator called {name:?} exists already"),
                ));
            }
            let key = operators::new_key();
            let stored = operators::create(
                &mut conn,
                &operators::NewOperator {
                    name,
                    role: role.as_str(),
                    key_hash: &operators::hash_key(&key),
                },
            )
            .map_err(db_error)?;
            writeln!(
                out,
                "added {} {} (id {}). Its key, shown only now:\n{key}",
                stored.role, stored.name, stored.id
            )
            .map_err(io_error)?;
        }
        OperatorCommand::Remove { name } => {
            if !operators::remove(&mut conn, name.trim()).map_err(db_error)? {
                return Err(ConfigError::new(
                    "NAME",
                    format!("no operator called {:?}", name.trim()),
                ));
            }
            writeln!(
                out,
                "removed {}: its key and sessions stop working on every instance within 2 s",
                name.trim()
            )
            .map_err(io_error)?;
        }
        OperatorCommand::Rotate { name } => {
            let key = operators::new_key();
            let Some(stored) =
                operators::rotate(&mut conn, name.trim(), &operators::hash_key(&key))
                    .map_err(db_error)?
            else {
                return Err(ConfigError::new(
                    "NAME",
                    format!("no operator called {:?}", name.trim()),
                ));
            };
            writeln!(
                out,
                "rotated the key of {} {} (the old key and its sessions stop working on every instance within 2 s). Its new key, shown only now:\n{key}",
                stored.role, stored.name
            )
            .map_err(io_error)?;
        }
        OperatorCommand::List => {
            writeln!(out, "id\tname\trole\tcreated\tlast used").map_err(io_error)?;
            for op in operators::list(&mut conn).map_err(db_error)? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    op.id,
                    op.name,
                    op.role,
                    when(Some(op.created_at)),
                    when(op.last_used_at)
                )
                .map_err(io_error)?;
            }
        }
    }
    Ok(())
}

/// Who the CLI acts as, for a discarded row: `cli:` and the shell's user.
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    if user.is_empty() {
        "cli".to_owned()
    } else {
        format!("cli:{user}")
    }
}

fn outbox_command(command: OutboxCommand, settings: &Settings) -> Result<(), ConfigError> {
    let mut conn = server::connect_db(settings)?;
    let mut out = std::io::stdout().lock();
    // What became of each id; the command fails if any was not acted on.
    let mut report = |id: i64, done: &str, acted: outbox::Acted| -> Result<bool, ConfigError> {
        match acted {
            outbox::Acted::Done(row) => {
                writeln!(out, "{done} {id} ({})", row.status).map_err(io_error)?;
                Ok(true)
            }
            outbox::Acted::NotFailed(status) => {
                eprintln!("mes-api: outbox row {id} is {status}: only a failed row can be {done}");
                Ok(false)
            }
            outbox::Acted::Missing => {
                eprintln!("mes-api: no outbox row {id}");
                Ok(false)
            }
        }
    };
    let (acted, asked, done) = match command {
        OutboxCommand::List { status, limit } => {
            let rows = outbox::list(&mut conn, status.as_deref(), limit, 0).map_err(db_error)?;
            writeln!(
                out,
                "id\tstatus\tattempts\ttopic\tordering key\tdedup key\tenqueued\tlast error"
            )
            .map_err(io_error)?;
            for row in rows {
                let error = row
                    .last_error
                    .as_deref()
                    .unwrap_or("-")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{error}",
                    row.id,
                    row.status,
                    row.attempts,
                    row.topic,
                    row.ordering_key,
                    row.dedup_key,
                    when(Some(row.created_at)),
                )
                .map_err(io_error)?;
            }
            return Ok(());
        }
        OutboxCommand::Retry { ids } => {
            let mut acted = 0;
            for &id in &ids {
                let result = outbox::retry_failed(&mut conn, id).map_err(db_error)?;
                acted += usize::from(report(id, "retried", result)?);
            }
            (acted, ids.len(), "retried")
        }
        OutboxCommand::Discard { ids, reason } => {
            let reason = crate::routes::reports::discard_reason(&reason)
                .map_err(|why| ConfigError::new("--reason", why))?;
            let by = cli_actor();
            let mut acted = 0;
            for &id in &ids {
                let result =
                    outbox::discard_failed(&mut conn, id, &by, &reason).map_err(db_error)?;
                acted += usize::from(report(id, "discarded", result)?);
            }
            (acted, ids.len(), "discarded")
        }
        OutboxCommand::Purge { older_than } => {
            let before = chrono::Duration::from_std(older_than)
                .ok()
                .and_then(|age| mes_core::db::now().checked_sub_signed(age))
                .ok_or_else(|| ConfigError::new("--older-than", "is too long"))?;
            let mut purged = 0;
            loop {
                let batch =
                    outbox::purge_delivered(&mut conn, before, PURGE_BATCH).map_err(db_error)?;
                purged += batch;
                if batch < usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
            writeln!(
                out,
                "purged {purged} delivered rows older than {} (their dedup keys are kept)",
                humantime::format_duration(older_than)
            )
            .map_err(io_error)?;
            return Ok(());
        }
    };
    if acted < asked {
        return Err(ConfigError::new(
            "ID",
            format!(
                "{} of {asked} rows were not {done} (see above)",
                asked - acted
            ),
        ));
    }
    Ok(())
}

fn keygen(settings: &Settings, out: Option<PathBuf>, force: bool) -> Result<(), ConfigError> {
    // Like every command: the database is migrated even if this one does not use it.
    drop(server::connect_db(settings)?);
    let path = out
        .or_else(|| settings.signing_key_file.clone())
        .unwrap_or_else(|| settings.data_dir.join("signing.key"));
    let key = SigningKey::generate();
    write_key(&path, &key.to_hex(), force)
        .map_err(|e| ConfigError::new("--out", format!("{}: {e}", path.display())))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "wrote a new signing key to {}\npublic key (give it to the chain): {}\nuse it: MES_SIGNING_KEY_FILE={}",
        path.display(),
        key.agent_key(),
        path.display()
    )
    .map_err(io_error)
}

/// Writes `hex` to `path`, readable by the owner only, refusing to overwrite unless
/// `force`, and refusing an existing file that group or others may read (overwriting
/// keeps a file's mode, so the new key would be as exposed as the old one).
pub fn write_key(path: &Path, hex: &str, force: bool) -> std::io::Result<()> {
    if force && path.exists() {
        config::owner_only(path).map_err(std::io::Error::other)?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{hex}")?;
    drop(file);
    // The umask may have taken bits away, never added any; check what the server will.
    config::owner_only(path).map_err(std::io::Error::other)
}
