//! `cairn-quiesce`: stop the configured services before the snapshot and start them
//! again after it. Argument parsing only; the work is in `cairn::quiesce`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Stop the [quiesce] services for the snapshot, and always start them again
#[derive(Parser)]
#[command(name = "cairn-quiesce", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct GlobalArgs {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a JSON summary on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Say what would be stopped or started and which hooks would run; change nothing
    #[arg(long, global = true)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run pre_hook, stop the running [quiesce] units and record them (ExecStartPre=)
    Stop,
    /// Start the recorded units again in reverse order, run post_hook (ExecStopPost=)
    Start,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    // Logging first: a failure from here on reaches the journal.
    cairn::stage::init_logging("cairn-quiesce");
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let args = cairn::quiesce::QuiesceArgs {
        command: match cli.cmd {
            Cmd::Stop => cairn::quiesce::Command::Stop,
            Cmd::Start => cairn::quiesce::Command::Start,
        },
        config: cli.global.config,
        json: cli.global.json,
        dry_run: cli.global.dry_run,
    };
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| cairn::quiesce::run(&args))
}
