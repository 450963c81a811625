//! `cairn`: the command for people. Argument parsing only; the work is in `cairn::app`.

use std::path::PathBuf;

use cairn::app::{self, Global, NewKey, RestoreArgs};
use cairn::restore::Overwrite;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// cairn — deduplicated, encrypted, verified backups for systemd hosts.
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
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
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Read the [remote] bucket instead of the local repository (snapshots, ls, diff,
    /// cat, restore, check, key list)
    #[arg(long, global = true)]
    remote: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new repository at [repository] path
    Init,
    /// Manage the key slots that open the repository
    #[command(subcommand)]
    Key(KeyCmd),
    /// List snapshots
    Snapshots,
    /// List the entries of a snapshot (below PATH)
    Ls {
        snapshot: String,
        path: Option<String>,
    },
    /// Show what changed between two snapshots
    Diff { from: String, to: String },
    /// Write one file of a snapshot to stdout
    Cat { snapshot: String, path: String },
    /// Restore a snapshot into a directory, or as a tar stream
    Restore(RestoreCli),
    /// Verify the repository's structure (and with --read-data, every byte)
    Check {
        /// Read and authenticate every pack and blob
        #[arg(long)]
        read_data: bool,
    },
    /// Remove the snapshots that [retention] does not keep, saying why for each
    Forget {
        /// Show what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the data no snapshot uses; repack half-empty packs
    Prune {
        /// Say what would be deleted and repacked; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Rewrite at most SIZE of packs in this run (e.g. 10 GiB)
        #[arg(long, value_name = "SIZE")]
        max_repack: Option<String>,
    },
    /// Protect a snapshot: forget never removes it (its id changes)
    Protect {
        /// Snapshot id, unique id prefix, or "latest"
        snapshot: String,
    },
    /// Remove the protection of a snapshot (its id changes)
    Unprotect {
        /// Snapshot id, unique id prefix, or "latest"
        snapshot: String,
    },
    /// Set up this host: user, directories, backup disk, sudoers rule, MTA, key, repository,
    /// timers
    Setup {
        /// Print the exact plan; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Install a local-only MTA (Debian's exim4) when no sendmail is present
        #[arg(long)]
        install_mta: bool,
        /// Render this sudoers template instead of the built-in one
        #[arg(long, value_name = "FILE")]
        sudoers_template: Option<PathBuf>,
    },
    /// The pipeline at a glance: each stage's last run, the timers, the repository, what
    /// the bucket lacks, staleness (exit 3 when something is red)
    Status,
    /// The [remote] bucket
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Remove stale locks (with --all, every lock)
    Unlock {
        /// Remove all locks, even live ones (only when no cairn process runs)
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum RemoteCmd {
    /// Check the credentials and the bucket: list, then put, get and delete a probe object
    Test,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write a new random key file (mode 0600)
    Generate { path: PathBuf },
    /// Add a key slot (opening the repository with the configured key)
    Add {
        /// A key file made by `cairn key generate`
        #[arg(long, value_name = "PATH", group = "new")]
        key_file: Option<PathBuf>,
        /// A file holding the new passphrase
        #[arg(long, value_name = "PATH", group = "new")]
        passphrase_file: Option<PathBuf>,
        /// A label shown by `cairn key list`
        #[arg(long)]
        label: Option<String>,
    },
    /// List key slots
    List,
    /// Remove a key slot (never the last one)
    Remove { id: String },
}

#[derive(Args)]
struct RestoreCli {
    /// Snapshot id, unique id prefix, or "latest"; SNAPSHOT:PATH restores the directory
    /// PATH of the snapshot as the top of the target (or of the tar stream)
    snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "tar",
        required_unless_present = "tar"
    )]
    target: Option<PathBuf>,
    /// Write a POSIX pax tar to FILE, or to stdout with "-"
    #[arg(long, value_name = "FILE")]
    tar: Option<String>,
    /// Restore only entries matching GLOB (and their parents); repeatable
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out entries matching GLOB; repeatable
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// List what would be restored; change nothing
    #[arg(long)]
    dry_run: bool,
    /// What to do with entries that already exist in the target
    #[arg(long, value_enum, default_value_t = OverwriteArg::Never)]
    overwrite: OverwriteArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    Never,
    IfChanged,
    Always,
}

fn main() -> std::process::ExitCode {
    cairn::cli::completions::<Cli>();
    let cli: Cli = match cairn::app::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    cairn::stage::init_logging("cairn");
    let g = Global {
        config: cli.global.config,
        json: cli.global.json,
        remote: cli.global.remote,
    };
    let r = match cli.cmd {
        Cmd::Init => app::init(&g),
        Cmd::Key(KeyCmd::Generate { path }) => app::key_generate(&g, &path),
        Cmd::Key(KeyCmd::Add {
            key_file,
            passphrase_file,
            label,
        }) => {
            let new = match (key_file, passphrase_file) {
                (Some(k), _) => NewKey::KeyFile(k),
                (_, Some(p)) => NewKey::PassphraseFile(p),
                _ => NewKey::Prompt,
            };
            app::key_add(&g, new, label)
        }
        Cmd::Key(KeyCmd::List) => app::key_list(&g),
        Cmd::Key(KeyCmd::Remove { id }) => app::key_remove(&g, &id),
        Cmd::Snapshots => app::snapshots(&g),
        Cmd::Ls { snapshot, path } => app::ls(&g, &snapshot, path.as_deref()),
        Cmd::Diff { from, to } => app::diff(&g, &from, &to),
        Cmd::Cat { snapshot, path } => app::cat(&g, &snapshot, &path),
        Cmd::Restore(r) => app::restore(
            &g,
            &RestoreArgs {
                snapshot: r.snapshot,
                target: r.target,
                tar: r.tar,
                include: r.include,
                exclude: r.exclude,
                dry_run: r.dry_run,
                overwrite: match r.overwrite {
                    OverwriteArg::Never => Overwrite::Never,
                    OverwriteArg::IfChanged => Overwrite::IfChanged,
                    OverwriteArg::Always => Overwrite::Always,
                },
            },
        ),
        Cmd::Check { read_data } => app::check(&g, read_data),
        Cmd::Forget { dry_run } => app::forget(&g, dry_run),
        Cmd::Prune {
            dry_run,
            max_repack,
        } => app::prune(&g, dry_run, max_repack.as_deref()),
        Cmd::Protect { snapshot } => app::protect(&g, &snapshot, true),
        Cmd::Unprotect { snapshot } => app::protect(&g, &snapshot, false),
        Cmd::Unlock { all } => app::unlock(&g, all),
        Cmd::Remote(RemoteCmd::Test) => app::remote_test(&g),
        Cmd::Status => app::status(&g),
        Cmd::Setup { .. } if g.remote => {
            eprintln!("cairn: error: --remote does not apply to setup: run it without --remote");
            Ok(1)
        }
        Cmd::Setup {
            dry_run,
            install_mta,
            sudoers_template,
        } => Ok(cairn::setup::run(&cairn::setup::SetupArgs {
            config: g.config.clone(),
            json: g.json,
            dry_run,
            install_mta,
            sudoers_template,
        })),
    };
    std::process::ExitCode::from(app::finish(r) as u8)
}
