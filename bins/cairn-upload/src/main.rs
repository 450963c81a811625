//! `cairn-upload`: mirror the local repository to the `[remote]` S3 bucket, append-only.
//! Argument parsing only; the work is in `cairn::upload`.

use std::path::PathBuf;

use clap::Parser;

/// Mirror the repository's new objects to the S3 bucket of [remote]
#[derive(Parser)]
#[command(name = "cairn-upload", version, about, long_about = None)]
struct Cli {
    /// Configuration file (drop-ins are read from FILE.d/*.conf)
    #[arg(long, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    /// List what would be uploaded (and, with --prune, deleted); send nothing
    #[arg(long)]
    dry_run: bool,
    /// After uploading, delete from the bucket what the local repository dropped and is
    /// older than prune_grace (needs delete_credentials)
    #[arg(long)]
    prune: bool,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    cairn::stage::init_logging("cairn-upload");
    cairn::stage::install_panic_logging();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A panic is logged by the hook and recorded as a failure in the status file as the
    // stage unwinds; the process exits 3, not Rust's 101.
    cairn::stage::exit_with(|| {
        cairn::upload::run(&cairn::upload::UploadArgs {
            config: cli.config,
            json: cli.json,
            dry_run: cli.dry_run,
            prune: cli.prune,
        })
    })
}
