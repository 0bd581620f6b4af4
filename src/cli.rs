//! Command line: `ferromq run`, `ferromq check`, `ferromq explain`, `ferromq passwd`. Parses
//! arguments, sets up logging, dispatches, and maps outcomes to exit codes (0 ok, 1 invalid config
//! or runtime failure, 2 usage error, 3 `explain` decided "denied", 128 + N when a second signal
//! N (SIGINT 2, SIGTERM 15) cut a graceful shutdown short, or a signal N stopped the start
//! before the broker served: a line names the step it interrupted).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, LoadOptions};

const DEFAULT_CONFIG: &str = "conf/activemq.xml";

#[derive(Debug, Parser)]
#[command(
    name = "ferromq",
    version,
    about = "An MQTT broker (3.1, 3.1.1, 5.0) that reads Apache ActiveMQ's activemq.xml",
    long_about = "ferromq serves MQTT clients from the activemq.xml an ActiveMQ installation \
                  already has: listeners from transportConnectors, TLS from sslContext, users and \
                  authorization entries from plugins, persistence and limits."
)]
pub struct Cli {
    /// Log filter: error, warn, info, debug, trace (RUST_LOG, when set, takes precedence).
    /// rustls' handshake warnings (an IP address sent as SNI) show only at error unless the
    /// filter names rustls.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log lines as text (default) or as JSON, one object per line on stderr: `timestamp`,
    /// `level`, `target`, `fields` (the message and every field of the event, typed), and
    /// `span` (the connection's `listener`, `peer` and `client_id`, when there is one).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors (journald, Loki, Elasticsearch ...).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker on a configuration file (default conf/activemq.xml).
    ///
    /// Refuses to start when the file has errors, printing each as file:line:col.
    Run(RunArgs),
    /// Validate a configuration file and print what the broker would build from it.
    ///
    /// Prints every problem as `file:line:col: error|warning: message` with a hint, then a
    /// summary of listeners, TLS, users, authorization and storage. Binds no port and starts
    /// nothing. Exit 0 when valid (warnings allowed), 1 on errors, 2 on usage errors.
    Check(CheckArgs),
    /// Explain whether a user may publish or subscribe to a topic, a queue or a temporary
    /// destination, and which entries decide it.
    ///
    /// Prints ALLOWED or DENIED, the ActiveMQ destination the MQTT topic maps to, and every
    /// authorization entry that applies (file:line, pattern, the groups it grants). The user's
    /// groups come from the authentication plugin (a real login when --password is given) or
    /// from --group; without an authentication plugin every client is user `anonymous` with
    /// no groups, and that is the user explained. A shared subscription `$share/<group>/<filter>` is decided by its inner
    /// filter, as the broker decides it. A topic or filter that is not valid MQTT (publish to
    /// `a/#`, subscribe to `a+`, empty) prints INVALID. Exit 0 when allowed, 3 when denied,
    /// 2 when the topic or filter is invalid (a usage error: there is nothing to authorize),
    /// 1 on errors.
    Explain(ExplainArgs),
    /// Hash a password for activemq.xml or users.properties.
    ///
    /// Reads one line from standard input (no prompt, so scripts can pipe it) and prints the
    /// hash, e.g. `echo -n secret | ferromq passwd`. Use the output as
    /// `<authenticationUser password="..."/>` or as the value in users.properties; ferromq
    /// recognises `$argon2id$` and `$2b$` hashes and `SCRAM-SHA-256:`/`SCRAM-SHA-512:`
    /// credentials (ActiveMQ itself would not). Only plain-text passwords and SCRAM credentials
    /// can log in with MQTT 5 SCRAM (docs/enhanced-auth.md).
    Passwd(PasswdArgs),
    /// Encrypt a value with jasypt for an `ENC(...)` property, as `activemq encrypt` does.
    ///
    /// Prints `Encrypted text: <base64>`; write it as `key=ENC(<base64>)` in the properties file
    /// of an EncryptablePropertyPlaceholderConfigurer, and give the broker the same password in
    /// the variable its EnvironmentStringPBEConfig names (usually ACTIVEMQ_ENCRYPTION_PASSWORD).
    Encrypt(JasyptArgs),
    /// Decrypt a jasypt `ENC(...)` value, as `activemq decrypt` does: prints `Decrypted text: ...`.
    Decrypt(JasyptArgs),
    /// List the persistent sessions a stopped broker keeps, or end an abandoned one.
    ///
    /// `list` and `end --config` read the store of a STOPPED broker (a running one owns it).
    /// `end --broker HOST:PORT` ends a session on a RUNNING broker by connecting with its client
    /// id over MQTT 5 (Session Expiry Interval 0, then Clean Start 1 where there was a
    /// session: nothing is left behind), authenticated like any client. Either way the
    /// session's queued messages go with it. Exit 0 when done, 1 on errors.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Print a running broker's overview, read from its web console's /api/overview.
    ///
    /// Exit 0 when the console answered, 1 when it is unreachable or refused the login.
    Status(StatusArgs),
    /// Write the default configuration built into ferromq (conf/activemq.xml and the files
    /// beside it) into DIR/conf/, to edit and run with `ferromq run`.
    ///
    /// `run`, `check`, `explain`, `status` and `session` use the built-in copy when no file is
    /// named and conf/activemq.xml does not exist. Refuses to replace an existing file. Exit 0 when written, 1 on errors.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write conf/ into (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The console's URL: http://HOST:PORT, or https://HOST:PORT for a console with
    /// sslContext="true" (then give --cacert). Default: the console the configuration file
    /// enables (jetty.xml's jettyPort bean or <ferromq:console>), the file `run` reads
    /// (--config, else conf/activemq.xml, else the built-in default); where that file enables
    /// none, or (when not named with --config) cannot be loaded, http://127.0.0.1:8161,
    /// ActiveMQ's console address. A file named with --config that cannot be loaded is an
    /// error. A console placed by `run --console HOST:PORT` is in no file: give its URL here.
    #[arg(long, value_name = "URL")]
    pub console: Option<String>,
    /// The configuration file whose console to ask, as `run FILE` and `check FILE` take it
    /// (the same as --config FILE).
    #[arg(conflicts_with_all = ["config", "console"])]
    pub file: Option<PathBuf>,
    /// Without --console: the configuration file whose console to ask, as `run --config`
    /// takes it.
    #[arg(long, short, value_name = "FILE", conflicts_with = "console")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub props: PropertyArgs,
    /// PEM file of the CA that signed the https console's certificate (the CA, not the
    /// certificate itself); the certificate's host name must match the URL's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The console user (a role of `user` or `admin` in jetty-realm.properties).
    #[arg(long, visible_alias = "user")]
    pub username: Option<String>,
    /// The name of an environment variable holding the password (kept out of the process
    /// list).
    #[arg(long, requires = "username", value_name = "VAR")]
    pub password_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Print each persistent session of a stopped broker: client id, subscriptions, queued
    /// messages, seconds since its client was last seen.
    List {
        /// The configuration file whose store directory is read (default conf/activemq.xml),
        /// as `check FILE` takes it.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The configuration file, as `run --config` takes it.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        props: PropertyArgs,
    },
    /// End one persistent session with its queued messages.
    End {
        /// The session's client id.
        client_id: String,
        /// End it on the running broker at this address (plain MQTT connector).
        #[arg(long, value_name = "HOST:PORT")]
        broker: Option<std::net::SocketAddr>,
        /// With --broker: the user to connect as.
        #[arg(long, requires = "broker")]
        username: Option<String>,
        /// With --broker: the name of an environment variable holding the password (kept out
        /// of the process list).
        #[arg(long, requires = "broker", value_name = "VAR")]
        password_env: Option<String>,
        /// Without --broker: the configuration of the stopped broker whose store to change
        /// (default conf/activemq.xml, or the built-in default where there is none).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        props: PropertyArgs,
    },
}

#[derive(Debug, Args)]
pub struct PropertyArgs {
    /// Set a placeholder property, like Java's -Dname=value (repeatable). Overrides properties
    /// files; environment variables are consulted last.
    #[arg(long = "set", short = 'D', value_name = "NAME=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Run a shared or replicated store configuration (jdbcPersistenceAdapter, a shared-file or
    /// database locker) on ferromq's own local store, with a warning, instead of refusing it.
    /// Only for a single broker: a second one on the "shared" store would not be locked out.
    #[arg(long)]
    pub local_store: bool,
}

impl PropertyArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            overrides: self.properties.iter().cloned().collect::<BTreeMap<_, _>>(),
            use_env: true,
            local_store: self.local_store,
            embedded_default: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (default conf/activemq.xml), as `check FILE` takes it.
    #[arg(conflicts_with = "config")]
    pub file: Option<PathBuf>,
    /// The configuration file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Reload when the file (or anything it names) changes, even without a
    /// runtimeConfigurationPlugin.
    #[arg(long)]
    pub watch: bool,
    /// Serve the web console on this address (HOST:PORT), over what the configuration says
    /// (its users still come from the realm file of jetty.xml or <ferromq:console>).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_console_address)]
    pub console: Option<(String, u16)>,
    #[command(flatten)]
    pub props: PropertyArgs,
}

fn parse_console_address(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, got `{s}`"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("expected HOST:PORT, got `{s}`"));
    }
    Ok((host.to_owned(), port))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file (default conf/activemq.xml).
    #[arg(conflicts_with = "config")]
    pub file: Option<PathBuf>,
    /// The configuration file, as `run --config` takes it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Treat warnings as errors (exit 1), for CI pipelines.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Also bind each connector's address and release it at once (is the port free now?).
    #[arg(long)]
    pub bind: bool,
    /// Also contact the LDAP servers the configuration names: bind as the connection user and
    /// load the LDAP authorization map; and the NATS servers of `<ferromq:jetStream>`: connect,
    /// ask JetStream, count the cluster's servers (without it, check contacts nothing remote).
    #[arg(long)]
    pub online: bool,
    /// Check the web console on this address (HOST:PORT) as `run --console` serves it: its
    /// users from the configuration's realm file, its host resolved (and bound with --bind).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_console_address)]
    pub console: Option<(String, u16)>,
    #[command(flatten)]
    pub props: PropertyArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExplainAction {
    /// Publish: needs `write`.
    Publish,
    /// Subscribe (the topic may be a filter with + and #): needs `read`.
    Subscribe,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The configuration file (default conf/activemq.xml, else the built-in default), as
    /// `run --config` takes it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The user name (as `status` and `session end` name it; `--user` works too).
    #[arg(
        long = "username",
        short = 'u',
        visible_alias = "user",
        value_name = "USER"
    )]
    pub user: String,
    /// Log in with this password first and use the groups the login yields (visible to other
    /// local users in the process list: prefer --group on shared machines).
    #[arg(long, conflicts_with = "groups")]
    pub password: Option<String>,
    /// Assume these groups instead of looking them up (repeatable).
    #[arg(long = "group", short, value_name = "GROUP")]
    pub groups: Vec<String>,
    /// MQTT topic name, or filter for subscribe (`sensors/+/temp`, `sensors/#`).
    #[arg(
        long,
        short,
        required_unless_present = "destination",
        conflicts_with = "destination"
    )]
    pub topic: Option<String>,
    /// A destination as STOMP names it: `/queue/orders`, `/topic/sensors.*.temp` (the MQTT
    /// topic `sensors/+/temp`), `/temp-queue/...`, `/temp-topic/...`.
    #[arg(long, short)]
    pub destination: Option<String>,
    /// What the user wants to do.
    #[arg(long, short, value_enum)]
    pub action: ExplainAction,
    /// Load the entries of a `cachedLDAPAuthorizationMap` from its LDAP server first (without
    /// it, a configuration whose entries live in LDAP cannot be explained).
    #[arg(long)]
    pub online: bool,
    #[command(flatten)]
    pub props: PropertyArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PasswdAlgorithm {
    /// Argon2id (19 MiB, 2 passes): the recommended choice.
    Argon2id,
    /// bcrypt, cost 12 (at most 72 bytes of password).
    Bcrypt,
    /// A SCRAM-SHA-256 credential (`SCRAM-SHA-256:<iterations>:<salt>:<StoredKey>:<ServerKey>`):
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256, and password logins.
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// A SCRAM-SHA-512 credential: MQTT 5 enhanced authentication with SCRAM-SHA-512, and
    /// password logins.
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Hash algorithm.
    #[arg(long, value_enum, default_value = "argon2id")]
    pub algorithm: PasswdAlgorithm,
    /// PBKDF2 iterations of a SCRAM credential (at least 4096, RFC 7677).
    #[arg(long, default_value_t = crate::security::scram::DEFAULT_ITERATIONS)]
    pub iterations: u32,
}

#[derive(Debug, Args)]
pub struct JasyptArgs {
    /// The jasypt password (the value of ACTIVEMQ_ENCRYPTION_PASSWORD for the broker).
    #[arg(long)]
    pub password: String,
    /// The text to encrypt, or the base64 value to decrypt (with or without `ENC(...)`).
    #[arg(long)]
    pub input: String,
    /// PBEWithMD5AndDES (ActiveMQ's default) or PBEWITHHMACSHA512ANDAES_256.
    #[arg(long, default_value = "PBEWithMD5AndDES")]
    pub algorithm: String,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::broker::allocator::map_large_blocks_apart();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(&cli.log_level, cli.log_format, &cli.command);
    match cli.command {
        Command::Run(args) => run(args, cli.log_format),
        Command::Check(args) => check(args),
        Command::Explain(args) => explain(args),
        Command::Passwd(args) => passwd(args),
        Command::Encrypt(args) => jasypt_command(&args, true),
        Command::Decrypt(args) => jasypt_command(&args, false),
        Command::Session(command) => session(command),
        Command::Status(args) => status(args),
        Command::Init(args) => init(args),
    }
}

/// Added to `--log-level` (not to `RUST_LOG`, which is taken as written): rustls logs a WARN on
/// every TLS connection whose client sends an IP address as SNI (mosquitto_pub -h 127.0.0.1
/// does), which RFC 6066 forbids but is harmless: the name is ignored. Errors still show.
const QUIET_TARGETS: &str = "rustls::msgs::handshake=error";

/// Added to `--log-level` for `check` and the other one-shot commands, whose output is a
/// report on stdout: the NATS client logs its connection at INFO (`connected successfully`,
/// `event: connected`) while `check --online` probes the servers, lines that ran into the
/// report on a terminal. The report's own note says which server answered; the client's
/// warnings and errors still show.
const REPORT_QUIET_TARGETS: &str = "async_nats=warn";

/// The filter of `--log-level`: the level as given, plus [`QUIET_TARGETS`] unless it names
/// rustls itself, and for a command other than `run` [`REPORT_QUIET_TARGETS`] unless it names
/// the NATS client.
fn log_filter(level: &str, command: &Command) -> String {
    let mut filter = level.to_owned();
    if !level.contains("rustls") {
        filter.push(',');
        filter.push_str(QUIET_TARGETS);
    }
    if !matches!(command, Command::Run(_)) && !level.contains("async_nats") {
        filter.push(',');
        filter.push_str(REPORT_QUIET_TARGETS);
    }
    filter
}

fn init_tracing(level: &str, format: LogFormat, command: &Command) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(log_filter(level, command)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            // Colour codes only for a person at a terminal, never into log files or journald.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(escaped_text_fields())
            .try_init(),
        // The event's fields stay typed values under `fields`; the innermost span (a
        // connection's listener, peer and client id) under `span`, not the whole list.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The text log's field formatter: `name=value` pairs as tracing-subscriber writes them, with
/// every control character of a value written escaped (`\n`, `\u{1b}`). Values come from peers
/// (client ids, user names, topics, STOMP destinations): a line break in one must not start a
/// forged log line, nor an escape sequence drive the terminal that shows the log. (The JSON
/// format escapes by itself.)
fn escaped_text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            for c in text.chars() {
                if c.is_control() {
                    write!(w, "{}", c.escape_default())?;
                } else {
                    w.write_char(c)?;
                }
            }
            return Ok(());
        }
        // A value that could be read as more than one field (`dev1 user=admin`) or that is
        // not a well-formed quoted string is written quoted and escaped, so a peer cannot add
        // fields to the line; bare tokens and strings tracing quoted itself stay as they are.
        if is_bare_token(&text) || is_quoted_string(&text) {
            write!(w, "{field}={text}")
        } else {
            write!(w, "{field}={text:?}")
        }
    })
    .delimited(" ")
}

/// A field value that reads as one token: no space, quote, `=` or control character.
fn is_bare_token(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

/// A string as `{:?}` writes it: quoted, every inner quote and backslash escaped, no control
/// character.
fn is_quoted_string(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '"' => return false,
            c if c.is_control() => return false,
            _ => {}
        }
    }
    true
}

/// The file `run`, `check`, `explain`, `status` and `session` read: the positional one, else `--config`, else
/// the default, `conf/activemq.xml`; with the options to load it with. Where the default is
/// not on disk, the copy built into the binary stands for it (`config::embedded`).
fn config_file(
    positional: Option<&PathBuf>,
    option: Option<&PathBuf>,
    props: &PropertyArgs,
) -> (PathBuf, LoadOptions) {
    let mut options = props.load_options();
    let file = match positional.or(option) {
        Some(named) => named.clone(),
        None if config::embedded::needed() => {
            options.embedded_default = true;
            config::embedded::main_file()
        }
        None => PathBuf::from(DEFAULT_CONFIG),
    };
    (file, options)
}

/// How messages name the configuration `config_file` chose: its path, or the built-in default.
fn shown_config(file: &std::path::Path, options: &LoadOptions) -> String {
    if options.embedded_default {
        "the built-in default configuration".to_owned()
    } else {
        file.display().to_string()
    }
}

/// Where the built-in default configuration is used, say so (on standard error, so that a
/// report on standard output stays the report alone).
fn tell_if_embedded(options: &LoadOptions) {
    if options.embedded_default {
        eprintln!("{}", embedded_notice());
    }
}

fn embedded_notice() -> String {
    format!(
        "ferromq: no {DEFAULT_CONFIG} in this directory: using the default configuration built \
         into ferromq (as {DEFAULT_CONFIG}; its store under ${{activemq.data}}: ./data unless \
         -D activemq.data or ACTIVEMQ_DATA says otherwise); `ferromq init` writes it out to edit"
    )
}

/// `ferromq init [DIR]`: write the built-in default configuration into DIR/conf/.
fn init(args: InitArgs) -> ExitCode {
    match config::embedded::write_out(&args.dir) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferromq: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let (file, options) = config_file(args.file.as_ref(), args.config.as_ref(), &args.props);
    tell_if_embedded(&options);
    let mut loaded = config::load_file(&file, &options);
    // As `run --console` does, before the preflight: a console placed on the command line must
    // pass the same checks (users, host, port) as one the file enables.
    if let (Some((host, port)), Some(config)) = (args.console.clone(), loaded.config.as_mut()) {
        config.override_console_address(host, port);
    }
    let mut online = config::report::Online::default();
    // What `run` builds before serving (TLS, security, the store directory), when the file
    // itself is valid: a check that passes means a start that gets as far as binding.
    if let Some(config) = loaded
        .config
        .as_ref()
        .filter(|_| !loaded.diagnostics.has_errors())
    {
        let mut found = crate::broker::preflight::preflight(config);
        if (args.bind || args.online) && found.is_empty() {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    if args.bind {
                        found.extend(runtime.block_on(crate::broker::preflight::try_bind(config)))
                    }
                    if args.online {
                        found
                            .extend(runtime.block_on(crate::broker::preflight::try_online(config)));
                        let nats = runtime.block_on(crate::cluster::probe::check(config));
                        found.extend(nats.diagnostics);
                        online.nats_max_payload = nats.max_payload;
                    }
                }
                Err(e) => found.push(config::Diagnostic::error(
                    None,
                    format!("cannot start the async runtime to bind: {e}"),
                )),
            }
        }
        loaded.diagnostics.extend(found);
    }
    let output = match args.format {
        Format::Text => config::report::text_with(&loaded, online),
        Format::Json => config::report::json_with(&loaded, online),
    };
    print!("{output}");
    let failed = loaded.diagnostics.has_errors()
        || (args.deny_warnings && loaded.diagnostics.warnings().next().is_some());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(args: RunArgs, format: LogFormat) -> ExitCode {
    let (file, options) = config_file(args.file.as_ref(), args.config.as_ref(), &args.props);
    // With JSON logs, every line is JSON: the notice too.
    let shown = if options.embedded_default {
        let notice = embedded_notice();
        match format {
            LogFormat::Text => eprintln!("{notice}"),
            LogFormat::Json => tracing::info!("{notice}"),
        }
        format!("the built-in default configuration (as {})", file.display())
    } else {
        file.display().to_string()
    };
    let loaded = config::load_file(&file, &options);
    for d in &loaded.diagnostics.0 {
        print_diagnostic(d, format);
    }
    let mut config = match loaded.into_result() {
        Ok(c) => c,
        Err(_) => {
            say(
                format,
                &format!("ferromq: {shown} has errors; not starting"),
            );
            return ExitCode::from(1);
        }
    };
    if let Some((host, port)) = args.console {
        config.override_console_address(host, port);
    }
    // The same construction `check` reports on, so that both fail the same way.
    let problems = crate::broker::preflight::preflight(&config);
    if !problems.is_empty() {
        for d in &problems {
            print_diagnostic(d, format);
        }
        say(
            format,
            &format!("ferromq: {shown} has errors; not starting"),
        );
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(
                format,
                &format!("ferromq: cannot start the async runtime: {e}"),
            );
            return ExitCode::from(1);
        }
    };
    let store_span = config.persistence_span.clone();
    let serve = crate::broker::run_until_signal_with_reload(config, options, args.watch);
    match runtime.block_on(serve) {
        Ok(crate::broker::Stopped::Gracefully) => ExitCode::SUCCESS,
        // Not returning: dropping the runtime would wait for the tasks being given up on.
        Ok(
            crate::broker::Stopped::Forced(signal) | crate::broker::Stopped::BeforeServing(signal),
        ) => std::process::exit(128 + i32::from(signal.number())),
        // A store that fails at open for a cause the preflight cannot see without opening it
        // (damage inside the database): still reported at the store's place in the file.
        Err(e)
            if e.chain()
                .any(|cause| cause.is::<crate::store::StoreError>()) =>
        {
            let located = config::diagnostic::Diagnostic::error(store_span, format!("{e:#}"))
                .with_hint(
                "`ferromq check` looks at the store without opening it (docs/durable-store.md, \
                     \"One broker per store\"); move the store's files away to start empty, or \
                     point the store at another directory",
            );
            print_diagnostic(&located, format);
            say(format, &format!("ferromq: {shown} could not be started"));
            ExitCode::from(1)
        }
        Err(e) => {
            say(format, &format!("ferromq: {e:#}"));
            ExitCode::from(1)
        }
    }
}

/// A line of `run` about why it does not start: as written with text logs, an error event
/// with JSON logs (so that every line of a JSON log is JSON).
fn say(format: LogFormat, line: &str) {
    match format {
        LogFormat::Text => eprintln!("{line}"),
        LogFormat::Json => tracing::error!("{line}"),
    }
}

/// A configuration diagnostic at start: `file:line:col: severity: message` with text logs; an
/// event with the position and the hint as fields with JSON logs.
fn print_diagnostic(d: &config::diagnostic::Diagnostic, format: LogFormat) {
    use config::diagnostic::Severity;
    if format == LogFormat::Text {
        eprintln!("{d}");
        return;
    }
    let file = d.span.as_ref().map(|s| s.file.display().to_string());
    let line = d.span.as_ref().map(|s| s.line);
    let column = d.span.as_ref().map(|s| s.col);
    // Present only for the built-in copy, whose `file` is not on disk.
    let builtin = d.span.as_ref().and_then(|s| s.builtin.then_some(true));
    let hint = d.hint.as_deref();
    match d.severity {
        Severity::Error => {
            tracing::error!(target: "ferromq::config", file, builtin, line, column, hint, "{}", d.message)
        }
        Severity::Warning => {
            tracing::warn!(target: "ferromq::config", file, builtin, line, column, hint, "{}", d.message)
        }
        Severity::Note => {
            tracing::info!(target: "ferromq::config", file, builtin, line, column, hint, "{}", d.message)
        }
    }
}

fn status(args: StatusArgs) -> ExitCode {
    let password = match &args.password_env {
        Some(var) => match std::env::var(var) {
            Ok(p) => Some(p),
            Err(_) => {
                eprintln!("ferromq: the environment variable {var} is not set");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let credentials = args
        .username
        .as_deref()
        .map(|u| (u, password.as_deref().unwrap_or("")));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferromq: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (url, origin) = match &args.console {
        Some(url) => (url.clone(), None),
        None => {
            match configured_console_url(args.config.as_ref().or(args.file.as_ref()), &args.props) {
                Ok((url, origin)) => (url, Some(origin)),
                Err(failed) => {
                    eprintln!("ferromq: {failed}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let answer = runtime.block_on(crate::console::status::get(
        &url,
        "/api/overview",
        credentials,
        args.cacert.as_deref(),
    ));
    let failed = match answer {
        Ok((200, body)) => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(overview) => {
                print!("{}", crate::console::status::describe(&overview));
                return ExitCode::SUCCESS;
            }
            Err(e) => format!("the console's answer is not JSON: {e}"),
        },
        Ok((401, _)) => refused_login(args.username.as_deref(), args.password_env.as_deref()),
        Ok((code, _)) => format!("the console answered HTTP {code}"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("ferromq: {failed}");
    // A console the user did not name: say where its address came from, since the one
    // that failed may not be the one they meant.
    if let Some(origin) = origin {
        eprintln!("ferromq: asked {url}, {origin}; give --console URL to ask another");
    }
    ExitCode::from(1)
}

/// Why the console refused the login (HTTP 401), from what was given: a user without
/// `--password-env` sent an empty password, which is rarely what was meant.
fn refused_login(username: Option<&str>, password_env: Option<&str>) -> String {
    match (username, password_env) {
        (None, _) => "the console refused the login: no user was given (give --username and \
             --password-env)"
            .to_owned(),
        (Some(user), None) => format!(
            "the console refused the login of `{user}`: the password is missing \
             (--password-env VAR not given: VAR names the environment variable that holds it)"
        ),
        (Some(user), Some(var)) => format!(
            "the console refused the login of `{user}` with the password in {var} (check both \
             against the console's realm file)"
        ),
    }
}

/// The console `status` asks without `--console`: the one the configuration `run` would read
/// (`--config`, else conf/activemq.xml, else the built-in default) enables, as `run` serves it
/// without `--console`; else ActiveMQ's address. With where that address came from.
///
/// A file named with `--config` that cannot be loaded is an error (one that cannot be read
/// says so with the OS error; otherwise its errors are printed on standard error, the `Err`
/// saying what to do): it names the broker that was
/// meant, and asking ActiveMQ's address instead could print another broker's overview as if
/// it were that one's. The implicit default falls back, as a file nobody named says nothing of
/// where the console is.
fn configured_console_url(
    config: Option<&PathBuf>,
    props: &PropertyArgs,
) -> Result<(String, String), String> {
    let (file, options) = config_file(None, config, props);
    let shown = shown_config(&file, &options);
    // A named file that cannot be read has no errors `check` could show: say why it cannot be
    // read (a typo in the path, a permission) instead.
    if config.is_some() {
        if let Err(e) = readable(&file) {
            return Err(format!(
                "cannot read {shown}: {e}; give the path of the broker's activemq.xml, or \
                 --console URL to ask a console without reading a file"
            ));
        }
    }
    let loaded = config::load_file(&file, &options);
    let default = crate::console::status::default_url();
    match &loaded.config {
        Some(config) => Ok(match &config.console {
            Some(console) => (
                crate::console::status::url_of(console),
                format!("the console {shown} enables ({})", console.source),
            ),
            None => (
                default,
                format!(
                    "ActiveMQ's console address: {shown} enables no console (one that \
                     `run --console HOST:PORT` placed is in no file)"
                ),
            ),
        }),
        None if config.is_some() => {
            for d in loaded.diagnostics.errors() {
                eprintln!("{d}");
            }
            Err(format!(
                "{shown} has errors (above), so the console it enables is unknown; `ferromq \
                 check {shown}` shows the details, and --console URL asks a console without \
                 reading the file"
            ))
        }
        None => Ok((
            default,
            format!(
                "ActiveMQ's console address: {shown} cannot be loaded (`ferromq check` says \
                 why)"
            ),
        )),
    }
}

/// Whether `path` can be opened and read (a directory opens but cannot be read).
fn readable(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open(path)?.read(&mut [0u8; 1]).map(|_| ())
}

fn explain(args: ExplainArgs) -> ExitCode {
    use crate::security::{explain, explain_destination, Action, AuthRequest};

    // The configuration `run` would serve, chosen the same way, so that the answer is about
    // the broker `run` starts in this directory.
    let (file, options) = config_file(None, args.config.as_ref(), &args.props);
    tell_if_embedded(&options);
    let loaded = config::load_file(&file, &options);
    let config = match loaded.into_result() {
        Ok(c) => c,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            eprintln!("ferromq: {} has errors", shown_config(&file, &options));
            return ExitCode::from(1);
        }
    };
    if let Some(destination) = &args.destination {
        if let Err(e) = explain_destination::parse_stomp_destination(destination) {
            eprintln!("ferromq: {e}");
            return ExitCode::from(2);
        }
    }
    let action = match args.action {
        ExplainAction::Publish => Action::Write,
        ExplainAction::Subscribe => Action::Read,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferromq: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let security = match explain_security(&config, args.online, &runtime) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("ferromq: {e}");
            return ExitCode::from(1);
        }
    };
    let explained = match &args.password {
        None => {
            let groups = (!args.groups.is_empty()).then_some(args.groups.as_slice());
            match (&args.destination, &args.topic) {
                (Some(destination), _) => explain_destination::explain_destination_with(
                    &config,
                    &security,
                    &args.user,
                    groups,
                    destination,
                    action,
                ),
                (None, topic) => explain::explain_with(
                    &config,
                    &security,
                    &args.user,
                    groups,
                    topic.as_deref().unwrap_or_default(),
                    action,
                ),
            }
        }
        Some(password) => {
            // Without an authentication plugin the login succeeds as `anonymous` whatever the
            // password: say so before an answer that does not name the user asked about.
            let note = if security.authentication_enabled() {
                String::new()
            } else {
                explain::no_authentication_note(&security, &args.user, false)
            };
            let request = AuthRequest {
                client_id: "ferromq-explain",
                username: Some(&args.user),
                password: Some(password.as_bytes()),
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: false,
                peer_cert_subject: None,
            };
            runtime
                .block_on(security.authenticate(&request))
                .map_err(|e| format!("login as `{}` failed: {e}", args.user))
                .and_then(|principal| match (&args.destination, &args.topic) {
                    (Some(destination), _) => explain_destination::explain_destination_in_config(
                        &config,
                        &security,
                        &principal,
                        destination,
                        action,
                    ),
                    (None, topic) => Ok(explain::explain_in_config(
                        &config,
                        &security,
                        &principal,
                        topic.as_deref().unwrap_or_default(),
                        action,
                    )),
                })
                .map(|mut explained| {
                    explained.text.insert_str(0, &note);
                    explained
                })
        }
    };
    match explained {
        Ok(explanation) => {
            print!("{explanation}");
            if explanation.invalid {
                ExitCode::from(2)
            } else if explanation.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("ferromq: {e}");
            ExitCode::from(1)
        }
    }
}

/// The security snapshot `explain` decides with. Entries of a `cachedLDAPAuthorizationMap`
/// live in LDAP: without `--online` they are unknown, and an answer without them would be
/// wrong, so that is an error; with it, the map is loaded once from its server.
fn explain_security(
    config: &config::Config,
    online: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<crate::security::Security, String> {
    let security = crate::security::Security::from_config(config)?;
    let Some(source) = security.ldap_authz_source().cloned() else {
        return Ok(security);
    };
    if !online {
        return Err(format!(
            "the authorization entries of this configuration are in LDAP \
             (cachedLDAPAuthorizationMap at {}); add --online to load them from {}",
            source.span(),
            source.server().url()
        ));
    }
    let loaded = runtime
        .block_on(source.load())
        .map_err(|e| format!("cannot load the LDAP authorization map: {e}"))?;
    source.store(loaded);
    security.with_ldap_authorization()
}

fn jasypt_command(args: &JasyptArgs, encrypt: bool) -> ExitCode {
    use crate::config::jasypt::{self, Algorithm};

    let Some(algorithm) = Algorithm::from_name(&args.algorithm) else {
        eprintln!(
            "ferromq: unsupported algorithm `{}`; use one of {}",
            args.algorithm,
            Algorithm::SUPPORTED
        );
        return ExitCode::from(2);
    };
    let result = if encrypt {
        jasypt::encrypt(algorithm, &args.password, &args.input)
            .map(|v| format!("Encrypted text: {v}"))
    } else {
        let input = jasypt::enc_inner(&args.input).unwrap_or(&args.input);
        jasypt::decrypt(algorithm, &args.password, input).map(|v| format!("Decrypted text: {v}"))
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ferromq: {err}");
            ExitCode::from(1)
        }
    }
}

fn passwd(args: PasswdArgs) -> ExitCode {
    use crate::security::password::{hash, HashAlgorithm};
    use crate::security::scram::ScramMechanism;

    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("ferromq: cannot read the password from standard input: {e}");
        return ExitCode::from(1);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!(
            "ferromq: no password on standard input (example: echo -n secret | ferromq passwd)"
        );
        return ExitCode::from(1);
    }
    let algorithm = match args.algorithm {
        PasswdAlgorithm::Argon2id => HashAlgorithm::Argon2id,
        PasswdAlgorithm::Bcrypt => HashAlgorithm::Bcrypt,
        PasswdAlgorithm::ScramSha256 => HashAlgorithm::Scram {
            mechanism: ScramMechanism::Sha256,
            iterations: args.iterations,
        },
        PasswdAlgorithm::ScramSha512 => HashAlgorithm::Scram {
            mechanism: ScramMechanism::Sha512,
            iterations: args.iterations,
        },
    };
    match hash(password.as_bytes(), algorithm) {
        Ok(hashed) => {
            println!("{hashed}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferromq: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_or_report(file: &std::path::Path, options: &LoadOptions) -> Option<config::Config> {
    let loaded = config::load_file(file, options);
    for d in loaded.diagnostics.errors() {
        eprintln!("{d}");
    }
    loaded.into_result().ok()
}

fn session(command: SessionCommand) -> ExitCode {
    match command {
        SessionCommand::List {
            file,
            config,
            props,
        } => {
            let (file, options) = config_file(file.as_ref(), config.as_ref(), &props);
            tell_if_embedded(&options);
            let Some(config) = load_or_report(&file, &options) else {
                return ExitCode::from(1);
            };
            match crate::admin::list_sessions(&config) {
                Ok(sessions) => {
                    println!("client_id\tsubscriptions\tqueued\toffline_secs");
                    for s in sessions {
                        println!(
                            "{}\t{}\t{}\t{}",
                            s.client_id, s.subscriptions, s.queued, s.offline_secs
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    ExitCode::from(1)
                }
            }
        }
        SessionCommand::End {
            client_id,
            broker: Some(addr),
            username,
            password_env,
            ..
        } => {
            let password = password_env.and_then(|var| std::env::var(var).ok());
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferromq: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let ended = crate::admin::end_session_online(addr, &client_id, username, password);
            match runtime.block_on(ended) {
                Ok(true) => {
                    println!(
                        "session `{client_id}` ended on {addr} (a client connected with that \
                         id, if one was, was disconnected, and makes a new session if it \
                         connects again)"
                    );
                    ExitCode::SUCCESS
                }
                Ok(false) => {
                    // Whether a client was connected is not known here: a clean session's
                    // client is taken over like any other, and its CONNACK says the same.
                    eprintln!(
                        "ferromq: {addr} kept no session with client id `{client_id}`: \
                         nothing ended (a client connected with that id on a clean session, \
                         if one was, was disconnected, since ending a session over MQTT \
                         takes its connection over; the client ids a broker keeps: its web \
                         console, page /sessions)"
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    ExitCode::from(1)
                }
            }
        }
        SessionCommand::End {
            client_id,
            config,
            props,
            ..
        } => {
            let (file, options) = config_file(None, config.as_ref(), &props);
            tell_if_embedded(&options);
            let Some(config) = load_or_report(&file, &options) else {
                return ExitCode::from(1);
            };
            match crate::admin::end_session_in_store(&config, &client_id) {
                Ok(s) => {
                    println!(
                        "session `{}` ended with {} queued messages",
                        s.client_id, s.queued
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
