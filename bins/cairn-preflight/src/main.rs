//! `cairn-preflight`: check that the backup disk is the right disk, mounted, writable and
//! with room, healing the mount and /etc/fstab where configured. Argument parsing only;
//! the work is in `cairn::preflight`.

use std::path::PathBuf;

use clap::Parser;

/// Check the backup disk before a snapshot: identity, mount, fstab, writability, space
#[derive(Parser)]
#[command(name = "cairn-preflight", version, about, long_about = None)]
struct Cli {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the checks and the verdict as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Say what would be mounted, appended to /etc/fstab or mailed; change nothing
    #[arg(long)]
    dry_run: bool,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    // Logging first: a failure from here on reaches the journal.
    cairn::stage::init_logging("cairn-preflight");
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| {
        cairn::preflight::run(&cairn::preflight::PreflightArgs {
            config: cli.config,
            json: cli.json,
            dry_run: cli.dry_run,
        })
    })
}
