//! The `cairn-snapshot` stage: back up `[sources]` into the repository under the stage
//! contract (journal, status file, sd_notify, D-Bus signal, exit codes).
//!
//! Exit 0: snapshot recorded, complete. 3: recorded but incomplete (unreadable files are
//! listed in the journal, the status file and the snapshot), or the backup failed. 1: bad
//! configuration or wrong key. 2: repository missing, key missing, or locked.
//!
//! With `[retention]`, a run that recorded a snapshot then applies the policy
//! ([`crate::retention::forget`]) under the exclusive lock. That is housekeeping, not the
//! backup: if it fails (typically: another process holds a lock) it is a warning, the
//! figures say so (`forgotten` null, `retention_error`), and the exit code stays the
//! backup's.

use std::path::PathBuf;

use serde_json::json;

use crate::archiver::{self, BackupEvents, BackupOptions};
use crate::config::{Compression, Config};
use crate::repo::Repository;
use crate::stage::{msg, Dirs, Exit, Outcome, Priority, Progress, Run};

pub struct SnapshotArgs {
    pub config: Option<PathBuf>,
    pub json: bool,
    pub dry_run: bool,
    pub tags: Vec<String>,
    /// Read every file, ignoring the files cache.
    pub force_read: bool,
}

struct Events<'a> {
    stage: &'a Run,
    progress: Progress,
}

impl BackupEvents for Events<'_> {
    fn unreadable(&self, path: &str, error: &str) {
        self.stage.event(
            &msg::FILE_UNREADABLE,
            Priority::Warning,
            &format!("cannot back up {path}: {error}"),
            &[("CAIRN_PATH", path)],
        );
    }
    fn changed_while_read(&self, path: &str) {
        self.stage.event(
            &msg::FILE_CHANGED,
            Priority::Notice,
            &format!("{path} changed while it was read; stored as read"),
            &[("CAIRN_PATH", path)],
        );
    }
    fn skipped(&self, path: &str, why: &str) {
        self.stage.info(&format!("{path}: {why}"));
    }
    fn note(&self, message: &str) {
        self.stage.info(message);
    }
    fn progress(&self, bytes: u64) {
        self.progress.inc(bytes);
    }
    fn dump_started(&self, path: &str, what: &str) {
        self.stage.info(&format!("dumping into {path}: {what}"));
    }
    fn dump_stored(&self, path: &str, bytes: u64, warnings: &str) {
        let section = section_of(path);
        self.stage.event(
            &msg::DATABASE_DUMPED,
            Priority::Info,
            &format!(
                "stored the dump {path} ({})",
                crate::util::human_bytes(bytes)
            ),
            &[("CAIRN_PATH", path), ("CAIRN_DATABASE", section)],
        );
        if !warnings.trim().is_empty() {
            self.stage.warn(&format!(
                "the dump tool said, for {path}: {}",
                warnings.trim()
            ));
        }
    }
    fn dump_failed(&self, path: &str, error: &str) {
        self.stage.event(
            &msg::DATABASE_DUMP_FAILED,
            Priority::Err,
            &format!("the dump {path} failed and is not in the snapshot: {error}"),
            &[("CAIRN_PATH", path), ("CAIRN_DATABASE", section_of(path))],
        );
    }
}

/// `NAME` of `/.cairn/databases/NAME/FILE`.
fn section_of(path: &str) -> &str {
    path.split('/').nth(3).unwrap_or("")
}

fn fail(stage: Run, exit: Exit, msg: String, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            json!({"result": "failure", "exit_code": exit.code(), "error": msg})
        );
    }
    stage.finish(Outcome::failure(exit, "snapshot failed", msg))
}

fn exit_of(code: i32) -> Exit {
    Exit::from_code(code).unwrap_or(Exit::Failed)
}

/// Run the stage; returns the exit code.
pub fn run(args: &SnapshotArgs) -> i32 {
    let stage = match Run::start("snapshot", args.dry_run) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(stage, Exit::Usage, e.to_string(), args.json),
    };
    // [sources] may be left out when [database.NAME] sections say what to back up.
    let sources = if cfg.databases.is_empty() {
        cfg.sources().cloned()
    } else {
        Ok(cfg.sources.clone().unwrap_or_default())
    };
    let (rcfg, scfg) = match (cfg.repository(), sources) {
        (Ok(r), Ok(s)) => (r.clone(), s),
        (Err(e), _) | (_, Err(e)) => return fail(stage, Exit::Usage, e.to_string(), args.json),
    };
    let sources = match crate::keys::sources(&rcfg) {
        Ok(s) => s,
        Err(e) => return fail(stage, Exit::Environment, e, args.json),
    };
    stage.status(&format!(
        "opening the repository at {}",
        rcfg.path.display()
    ));
    let mut repo = match Repository::open(&rcfg.path, &sources) {
        Ok(r) => r,
        Err(e) => return fail(stage, exit_of(e.exit_code()), e.to_string(), args.json),
    };
    let lock = if args.dry_run {
        None
    } else {
        match repo.lock(false, "cairn-snapshot") {
            Ok(l) => {
                for s in &l.removed_stale {
                    stage.event(&msg::LOCK_STALE_REMOVED, Priority::Notice, s, &[]);
                }
                Some(l.lock)
            }
            Err(e) => return fail(stage, exit_of(e.exit_code()), e.to_string(), args.json),
        }
    };
    if !args.dry_run {
        // Packs an interrupted run wrote but never indexed: index them, reuse their data.
        match repo.recover_unindexed() {
            Ok((n, bad)) => {
                if n > 0 {
                    stage.info(&format!(
                        "indexed {n} packs left by an interrupted run; their data is reused"
                    ));
                }
                for b in bad {
                    stage.warn(&format!("{b}; ignored (`cairn check` reports it)"));
                }
            }
            Err(e) => return fail(stage, exit_of(e.exit_code()), e.to_string(), args.json),
        }
    }
    stage.ready();
    let dirs = Dirs::from_env();
    let mut dumps = Vec::new();
    let mut failed_dumps = Vec::new();
    for db in &cfg.databases {
        match crate::dump::plan(db) {
            Ok(d) => dumps.extend(d),
            Err(e) => failed_dumps.push((
                format!("/{}/{}", crate::dump::VIRTUAL_DIR.join("/"), db.name),
                e.to_string(),
            )),
        }
    }
    let opts = BackupOptions {
        paths: scfg.paths.clone(),
        exclude: scfg.exclude.clone(),
        one_file_system: scfg.one_file_system,
        exclude_caches: scfg.exclude_caches,
        exclude_if_present: scfg.exclude_if_present.clone(),
        tags: args.tags.clone(),
        compression: match rcfg.compression {
            Compression::Off => None,
            Compression::Zstd(l) => Some(l),
        },
        pack_size: rcfg.pack_size as usize,
        dry_run: args.dry_run,
        cache_dir: Some(dirs.cache.clone()),
        force_read: args.force_read,
        dumps,
        failed_dumps,
        scratch_dir: dirs.cache.join("dump"),
    };
    let events = Events {
        stage: &stage,
        progress: stage.progress("backing up"),
    };
    let result = archiver::backup(&repo, &opts, &events);
    events.progress.finish();
    drop(lock);
    let res = match result {
        Ok(r) => r,
        Err(e) => return fail(stage, exit_of(e.exit_code()), e.to_string(), args.json),
    };
    let s = &res.snapshot;
    let f = &s.figures;
    let id = res
        .snapshot_id
        .clone()
        .unwrap_or_else(|| "(dry run)".into());
    let summary = format!(
        "snapshot {} of {}: {} new, {} changed, {} unchanged files; {} read, {} added ({} stored) in {:.1} s",
        &id[..id.len().min(12)],
        s.paths.join(" "),
        f.files_new,
        f.files_changed,
        f.files_unchanged,
        crate::util::human_bytes(f.bytes_read),
        crate::util::human_bytes(f.bytes_added),
        crate::util::human_bytes(f.bytes_added_stored),
        f.duration_secs
    );
    let mut figures = json!({"snapshot": res.snapshot_id, "complete": s.complete, "dry_run": args.dry_run, "figures": f, "errors": s.errors.len()});
    if res.snapshot_id.is_some() {
        stage.event(
            &msg::SNAPSHOT_RECORDED,
            Priority::Info,
            &summary,
            &[("CAIRN_SNAPSHOT", &id)],
        );
    }
    // Retention, after a snapshot was recorded (complete or not), when [retention] is set.
    // It never changes the result of the backup: a failure is a warning.
    let mut summary = summary;
    let mut forgotten = None;
    if let (Some(policy), Some(_)) = (&cfg.retention, &res.snapshot_id) {
        let (n, error) = match apply_retention(&stage, &repo, policy) {
            Ok(r) => {
                crate::stage::log(
                    Priority::Notice,
                    &format!(
                        "retention ({}): {} snapshots kept, {} forgotten",
                        r.policy, r.kept, r.removed
                    ),
                );
                for e in &r.errors {
                    crate::stage::log(Priority::Warning, &format!("retention: {e}"));
                }
                summary.push_str(&format!("; forgot {} snapshots", r.removed));
                (Some(r.removed), r.errors.first().cloned())
            }
            Err(e) => {
                crate::stage::log(
                    Priority::Warning,
                    &format!(
                        "retention not applied: {e}; the snapshot is recorded, and the next run (or `cairn forget`) applies it"
                    ),
                );
                summary.push_str("; retention not applied");
                (None, Some(e))
            }
        };
        figures["forgotten"] = json!(n);
        figures["retention_error"] = json!(error);
        forgotten = n;
    }
    // The repository's size after this run and its retention, for the status file (and the heartbeat's
    // repository-size and dedup metrics). Best effort: a failure only leaves it out.
    if res.snapshot_id.is_some() {
        if let Ok((stored, logical, n)) = crate::overview::repo_figures(&repo) {
            figures["repository"] = json!({
                "stored_bytes": stored, "logical_bytes": logical, "snapshots": n,
            });
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"result": if s.complete {"success"} else {"partial"}, "snapshot": res.snapshot_id, "summary": summary, "forgotten": forgotten, "snapshot_record": s})
        );
    }
    let outcome = if s.complete {
        Outcome::success(summary)
    } else {
        Outcome::partial(
            summary,
            format!(
                "{} entries could not be backed up, first: {}",
                s.errors.len(),
                s.errors.first().cloned().unwrap_or_default()
            ),
        )
    };
    stage.finish(outcome.with_figures(figures))
}

/// `cairn forget` for the stage: release of the shared lock has happened; take the
/// exclusive one (no waiting: a conflict is an error), remove what `policy` drops.
fn apply_retention(
    stage: &Run,
    repo: &Repository,
    policy: &crate::config::RetentionConfig,
) -> Result<crate::retention::ForgetReport, String> {
    stage.status("applying [retention]");
    let lock = repo
        .lock(true, "cairn-snapshot (forget)")
        .map_err(|e| e.to_string())?;
    for s in &lock.removed_stale {
        stage.event(&msg::LOCK_STALE_REMOVED, Priority::Notice, s, &[]);
    }
    let report = crate::retention::forget(repo, policy, chrono::Utc::now(), false)
        .map_err(|e| e.to_string())?;
    drop(lock);
    Ok(report)
}
