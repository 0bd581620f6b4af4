//! Command line: `ferromq run`, `ferromq check`. Parses arguments, sets up logging, dispatches,
//! and maps outcomes to exit codes (0 ok, 1 invalid config or runtime failure, 2 usage error).

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
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Args)]
pub struct PropertyArgs {
    /// Set a placeholder property, like Java's -Dname=value (repeatable). Overrides properties
    /// files; environment variables are consulted last.
    #[arg(long = "set", short = 'D', value_name = "NAME=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

impl PropertyArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            overrides: self.properties.iter().cloned().collect::<BTreeMap<_, _>>(),
            use_env: true,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Reload when the file (or anything it names) changes, even without a
    /// runtimeConfigurationPlugin.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub props: PropertyArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(default_value = DEFAULT_CONFIG)]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Treat warnings as errors (exit 1), for CI pipelines.
    #[arg(long)]
    pub deny_warnings: bool,
    #[command(flatten)]
    pub props: PropertyArgs,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
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
    init_tracing(&cli.log_level);
    match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn check(args: CheckArgs) -> ExitCode {
    let loaded = config::load_file(&args.file, &args.props.load_options());
    let output = match args.format {
        Format::Text => config::report::text(&loaded),
        Format::Json => config::report::json(&loaded),
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

fn run(args: RunArgs) -> ExitCode {
    let loaded = config::load_file(&args.config, &args.props.load_options());
    for d in &loaded.diagnostics.0 {
        eprintln!("{d}");
    }
    let config = match loaded.into_result() {
        Ok(c) => c,
        Err(_) => {
            eprintln!(
                "ferromq: {} has errors; not starting",
                args.config.display()
            );
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferromq: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = args.watch; // wired by the reload issue
    match runtime.block_on(crate::broker::run_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferromq: {e:#}");
            ExitCode::from(1)
        }
    }
}
