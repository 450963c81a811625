//! `cairn-drill`: the weekly restore test — prove that the backups restore.
//!
//! Design: the drill restores the latest snapshot (or `--snapshot`, or a random sample of
//! its files) from the copy that must survive the server — the bucket when `[remote]`
//! exists — into a cleaned scratch directory with the ordinary restore code, and then
//! verifies what landed *independently of that code*: it walks the snapshot's trees again
//! and, for every selected entry, checks the restored file's type, size, mode, owner
//! (when it could restore owners), modification time, symlink target and extended
//! attributes, and reads every regular file back to compare its BLAKE3 hash with the
//! whole-file hash the snapshot recorded at backup time. So a fault anywhere — a flipped
//! byte in a pack, a missing pack, a bug in restore — is a mismatch (exit 4), and a drill
//! that could not run at all (no snapshot, bucket unreachable) is exit 3: the two mean
//! different things to an operator. With `compare_live`, files that look unchanged on the
//! host since the snapshot (same size and mtime) are also compared with the live file,
//! which catches silent corruption on either side. The scratch data is removed whatever
//! happens; the figures (files, bytes, seconds, throughput: the measured time to restore)
//! go to the status file and the D-Bus signal, and a failed drill's mail says first that
//! the backups are untrusted.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, DrillSource, Sample};
use crate::repo::{RepoError, Repository};
use crate::restore::{Overwrite, RestoreEvents, RestoreOptions};
use crate::stage::{msg, Dirs, Exit, Outcome, Priority, Run};
use crate::tree::{Kind, Node};
use crate::walk::{self, Selection, Visitor};

/// Command-line arguments of `cairn-drill`.
pub struct DrillArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`: say what would be restored and verified; restore nothing.
    pub dry_run: bool,
    /// `--snapshot`: this one instead of the latest.
    pub snapshot: Option<String>,
}

/// How many mismatches are listed in full (all are counted).
const LISTED: usize = 50;

/// What a drill found.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    /// The snapshot drilled.
    pub snapshot: String,
    /// `local` or `remote`.
    pub source: &'static str,
    /// The share of files restored (1 for all).
    pub sample: f64,
    /// Files in the snapshot (regular files).
    pub files_in_snapshot: u64,
    /// Entries verified (files, directories, links, special files).
    pub entries: u64,
    /// Regular files restored and verified.
    pub files: u64,
    /// Bytes of file content restored and verified.
    pub bytes: u64,
    /// Seconds of the restore itself.
    pub restore_seconds: f64,
    /// Seconds of the whole drill (restore and verification).
    pub seconds: f64,
    /// Bytes per second of the restore: the measured time to restore.
    pub throughput: f64,
    /// Whether owners were restored and so verified (as root, or with CAP_CHOWN).
    pub owners_verified: bool,
    /// Live files compared (`compare_live`).
    pub live_compared: u64,
    /// Everything that did not verify: the count.
    pub mismatches: u64,
    /// …and the first ones, each `PATH: what`.
    pub mismatch_list: Vec<String>,
}

/// Run `cairn-drill`; returns the exit code.
pub fn run(args: &DrillArgs) -> i32 {
    let stage = match Run::start("drill", args.dry_run) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return finish(stage, None, Err((Exit::Usage, e.to_string())), args),
    };
    let mut fig = Figures::default();
    let r = drill(&cfg, &stage, args, &mut fig);
    finish(stage, Some((&cfg, fig)), r, args)
}

type Failure = (Exit, String);

fn finish(
    stage: Run,
    ctx: Option<(&Config, Figures)>,
    r: Result<(), Failure>,
    args: &DrillArgs,
) -> i32 {
    let (cfg, fig) = match ctx {
        Some((c, f)) => (Some(c), f),
        None => (None, Figures::default()),
    };
    let host = crate::util::hostname();
    let summary = format!(
        "snapshot {} from the {} copy: {} files ({}) restored in {:.1} s ({}/s){}",
        &fig.snapshot[..fig.snapshot.len().min(12)],
        fig.source,
        fig.files,
        crate::util::human_bytes(fig.bytes),
        fig.restore_seconds,
        crate::util::human_bytes(fig.throughput as u64),
        if fig.sample < 1.0 {
            format!(
                ", a {:.2}% sample of {}",
                fig.sample * 100.0,
                fig.files_in_snapshot
            )
        } else {
            String::new()
        }
    );
    let mut outcome = match &r {
        Ok(()) if fig.mismatches == 0 => {
            if !args.dry_run {
                stage.event(
                    &msg::DRILL_PASSED,
                    Priority::Notice,
                    &format!("drill passed: {summary}"),
                    &[("CAIRN_SNAPSHOT", &fig.snapshot)],
                );
            }
            Outcome::success(format!("drill passed: {summary}"))
        }
        Ok(()) => {
            let first = fig.mismatch_list.first().cloned().unwrap_or_default();
            stage.event(
                &msg::DRILL_MISMATCH,
                Priority::Err,
                &format!(
                    "drill FAILED: {} of the restored entries did not verify; first: {first}",
                    fig.mismatches
                ),
                &[("CAIRN_SNAPSHOT", &fig.snapshot)],
            );
            Outcome::failure(
                Exit::Mismatch,
                "the backups are untrusted",
                format!(
                    "{} restored entries did not verify against snapshot {}; first: {first}",
                    fig.mismatches,
                    &fig.snapshot[..fig.snapshot.len().min(12)]
                ),
            )
        }
        Err((exit, m)) => Outcome::failure(*exit, "the drill could not run", m.clone()),
    };
    // The mail: a failed drill says first that the backups are untrusted.
    if let (Some(cfg), false) = (cfg, args.dry_run) {
        if let (Some(a), Some(mail)) = (&cfg.alert, alert_for(&r, &fig, &host, &stage)) {
            if crate::alert::send(a, &mail).is_err() && outcome.exit == Exit::Success {
                outcome = Outcome::failure(
                    Exit::Undelivered,
                    outcome.summary.clone(),
                    "the drill passed, but its report could not be mailed (see ALERT_UNDELIVERED)",
                );
            }
        }
    }
    let figures = serde_json::to_value(&fig).unwrap_or_default();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "result": outcome.result().as_str(),
                "exit_code": outcome.exit.code(),
                "summary": outcome.summary,
                "error": outcome.error,
                "dry_run": args.dry_run,
                "figures": figures,
            }))
            .unwrap_or_default()
        );
    }
    stage.finish(outcome.with_figures(json!({ "figures": figures })))
}

/// The mail for a drill that did not pass (a pass is not mailed).
fn alert_for(
    r: &Result<(), Failure>,
    fig: &Figures,
    host: &str,
    stage: &Run,
) -> Option<crate::alert::Alert> {
    let run_id = stage.stage().map(|s| s.run_id().to_string());
    match r {
        Ok(()) if fig.mismatches == 0 => None,
        Ok(()) => Some(crate::alert::Alert {
            stage: "drill".into(),
            verdict: "UNTRUSTED".into(),
            headline: "the restore drill failed: the backups are untrusted".into(),
            body: format!(
                "THE BACKUPS OF {host} ARE UNTRUSTED: the weekly restore drill restored \
                 snapshot {} from the {} copy, and {} entries did not come back as they were \
                 backed up.\n\nUntil this is explained, assume a restore would lose data: run \
                 `cairn check --read-data` (and `cairn --remote check --read-data` for the \
                 bucket), and take a fresh backup once the cause is fixed.\n\nWhat did not \
                 verify:\n{}\n",
                fig.snapshot,
                fig.source,
                fig.mismatches,
                fig.mismatch_list
                    .iter()
                    .map(|m| format!("  {m}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            run_id,
        }),
        Err((Exit::Usage, _)) => None,
        Err((_, m)) => Some(crate::alert::Alert {
            stage: "drill".into(),
            verdict: "FAILED".into(),
            headline: "the restore drill could not run".into(),
            body: format!(
                "The weekly restore drill on {host} could not run, so this week the backups \
                 were not proved to restore.\n\n{m}\n"
            ),
            run_id,
        }),
    }
}

fn open_repo(cfg: &Config, source: DrillSource) -> Result<Repository, Failure> {
    let r = cfg.repository().map_err(|e| (Exit::Usage, e.to_string()))?;
    let sources = crate::keys::sources(r).map_err(|e| (Exit::Failed, e))?;
    if sources.is_empty() {
        return Err((
            Exit::Usage,
            "no key configured in [repository] (key_file, key_credential, passphrase…): \
             the drill must decrypt what it restores"
                .into(),
        ));
    }
    let opened = match source {
        DrillSource::Local => Repository::open(&r.path, &sources),
        DrillSource::Remote => {
            let remote = cfg.remote().map_err(|e| (Exit::Usage, e.to_string()))?;
            let s3 = crate::upload::connect(remote).map_err(|m| (Exit::Failed, m))?;
            Repository::open_backend(
                std::sync::Arc::new(crate::backend::s3::S3Backend::new(s3)),
                &sources,
            )
        }
    };
    opened.map_err(|e| match e {
        RepoError::WrongKey(_) => (Exit::Usage, e.to_string()),
        e => (Exit::Failed, e.to_string()),
    })
}

fn drill(cfg: &Config, stage: &Run, args: &DrillArgs, fig: &mut Figures) -> Result<(), Failure> {
    let dcfg = cfg.drill.clone().unwrap_or(crate::config::DrillConfig {
        source: None,
        scratch: None,
        sample: Sample::All,
        compare_live: false,
        max_age: None,
    });
    let source = cfg.drill_source();
    fig.source = match source {
        DrillSource::Local => "local",
        DrillSource::Remote => "remote",
    };
    fig.sample = dcfg.sample.fraction();
    let started = Instant::now();
    stage.status(&format!("opening the {} copy", fig.source));
    let repo = open_repo(cfg, source)?;
    let spec = args.snapshot.as_deref().unwrap_or("latest");
    let (id, snap) = repo.resolve_snapshot(spec).map_err(|e| {
        (
            Exit::Failed,
            format!("no snapshot to drill in {}: {e}", repo.location()),
        )
    })?;
    fig.snapshot = id.clone();
    let root = walk::root_id(&snap.tree).map_err(|e| (Exit::Failed, e.to_string()))?;
    stage.ready();

    // What to restore: everything, or a random sample of the regular files.
    let mut lister = Lister::default();
    walk::walk(&repo, &root, &Selection::all(), &mut lister)
        .map_err(|e| (Exit::Failed, format!("cannot read snapshot {id}: {e}")))?;
    fig.files_in_snapshot = lister.files.len() as u64;
    let sel = match dcfg.sample {
        Sample::All => Selection::all(),
        Sample::Percent { .. } => Selection::only(sample(&lister.files, dcfg.sample.fraction())),
    };
    // Trees that could not even be read are mismatches: their contents cannot restore.
    for e in lister.tree_errors {
        mismatch(fig, e);
    }

    let scratch = dcfg
        .scratch
        .clone()
        .unwrap_or_else(|| Dirs::from_env().cache.join("drill"));
    if args.dry_run {
        stage.info(&format!(
            "would restore snapshot {} ({} of {} files) from {} into {} and verify it",
            &id[..12],
            match dcfg.sample {
                Sample::All => "all".to_string(),
                s => format!("{:.2}%", s.fraction() * 100.0),
            },
            fig.files_in_snapshot,
            repo.location(),
            scratch.display()
        ));
        return Ok(());
    }
    clean(&scratch).map_err(|e| (Exit::Failed, e))?;
    let result = restore_and_verify(&repo, &root, &sel, &scratch, &dcfg, stage, fig, started);
    // The scratch data goes whatever happened.
    if let Err(e) = clean(&scratch) {
        stage.warn(&format!("cannot empty the scratch directory: {e}"));
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn restore_and_verify(
    repo: &Repository,
    root: &[u8; 32],
    sel: &Selection,
    scratch: &Path,
    dcfg: &crate::config::DrillConfig,
    stage: &Run,
    fig: &mut Figures,
    started: Instant,
) -> Result<(), Failure> {
    let owners = can_restore_owners();
    fig.owners_verified = owners;
    stage.status(&format!("restoring into {}", scratch.display()));
    let events = Events {
        failed: Mutex::new(Vec::new()),
        progress: stage.progress("restoring"),
    };
    let t = Instant::now();
    let stats = crate::restore::restore(
        repo,
        root,
        scratch,
        sel,
        &RestoreOptions {
            overwrite: Overwrite::Never,
            dry_run: false,
            owners,
        },
        &events,
    )
    .map_err(|e| (Exit::Failed, format!("the restore could not run: {e}")))?;
    events.progress.finish();
    fig.restore_seconds = t.elapsed().as_secs_f64();
    fig.bytes = stats.bytes;
    if fig.restore_seconds > 0.0 {
        fig.throughput = stats.bytes as f64 / fig.restore_seconds;
    }
    for (path, err) in events
        .failed
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        mismatch(fig, format!("{path}: did not restore: {err}"));
    }
    stage.status("verifying what was restored");
    let mut v = Verifier {
        scratch,
        owners,
        live: dcfg.compare_live,
        names: crate::fsmeta::Names::default(),
        fig,
    };
    walk::walk(repo, root, sel, &mut v)
        .map_err(|e| (Exit::Failed, format!("cannot read the snapshot again: {e}")))?;
    fig.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// Whether this process can give restored files their owners: root, or a process holding
/// CAP_CHOWN (cairn-drill.service runs as cairn with it, an ambient capability).
fn can_restore_owners() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    // CAP_CHOWN is capability 0: the lowest bit of the effective set.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|effective| effective & 1 != 0)
}

fn mismatch(fig: &mut Figures, what: String) {
    fig.mismatches += 1;
    if fig.mismatch_list.len() < LISTED {
        fig.mismatch_list.push(what);
    }
}

/// A random share of `files` (at least one when there are any), from a seed of the
/// system's randomness: every drill proves a different part.
fn sample(files: &[Vec<u8>], fraction: f64) -> HashSet<Vec<u8>> {
    let want =
        ((files.len() as f64 * fraction).ceil() as usize).clamp(files.len().min(1), files.len());
    let seed: [u8; 8] = crate::crypto::random_bytes();
    let mut x = u64::from_le_bytes(seed) | 1;
    let mut idx: Vec<usize> = (0..files.len()).collect();
    // Fisher–Yates with xorshift64*, far from the first `want` positions only.
    for i in 0..want.min(idx.len()) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let j = i + (r % (idx.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(want);
    idx.into_iter().map(|i| files[i].clone()).collect()
}

/// Empty `dir` (creating it, mode 0700): refuse a symlink, never follow one inside.
fn clean(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(format!(
                "the scratch directory {} is not a plain directory; refusing to empty it",
                dir.display()
            ))
        }
        Ok(_) => {}
        Err(_) => fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the scratch directory {}: {e}", dir.display()))?,
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        let r = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        };
        r.map_err(|e| format!("cannot empty {}: {e}", p.display()))?;
    }
    Ok(())
}

#[derive(Default)]
struct Lister {
    files: Vec<Vec<u8>>,
    tree_errors: Vec<String>,
}

impl Visitor for Lister {
    fn enter_dir(&mut self, _: &[u8], _: &Node) -> Result<(), RepoError> {
        Ok(())
    }
    fn leave_dir(&mut self, _: &[u8], _: &Node) -> Result<(), RepoError> {
        Ok(())
    }
    fn entry(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        if matches!(node.kind, Kind::File(_)) {
            self.files.push(path.to_vec());
        }
        Ok(())
    }
    fn tree_error(&mut self, path: &[u8], error: &RepoError) -> Result<(), RepoError> {
        self.tree_errors.push(format!(
            "{}: the directory's tree cannot be read: {error}",
            crate::util::show(path)
        ));
        Ok(())
    }
}

struct Events {
    failed: Mutex<Vec<(String, String)>>,
    progress: crate::stage::Progress,
}

impl RestoreEvents for Events {
    fn failed(&self, path: &str, error: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path.to_string(), error.to_string()));
    }
    fn progress(&self, bytes: u64) {
        self.progress.inc(bytes);
    }
}

/// Walks the snapshot again and checks each selected entry against what was restored.
struct Verifier<'a> {
    scratch: &'a Path,
    owners: bool,
    live: bool,
    names: crate::fsmeta::Names,
    fig: &'a mut Figures,
}

impl Verifier<'_> {
    fn restored_path(&self, path: &[u8]) -> PathBuf {
        let rel = path.strip_prefix(b"/").unwrap_or(path);
        self.scratch.join(crate::util::os(rel))
    }

    fn check(&mut self, path: &[u8], node: &Node) {
        self.fig.entries += 1;
        let shown = crate::util::show(path);
        let p = self.restored_path(path);
        let problems = self.compare(&p, node);
        for what in problems {
            mismatch(self.fig, format!("{shown}: {what}"));
        }
        if self.live {
            if let Kind::File(c) = &node.kind {
                self.compare_live(path, node, c.size, &c.hash);
            }
        }
    }

    /// What differs between the restored entry at `p` and `node`.
    fn compare(&mut self, p: &Path, node: &Node) -> Vec<String> {
        let mut out = Vec::new();
        let m = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(_) => return vec!["missing from the restore".to_string()],
        };
        let ft = m.file_type();
        let kind_ok = match &node.kind {
            Kind::File(_) => ft.is_file(),
            Kind::Dir { .. } => ft.is_dir(),
            Kind::Symlink { .. } => ft.is_symlink(),
            Kind::Fifo => ft.is_fifo(),
            Kind::CharDev { .. } => ft.is_char_device(),
            Kind::BlockDev { .. } => ft.is_block_device(),
        };
        if !kind_ok {
            return vec![format!(
                "restored as another kind of entry than '{}'",
                node.kind.letter()
            )];
        }
        if !ft.is_symlink() {
            if m.mode() & 0o7777 != node.mode & 0o7777 {
                out.push(format!(
                    "mode {:04o}, not {:04o}",
                    m.mode() & 0o7777,
                    node.mode & 0o7777
                ));
            }
            if (m.mtime(), m.mtime_nsec() as u32) != (node.mtime, node.mtime_nsec) {
                out.push("modification time differs".to_string());
            }
        }
        if self.owners {
            let uid = self.names.uid_for(&node.user, node.uid);
            let gid = self.names.gid_for(&node.group, node.gid);
            if (m.uid(), m.gid()) != (uid, gid) {
                out.push(format!("owner {}:{}, not {uid}:{gid}", m.uid(), m.gid()));
            }
        }
        match &node.kind {
            Kind::File(c) => {
                if m.len() != c.size {
                    out.push(format!("{} bytes, not {}", m.len(), c.size));
                } else {
                    match hash_file(p) {
                        Ok(h) => {
                            self.fig.files += 1;
                            if h != c.hash {
                                out.push("content differs from what was backed up".to_string());
                            }
                        }
                        Err(e) => out.push(format!("cannot read it back: {e}")),
                    }
                }
            }
            Kind::Symlink { target } => match fs::read_link(p) {
                Ok(t)
                    if std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())
                        == target.as_slice() => {}
                Ok(_) => out.push("symlink target differs".to_string()),
                Err(e) => out.push(format!("cannot read the symlink: {e}")),
            },
            _ => {}
        }
        if !ft.is_symlink() && !node.xattrs.is_empty() {
            match xattrs_of(p) {
                Ok(x) if x == node.xattrs => {}
                Ok(_) => out.push("extended attributes (ACLs) differ".to_string()),
                Err(e) => out.push(format!("cannot read its extended attributes: {e}")),
            }
        }
        out
    }

    /// A live file that looks unchanged since the snapshot must have the same content.
    fn compare_live(&mut self, path: &[u8], node: &Node, size: u64, hash: &[u8; 32]) {
        let live = Path::new(crate::util::os(path));
        let Ok(m) = fs::symlink_metadata(live) else {
            return;
        };
        if !m.is_file()
            || m.len() != size
            || (m.mtime(), m.mtime_nsec() as u32) != (node.mtime, node.mtime_nsec)
        {
            return; // changed (or gone) since the snapshot: nothing to compare
        }
        self.fig.live_compared += 1;
        match hash_file(live) {
            Ok(h) if &h == hash => {}
            Ok(_) => mismatch(
                self.fig,
                format!(
                    "{}: the live file has the snapshot's size and time but other content \
                     (silent corruption on this host, or in the backup)",
                    crate::util::show(path)
                ),
            ),
            Err(_) => {} // unreadable live file: not the backup's fault
        }
    }
}

impl Visitor for Verifier<'_> {
    fn enter_dir(&mut self, _: &[u8], _: &Node) -> Result<(), RepoError> {
        Ok(())
    }
    fn leave_dir(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        // After its contents, as restore sets a directory's metadata last.
        self.check(path, node);
        Ok(())
    }
    fn entry(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        self.check(path, node);
        Ok(())
    }
    fn tree_error(&mut self, path: &[u8], error: &RepoError) -> Result<(), RepoError> {
        mismatch(
            self.fig,
            format!(
                "{}: its tree cannot be read: {error}",
                crate::util::show(path)
            ),
        );
        Ok(())
    }
}

/// BLAKE3 of a file's bytes (holes read as zeros, as the snapshot hashed them).
fn hash_file(p: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = fs::File::open(p)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(*h.finalize().as_bytes())
}

fn xattrs_of(p: &Path) -> Result<crate::fsmeta::Xattrs, String> {
    use std::os::fd::AsFd;
    let f = fs::File::open(p).map_err(|e| e.to_string())?;
    crate::fsmeta::fd_xattrs(f.as_fd()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_the_right_size_and_differ_between_runs() {
        let files: Vec<Vec<u8>> = (0..1000).map(|i| format!("/f{i}").into_bytes()).collect();
        let a = sample(&files, 0.1);
        let b = sample(&files, 0.1);
        assert_eq!(a.len(), 100);
        assert_eq!(b.len(), 100);
        assert_ne!(a, b, "a different part each run");
        assert!(a.iter().all(|p| files.contains(p)));
        assert_eq!(sample(&files[..3], 0.01).len(), 1, "at least one file");
        assert!(sample(&[], 0.5).is_empty());
    }

    #[test]
    fn cleaning_refuses_a_symlink_and_empties_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("scratch");
        fs::create_dir_all(s.join("a/b")).unwrap();
        fs::write(s.join("a/b/f"), "x").unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, s.join("link")).unwrap();
        clean(&s).unwrap();
        assert_eq!(fs::read_dir(&s).unwrap().count(), 0);
        assert!(
            outside.join("keep").exists(),
            "a symlink inside is removed, not followed"
        );
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&outside, &l).unwrap();
        assert!(clean(&l).unwrap_err().contains("not a plain directory"));
    }
}
