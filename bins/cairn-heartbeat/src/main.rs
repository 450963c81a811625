//! `cairn-heartbeat`: dead-man's-switch pings, Prometheus metrics and staleness alerts from
//! the stages' results, and the mail of `cairn-alert@.service`. Argument parsing only; the
//! work is in `cairn::heartbeat`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Pings, metrics and staleness alerts for the cairn pipeline
#[derive(Parser)]
#[command(name = "cairn-heartbeat", version, about, long_about = None)]
struct Cli {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: follow the stages (D-Bus signals, status files), ping, write
    /// metrics, check staleness every 15 minutes
    Run,
    /// Send one ping now
    Ping {
        /// Ping failure (URL/fail) instead of success
        #[arg(long)]
        fail: bool,
        /// The stage the ping is about: `drill` pings drill_ping_url, any other stage
        /// ping_url; the body carries the stage's last status
        #[arg(long, value_name = "STAGE")]
        stage: Option<String>,
    },
    /// Check staleness once and alert if needed (exit 0 fresh, 3 stale, 5 alert undelivered)
    Check,
    /// Mail (and post) a failed unit's result and its last 50 journal lines, for
    /// cairn-alert@.service
    Alert {
        /// The unit that failed (cairn-alert@%n.service passes it as %i)
        #[arg(value_name = "UNIT")]
        unit: String,
    },
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    cairn::stage::init_logging("cairn-heartbeat");
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = cli.config.as_deref();
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| match &cli.command {
        Command::Run => cairn::heartbeat::run(config),
        Command::Ping { fail, stage } => {
            cairn::heartbeat::ping_now(config, *fail, stage.as_deref())
        }
        Command::Check => cairn::heartbeat::check_once(config),
        Command::Alert { unit } => cairn::heartbeat::alert_unit(config, unit),
    })
}
