//! `cairn-drill`: the restore drill — restore the latest snapshot into scratch space and
//! verify every byte. Argument parsing only; the work is in `cairn::drill`.

use std::path::PathBuf;

use clap::Parser;

/// Restore the latest snapshot (or a sample of it) into a scratch directory and verify it
#[derive(Parser)]
#[command(name = "cairn-drill", version, about, long_about = None)]
struct Cli {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    /// Say what would be restored and verified; restore nothing
    #[arg(long)]
    dry_run: bool,
    /// Drill this snapshot (id, unique prefix, or "latest") instead of the latest
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    cairn::stage::init_logging("cairn-drill");
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| {
        cairn::drill::run(&cairn::drill::DrillArgs {
            config: cli.config,
            json: cli.json,
            dry_run: cli.dry_run,
            snapshot: cli.snapshot,
        })
    })
}
