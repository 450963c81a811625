//! `cairn-snapshot`: the backup stage. Argument parsing only; the work is in
//! `cairn::snapshot_stage`.

use std::path::PathBuf;

use clap::Parser;

/// Back up [sources] into the repository and record a snapshot.
#[derive(Parser)]
#[command(name = "cairn-snapshot", version, about, long_about = None)]
struct Cli {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    /// Read and chunk everything, count what would be added, write nothing
    #[arg(long)]
    dry_run: bool,
    /// Read every file, even those the files cache says are unchanged
    #[arg(long)]
    force_read: bool,
    /// Tag the snapshot; repeatable
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| {
        cairn::snapshot_stage::run(&cairn::snapshot_stage::SnapshotArgs {
            config: cli.config,
            json: cli.json,
            dry_run: cli.dry_run,
            tags: cli.tag,
            force_read: cli.force_read,
        })
    })
}
