//! `cairn-preflight`: before every snapshot, prove that the backup goes to the right disk,
//! mounted, writable, with room — or refuse loudly.
//!
//! Design: preflight assumes nothing works. Logging (and a panic hook that logs) is set up
//! before anything else can fail; then the checks run in a fixed order, each recorded as a
//! [`Check`] (`ok`, `repaired`, `would` in a dry run, `warning`, `failed`), so the journal,
//! the status file, `--json` and the alert mail all tell the same story:
//!
//! 1. the mount point is a mount point per the kernel's mount table (an empty directory on
//!    the root filesystem is not the backup disk) and the filesystem behind it has the
//!    configured UUID / LABEL / type, read from the device by libblkid;
//! 2. not mounted and `auto_mount`: the disk is mounted — through its `.mount` unit when
//!    systemd runs and knows one, else the device found by UUID, then LABEL (as root)
//!    through a transient mount unit (systemd mounts it outside our sandbox's private
//!    mount namespace) or, without systemd, by mount(2), else `sudo -n mount PATH` (the rule `cairn setup` installs) — and step 1
//!    is checked again;
//! 3. `ensure_fstab`: an `/etc/fstab` line for the disk, added safely ([`crate::fstab`]),
//!    then systemd reloaded. Failing to add it is a warning, not a reason to skip a backup
//!    to a disk that is mounted and right;
//! 4. a probe file is created, fsynced and removed where the repository lives; the owner
//!    is checked (changed only with `fix_owner`);
//! 5. free space ≥ `min_free`; the repository exists and is not exclusively locked;
//! 6. staleness: the last successful snapshot (status files) is younger than `max_age`,
//!    else a STALE alert — even when everything else passes.
//!
//! A wrong disk is never written to: every check that writes (probe, owner fix) runs only
//! once the identity check passed. Any fatal failure mails `[alert] mail_to` through the
//! local MTA with what failed and what to do, and exits 2. A dry run says what it would
//! mount or append and does neither; it writes no status file and mails nobody.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::alert::{self, Alert};
use crate::config::{AlertConfig, Config, Owner, PreflightConfig};
use crate::fstab::{self, FstabChange};
use crate::mount::{self, Expected, Identity, MountEntry};
use crate::stage::{msg, Dirs, Exit, Outcome, Priority, Run};
use crate::util::human_bytes;

/// How long a mount unit may take to start.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(90);

/// Command-line arguments of `cairn-preflight`.
pub struct PreflightArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`.
    pub dry_run: bool,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine as found.
    Ok,
    /// Fixed by preflight (mounted, fstab line added, owner changed).
    Repaired,
    /// Dry run: would be fixed like this.
    Would,
    /// Not checked: nothing is configured for it, or (dry run) the disk is not mounted.
    /// Checks after a fatal one are not run and not listed.
    Skipped,
    /// Wrong, but the backup can go ahead.
    Warning,
    /// Wrong: no backup.
    Failed,
}

/// One check and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name: `mount`, `identity`, `fstab`, `writable`, `owner`, `space`,
    /// `repository`, `staleness`.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found or done, one line.
    pub detail: String,
}

/// A fatal problem: the exit code, what failed and what to do.
#[derive(Debug, Clone)]
struct Fatal {
    exit: Exit,
    check: &'static str,
    what: String,
    todo: String,
}

impl Fatal {
    fn env(check: &'static str, what: impl Into<String>, todo: impl Into<String>) -> Fatal {
        Fatal {
            exit: Exit::Environment,
            check,
            what: what.into(),
            todo: todo.into(),
        }
    }
}

/// Everything one run found.
struct Report<'a> {
    /// Where lines are logged; `None`: not logged (setup prints the checks itself).
    run: Option<&'a Run>,
    checks: Vec<Check>,
    /// Warnings that go into a WARNING mail when nothing is fatal.
    warnings: Vec<String>,
    /// Print "would …" lines of a dry run on stdout.
    print_would: bool,
}

impl Report<'_> {
    fn record(&mut self, name: &'static str, verdict: Verdict, detail: impl Into<String>) {
        let detail = detail.into();
        let line = format!("{name}: {detail}");
        match verdict {
            Verdict::Failed => self.error(&line),
            Verdict::Warning => {
                self.warn(&line);
                self.warnings.push(detail.clone());
            }
            Verdict::Repaired => {
                if let Some(run) = self.run {
                    run.event(
                        &msg::MOUNT_REPAIRED,
                        Priority::Notice,
                        &line,
                        &[("CAIRN_CHECK", name)],
                    );
                }
            }
            Verdict::Would => {
                self.info(&format!("dry run: would {detail}"));
                if self.print_would {
                    println!("would {detail}");
                }
            }
            Verdict::Ok | Verdict::Skipped => self.info(&line),
        }
        self.checks.push(Check {
            name,
            verdict,
            detail,
        });
    }

    /// A fatal problem: journal `MOUNT_UNFIT` with the check's name and what to do.
    fn fail(&mut self, f: &Fatal) {
        if let Some(run) = self.run {
            run.event(
                &msg::MOUNT_UNFIT,
                Priority::Err,
                &format!("{}: {}; what to do: {}", f.check, f.what, f.todo),
                &[("CAIRN_CHECK", f.check)],
            );
        }
        self.checks.push(Check {
            name: f.check,
            verdict: Verdict::Failed,
            detail: f.what.clone(),
        });
    }

    fn info(&self, m: &str) {
        if let Some(run) = self.run {
            run.info(m);
        }
    }

    fn warn(&self, m: &str) {
        if let Some(run) = self.run {
            run.warn(m);
        }
    }

    fn error(&self, m: &str) {
        if let Some(run) = self.run {
            run.error(m);
        }
    }
}

/// For `cairn setup`: mount the backup disk if it is not mounted (checking its identity
/// as preflight does) and make sure `/etc/fstab` has its line — whatever `auto_mount` and
/// `ensure_fstab` say, since this is what preflight's self-healing relies on. Returns the
/// checks (nothing is logged); `Err` is a fatal problem as "what; what to do".
pub fn setup_disk(pf: &PreflightConfig, dry_run: bool) -> (Vec<Check>, Result<(), String>) {
    let mut report = Report {
        run: None,
        checks: Vec::new(),
        warnings: Vec::new(),
        print_would: false,
    };
    let pf = PreflightConfig {
        auto_mount: true,
        ..pf.clone()
    };
    let result = mount_and_identify(&pf, &mut report, dry_run).map(|found| {
        let known = found.map(|(entry, id)| Identity {
            fs_type: id.fs_type.clone().or(Some(entry.fs_type)),
            ..id
        });
        fstab_step(&pf, known, &mut report, dry_run);
    });
    let result = result.map_err(|f| {
        report.fail(&f);
        format!("{}; {}", f.what, f.todo)
    });
    (report.checks, result)
}

/// Run `cairn-preflight`; returns the exit code.
pub fn run(args: &PreflightArgs) -> i32 {
    crate::stage::install_panic_logging();
    let run = match Run::start("preflight", args.dry_run) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return finish_usage(run, e.to_string(), args.json, None),
    };
    let Some(pf) = cfg.preflight.clone() else {
        // No backup disk configured (the repository lives on a filesystem that is always
        // there): nothing to check, and the units that require preflight still run.
        let detail = "no [preflight] section: no backup disk is checked";
        run.warn(detail);
        let checks = json!([{"name": "disk", "verdict": "skipped", "detail": detail}]);
        let figures = json!({"checks": checks, "stale": null, "mail": "none"});
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "result": "success", "exit_code": 0, "summary": detail,
                    "error": null, "dry_run": args.dry_run, "checks": checks,
                    "stale": null, "mail": "none",
                }))
                .unwrap_or_default()
            );
        }
        return run.finish(Outcome::success(detail.to_string()).with_figures(figures));
    };
    let repo_path = cfg.repository.as_ref().map(|r| r.path.clone());
    if let Some(r) = &repo_path {
        if !r.starts_with(&pf.mount) {
            let e = format!(
                "[repository] path {} is not on the backup disk: it must be below [preflight] \
                 mount {}",
                r.display(),
                pf.mount.display()
            );
            return finish_usage(run, e, args.json, cfg.alert.as_ref());
        }
    }
    if cfg.alert.is_none() {
        run.warn("no [alert] section: failures reach only the journal and the status file");
    }
    run.ready();
    run.status(&format!("checking the backup disk {}", pf.mount.display()));

    let mut report = Report {
        run: Some(&run),
        checks: Vec::new(),
        warnings: Vec::new(),
        print_would: !args.json,
    };
    let checked = check_disk(&pf, repo_path.as_deref(), &mut report, args.dry_run);
    if let Err(f) = &checked {
        report.fail(f);
    }
    let dirs = Dirs::from_env();
    let stale = check_staleness(&pf, &dirs, &run, &mut report);

    // Mail: the failure, else staleness, else warnings.
    let host = crate::util::hostname();
    let run_id = run.stage().map(|s| s.run_id().to_string());
    let mut mails = Vec::new();
    if let Err(f) = &checked {
        mails.push(failure_alert(
            &pf,
            f,
            &report.checks,
            &host,
            run_id.clone(),
            args,
        ));
    }
    if let Some(text) = &stale {
        mails.push(stale_alert(text, &report.checks, &host, run_id.clone()));
    }
    if checked.is_ok() && !report.warnings.is_empty() {
        mails.push(warning_alert(&pf, &report.warnings, &report.checks, run_id));
    }
    let mut undelivered = false;
    let mut mail_state = "none";
    if !mails.is_empty() {
        match (&cfg.alert, args.dry_run) {
            (_, true) => {
                for m in &mails {
                    run.info(&format!("dry run: would mail: {}", m.subject(&host)));
                }
            }
            (Some(acfg), false) => {
                mail_state = "sent";
                for m in &mails {
                    if deliver(acfg, m).is_err() {
                        undelivered = true;
                        mail_state = "failed";
                    }
                }
            }
            (None, false) => {
                run.warn("nobody was mailed: add an [alert] section with mail_to to be told");
                mail_state = "not configured";
            }
        }
    }

    let checks = std::mem::take(&mut report.checks);
    let figures = json!({"checks": checks, "stale": stale, "mail": mail_state});
    let outcome = match &checked {
        Err(f) => Outcome::failure(
            f.exit,
            "backup disk not fit",
            format!("{}; {}", f.what, f.todo),
        ),
        Ok(summary) if undelivered => Outcome::failure(
            Exit::Undelivered,
            summary.clone(),
            "an alert could not be delivered (see ALERT_UNDELIVERED)",
        ),
        Ok(summary) => Outcome::success(summary.clone()),
    }
    .with_figures(figures.clone());
    if args.json {
        let mut v = figures;
        v["result"] = json!(outcome.result().as_str());
        v["exit_code"] = json!(outcome.exit.code());
        v["summary"] = json!(outcome.summary);
        v["error"] = json!(outcome.error);
        v["dry_run"] = json!(args.dry_run);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if let Err(f) = &checked {
        eprintln!("cairn-preflight: {}\n  what to do: {}", f.what, f.todo);
    }
    run.finish(outcome)
}

/// End with a configuration error (exit 1), mailed when `[alert]` could be read.
fn finish_usage(run: Run, error: String, json: bool, alert: Option<&AlertConfig>) -> i32 {
    if let (Some(cfg), false) = (alert, run.is_dry_run()) {
        let host = crate::util::hostname();
        let _ = deliver(
            cfg,
            &Alert {
                stage: "preflight".into(),
                verdict: "FAILED".into(),
                headline: "configuration error".into(),
                body: format!(
                    "cairn-preflight on {host} cannot check the backup disk: its \
                     configuration is wrong, so no backup runs until it is fixed.\n\n{error}\n"
                ),
                run_id: run.stage().map(|s| s.run_id().to_string()),
            },
        );
    }
    if json {
        println!(
            "{}",
            json!({"result": "failure", "exit_code": Exit::Usage.code(), "error": error})
        );
    } else {
        eprintln!("cairn-preflight: {error}");
    }
    run.finish(Outcome::failure(Exit::Usage, "configuration error", error))
}

fn deliver(cfg: &AlertConfig, alert: &Alert) -> Result<(), alert::AlertError> {
    alert::send(cfg, alert)
}

/// Steps 1 and 2: the disk mounted and identified. `Ok(None)`: a dry run of a disk that
/// is not mounted (it would be mounted).
fn mount_and_identify(
    pf: &PreflightConfig,
    report: &mut Report<'_>,
    dry_run: bool,
) -> Result<Option<(MountEntry, Identity)>, Fatal> {
    let expected = Expected {
        uuid: pf.uuid.clone(),
        label: pf.label.clone(),
        fs_type: pf.fs_type.clone(),
    };
    let table = mount::mount_table().map_err(|e| {
        Fatal::env(
            "mount",
            format!("cannot read the mount table /proc/self/mountinfo: {e}"),
            "run cairn-preflight where /proc is mounted",
        )
    })?;
    if let Some(entry) = mount::mount_at(&table, &pf.mount) {
        let entry = entry.clone();
        report.record(
            "mount",
            Verdict::Ok,
            format!(
                "{} is a mount point ({} {}{})",
                pf.mount.display(),
                entry.source,
                entry.fs_type,
                if entry.read_only() { ", read-only" } else { "" }
            ),
        );
        let id = identify(pf, &entry, &expected, report)?;
        return Ok(Some((entry, id)));
    }
    let why = not_mounted_detail(&table, &pf.mount);
    if !pf.auto_mount {
        return Err(Fatal::env(
            "mount",
            format!("the backup disk is not mounted: {why}"),
            format!(
                "mount it (`mount {}`), or set auto_mount = yes in [preflight]",
                pf.mount.display()
            ),
        ));
    }
    report.info(&format!(
        "the backup disk is not mounted: {why}; mounting it"
    ));
    auto_mount(pf, &expected, report, dry_run)
}

/// Steps 1 to 5; `Ok` is the one-line summary.
fn check_disk(
    pf: &PreflightConfig,
    repo: Option<&Path>,
    report: &mut Report<'_>,
    dry_run: bool,
) -> Result<String, Fatal> {
    let found = match mount_and_identify(pf, report, dry_run) {
        Ok(found) => found,
        Err(f) => {
            // Not mounted (or not mountable): the fstab line can still be put right, so
            // the disk mounts at the next boot or `mount PATH`. Never for an impostor.
            if pf.ensure_fstab && f.check == "mount" {
                fstab_step(pf, None, report, dry_run);
            }
            return Err(f);
        }
    };
    let Some((entry, identity)) = found else {
        // Dry run: nothing more can be checked on a disk that is not mounted.
        if pf.ensure_fstab {
            fstab_step(pf, None, report, true);
        }
        for name in ["writable", "owner", "space", "repository"] {
            report.record(name, Verdict::Skipped, "the disk is not mounted (dry run)");
        }
        return Ok(format!("{} would be mounted", pf.mount.display()));
    };

    // 3. fstab.
    if pf.ensure_fstab {
        let known = Identity {
            fs_type: identity.fs_type.clone().or(Some(entry.fs_type.clone())),
            ..identity.clone()
        };
        fstab_step(pf, Some(known), report, dry_run);
    }

    // A missing repository is said as such, not as a wrong owner of the disk's root.
    if let Some(r) = repo {
        if !r.join("config").is_file() {
            return Err(no_repository(r));
        }
    }

    // 4. writability and owner.
    let target = repo
        .filter(|r| r.is_dir())
        .unwrap_or(&pf.mount)
        .to_path_buf();
    if entry.read_only() {
        return Err(Fatal::env(
            "writable",
            format!("{} is mounted read-only", pf.mount.display()),
            format!(
                "check the disk for errors (dmesg, fsck), then remount it read-write \
                 (`mount -o remount,rw {}`)",
                pf.mount.display()
            ),
        ));
    }
    probe_write(&target).map_err(|e| {
        let ro = e.raw_os_error() == Some(libc::EROFS);
        Fatal::env(
            "writable",
            format!("cannot write to {}: {e}", target.display()),
            if ro {
                "check the disk for errors (dmesg, fsck), then remount it read-write".to_string()
            } else {
                "check the disk (dmesg), its free space and permissions".to_string()
            },
        )
    })?;
    report.record(
        "writable",
        Verdict::Ok,
        format!(
            "created, synced and removed a probe file in {}",
            target.display()
        ),
    );
    if let Some(owner) = &pf.owner {
        check_owner(owner, &target, pf.fix_owner, report, dry_run)?;
    } else {
        report.record("owner", Verdict::Skipped, "no owner configured");
    }

    // 5. space and repository.
    let (avail, total) = free_space(&pf.mount).map_err(|e| {
        Fatal::env(
            "space",
            format!("cannot read the free space of {}: {e}", pf.mount.display()),
            "check the disk (dmesg)",
        )
    })?;
    let space = format!("{} free of {}", human_bytes(avail), human_bytes(total));
    match pf.min_free {
        Some(min) if avail < min.required(total) => {
            return Err(Fatal::env(
                "space",
                format!(
                    "only {space} on {}, below min_free = {min} ({} needed)",
                    pf.mount.display(),
                    human_bytes(min.required(total))
                ),
                "free space (`cairn forget`, then `cairn prune`), or move to a bigger disk",
            ))
        }
        Some(min) => report.record("space", Verdict::Ok, format!("{space} (min_free {min})")),
        None => report.record("space", Verdict::Ok, space.clone()),
    }
    match repo {
        Some(r) => check_repository(r, report)?,
        None => report.record("repository", Verdict::Skipped, "no [repository] section"),
    }
    Ok(format!(
        "backup disk {} ready ({}), {space}",
        pf.mount.display(),
        identity
    ))
}

/// Why `path` is not a mount point, for humans.
fn not_mounted_detail(table: &[MountEntry], path: &Path) -> String {
    if !path.exists() {
        return format!("{} does not exist", path.display());
    }
    match mount::mount_containing(table, path) {
        Some(m) => format!(
            "{} is a plain directory on the filesystem mounted at {} ({})",
            path.display(),
            m.mount_point.display(),
            m.source
        ),
        None => format!("{} is not a mount point", path.display()),
    }
}

/// Step 1's identity check of a mounted filesystem.
fn identify(
    pf: &PreflightConfig,
    entry: &MountEntry,
    expected: &Expected,
    report: &mut Report<'_>,
) -> Result<Identity, Fatal> {
    let id = mount::mounted_identity(entry).map_err(|e| {
        Fatal::env(
            "identity",
            format!(
                "cannot tell which disk is mounted on {}: {e}",
                pf.mount.display()
            ),
            "run cairn-preflight as root (its unit does), so it can read the device",
        )
    })?;
    let wrong = expected.mismatches(&id);
    if !wrong.is_empty() {
        return Err(Fatal::env(
            "identity",
            format!(
                "a different disk is mounted on {}: {} ({}); nothing was written to it",
                pf.mount.display(),
                wrong.join(", "),
                entry.source
            ),
            format!(
                "unmount it (`umount {}`) and connect the backup disk; if the backup disk \
                 was replaced on purpose, put its UUID/LABEL (`blkid {}`) in [preflight]",
                pf.mount.display(),
                entry.source
            ),
        ));
    }
    let detail = if expected.is_empty() {
        report.warn(
            "[preflight] names no uuid, label or fs_type: any filesystem mounted there is \
             taken for the backup disk",
        );
        format!("{id} (not checked: no uuid, label or fs_type configured)")
    } else {
        format!("{id} as configured")
    };
    report.record("identity", Verdict::Ok, detail);
    Ok(id)
}

/// Step 2: mount the disk. `Ok(None)`: dry run, not mounted.
fn auto_mount(
    pf: &PreflightConfig,
    expected: &Expected,
    report: &mut Report<'_>,
    dry_run: bool,
) -> Result<Option<(MountEntry, Identity)>, Fatal> {
    let path = pf.mount.display().to_string();
    let is_root = rustix::process::geteuid().is_root();
    let unit = crate::systemd::mount_unit_name(&pf.mount);
    // Under systemd, systemd mounts the disk: through its mount unit when one exists
    // (fstab line or unit file), else through a transient one. A mount(2) of our own
    // would stay inside this service's private mount namespace when it runs sandboxed.
    let systemd = if is_root && crate::systemd::is_running() {
        crate::systemd::Systemd::connect().ok()
    } else {
        None
    };
    let via_systemd = systemd.is_some();
    let unit_known = systemd
        .as_ref()
        .is_some_and(|s| s.unit_exists(&unit).unwrap_or(false));

    let how = if unit_known {
        format!("starting {unit}")
    } else if is_root {
        let Some(device) = mount::find_device(pf.uuid.as_deref(), pf.label.as_deref()) else {
            return Err(not_attached(pf));
        };
        let id = mount::probe(&device).map_err(|e| {
            Fatal::env(
                "identity",
                e.to_string(),
                "check the disk (dmesg); `blkid` shows what it holds",
            )
        })?;
        let wrong = expected.mismatches(&id);
        if !wrong.is_empty() {
            return Err(Fatal::env(
                "identity",
                format!(
                    "{} was found for the backup disk but does not match: {}; it was not \
                     mounted",
                    device.display(),
                    wrong.join(", ")
                ),
                "correct [preflight] uuid/label/fs_type, or connect the right disk",
            ));
        }
        let Some(fs_type) = id.fs_type.clone() else {
            return Err(Fatal::env(
                "identity",
                format!("blkid finds no filesystem type on {}", device.display()),
                "check the disk (`blkid -p DEVICE`, dmesg)",
            ));
        };
        let by = if via_systemd {
            format!("a transient {unit}")
        } else {
            "mount(2)".to_string()
        };
        if dry_run {
            report.record(
                "mount",
                Verdict::Would,
                format!(
                    "mount {} ({id}) on {path} by {by}, options {}",
                    device.display(),
                    pf.mount_options
                ),
            );
            return Ok(None);
        }
        if !pf.mount.exists() {
            fs::create_dir_all(&pf.mount).map_err(|e| {
                Fatal::env(
                    "mount",
                    format!("cannot create the mount point {path}: {e}"),
                    format!("create it: `mkdir -p {path}`"),
                )
            })?;
        }
        if let Some(sd) = &systemd {
            let state = sd
                .start_transient_mount(
                    &unit,
                    &device,
                    &pf.mount,
                    &fs_type,
                    &pf.mount_options,
                    MOUNT_TIMEOUT,
                )
                .map_err(|e| {
                    Fatal::env(
                        "mount",
                        format!("cannot mount {} on {path}: {e}", device.display()),
                        format!("see `journalctl -u {unit}`; check the disk (dmesg, fsck)"),
                    )
                })?;
            if !state.is_active() {
                return Err(Fatal::env(
                    "mount",
                    format!("the transient {unit} did not start: it is {state}"),
                    format!("see `journalctl -u {unit}`; check the disk (dmesg, fsck)"),
                ));
            }
        } else {
            mount::mount_device(&device, &pf.mount, &fs_type, &pf.mount_options).map_err(|e| {
                Fatal::env(
                    "mount",
                    e.to_string(),
                    "check the disk (dmesg, fsck) and mount it by hand to see why",
                )
            })?;
        }
        format!("{by} of {}", device.display())
    } else {
        format!("sudo -n mount {path}")
    };
    if dry_run {
        report.record("mount", Verdict::Would, format!("mount {path} ({how})"));
        return Ok(None);
    }
    if unit_known {
        let state = crate::systemd::Systemd::connect()
            .and_then(|s| s.start_unit(&unit, MOUNT_TIMEOUT))
            .map_err(|e| {
                Fatal::env(
                    "mount",
                    format!("cannot mount {path} through {unit}: {e}"),
                    format!("see `systemctl status {unit}` and `journalctl -u {unit}`"),
                )
            })?;
        if !state.is_active() {
            return Err(Fatal::env(
                "mount",
                format!("{unit} did not start: it is {state}"),
                format!("see `systemctl status {unit}`; is the disk connected (`blkid`)?"),
            ));
        }
    } else if !is_root {
        let out = Command::new("sudo")
            .args(["-n", "/usr/bin/mount"])
            .arg(&pf.mount)
            .output()
            .map_err(|e| {
                Fatal::env(
                    "mount",
                    format!("cannot run sudo to mount {path}: {e}"),
                    "install sudo and run `cairn setup`, which installs the mount rule",
                )
            })?;
        if !out.status.success() {
            return Err(Fatal::env(
                "mount",
                format!(
                    "`sudo -n mount {path}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "run `cairn setup` (it installs the sudoers rule and the fstab line), or \
                 run cairn-preflight as root",
            ));
        }
    }
    let table = mount::mount_table().unwrap_or_default();
    let Some(entry) = mount::mount_at(&table, &pf.mount).cloned() else {
        return Err(Fatal::env(
            "mount",
            format!("{how} reported success, but {path} is still not a mount point"),
            format!("mount it by hand (`mount {path}`) to see why"),
        ));
    };
    report.record(
        "mount",
        Verdict::Repaired,
        format!("mounted {} on {path} ({how})", entry.source),
    );
    match identify(pf, &entry, expected, report) {
        Ok(id) => Ok(Some((entry, id))),
        Err(f) => {
            // We mounted the wrong disk (an fstab line or unit that names another one):
            // take it away again, the way it came.
            let undone = if via_systemd {
                crate::systemd::Systemd::connect()
                    .and_then(|s| s.stop_unit(&unit, MOUNT_TIMEOUT))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if is_root {
                rustix::mount::unmount(&pf.mount, rustix::mount::UnmountFlags::empty())
                    .map_err(|e| e.to_string())
            } else {
                Command::new("sudo")
                    .args(["-n", "/usr/bin/umount"])
                    .arg(&pf.mount)
                    .status()
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.success() {
                            Ok(())
                        } else {
                            Err(s.to_string())
                        }
                    })
            };
            match undone {
                Ok(()) => report.info(&format!("unmounted the wrong disk from {path} again")),
                Err(e) => report.warn(&format!("cannot unmount the wrong disk from {path}: {e}")),
            }
            Err(f)
        }
    }
}

fn not_attached(pf: &PreflightConfig) -> Fatal {
    let wanted = match (&pf.uuid, &pf.label) {
        (Some(u), Some(l)) => format!("UUID={u} or LABEL={l}"),
        (Some(u), None) => format!("UUID={u}"),
        (None, Some(l)) => format!("LABEL={l}"),
        (None, None) => {
            return Fatal::env(
                "mount",
                format!(
                    "{} is not mounted and there is no uuid or label in [preflight] to find \
                     the disk by",
                    pf.mount.display()
                ),
                "add the disk's uuid (`blkid DEVICE`) to [preflight], or mount it by hand",
            )
        }
    };
    Fatal::env(
        "mount",
        format!(
            "the backup disk ({wanted}) is not attached to this machine, so {} cannot be \
             mounted",
            pf.mount.display()
        ),
        "connect the backup disk; `blkid` lists the filesystems this machine sees",
    )
}

/// Step 3: make sure `/etc/fstab` has the disk's line. `known`: the identity of the
/// mounted disk; `None` when it is not mounted, and then the UUID and type are read from
/// the device if it is attached. Problems are warnings: the line matters for the next
/// boot, not for this backup.
fn fstab_step(
    pf: &PreflightConfig,
    known: Option<Identity>,
    report: &mut Report<'_>,
    dry_run: bool,
) {
    let known = known.or_else(|| {
        mount::find_device(pf.uuid.as_deref(), pf.label.as_deref())
            .and_then(|d| mount::probe(&d).ok())
            // A device found by label but with another UUID is not the disk.
            .filter(|id| pf.uuid.is_none() || id.uuid == pf.uuid)
    });
    let Some(uuid) = pf
        .uuid
        .clone()
        .or_else(|| known.as_ref().and_then(|i| i.uuid.clone()))
    else {
        report.record(
            "fstab",
            Verdict::Warning,
            "the disk's UUID is not known (set uuid in [preflight]), so no fstab line can be written",
        );
        return;
    };
    let fs_type = known
        .and_then(|i| i.fs_type)
        .or_else(|| pf.fs_type.clone())
        .unwrap_or_else(|| "auto".to_string());
    let fstab_path = Path::new(fstab::FSTAB);
    match fstab::ensure(
        fstab_path,
        &uuid,
        &pf.mount,
        &fs_type,
        &pf.mount_options,
        dry_run,
    ) {
        Ok(FstabChange::Present(e)) => {
            let line = format!(
                "/etc/fstab line {} mounts {} on {}",
                e.line, e.spec, e.target
            );
            if fstab::names_other_disk(&e, &uuid, pf.label.as_deref()) {
                report.record(
                    "fstab",
                    Verdict::Warning,
                    format!("{line}, not UUID={uuid}: correct that line (see fstab(5))"),
                );
            } else {
                report.record("fstab", Verdict::Ok, line);
            }
        }
        Ok(FstabChange::WouldAppend(line)) => report.record(
            "fstab",
            Verdict::Would,
            format!("append to /etc/fstab: {line}"),
        ),
        Ok(FstabChange::Appended { line, backup }) => {
            report.record(
                "fstab",
                Verdict::Repaired,
                format!(
                    "added `{line}` to /etc/fstab (the original is saved as {})",
                    backup.display()
                ),
            );
            if crate::systemd::is_running() {
                let reloaded = crate::systemd::Systemd::connect().and_then(|s| s.reload());
                if let Err(e) = reloaded {
                    report.record(
                        "fstab",
                        Verdict::Warning,
                        format!(
                            "systemd was not reloaded after the fstab change: {e}; run \
                             `systemctl daemon-reload`"
                        ),
                    );
                }
            }
        }
        Err(e) => report.record(
            "fstab",
            Verdict::Warning,
            format!("{e}; fix /etc/fstab by hand (see fstab(5))"),
        ),
    }
}

/// Create, write, fsync and remove a small file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let name = format!(
        ".cairn-preflight-probe-{}-{}",
        std::process::id(),
        hex::encode(crate::crypto::random_bytes::<4>())
    );
    let path = dir.join(name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(&[0x5a; 4096])?;
        f.sync_all()
    })();
    let removed = fs::remove_file(&path);
    result?;
    removed?;
    crate::atomic::sync_dir(dir)
}

/// `(available to unprivileged users, total)` bytes of the filesystem holding `path`.
fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

fn resolve_owner(owner: &Owner) -> Result<(u32, Option<u32>), String> {
    let uid = match owner.user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(&owner.user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .ok_or_else(|| format!("there is no user `{}` on this machine", owner.user))?,
    };
    let gid = match &owner.group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| format!("there is no group `{g}` on this machine"))?,
        }),
    };
    Ok((uid, gid))
}

/// Step 4's owner check (and fix, with `fix_owner`).
fn check_owner(
    owner: &Owner,
    target: &Path,
    fix: bool,
    report: &mut Report<'_>,
    dry_run: bool,
) -> Result<(), Fatal> {
    let (uid, gid) = resolve_owner(owner).map_err(|e| {
        Fatal::env(
            "owner",
            format!("[preflight] owner = {owner}: {e}"),
            "create it (`cairn setup` creates the cairn user), or correct owner",
        )
    })?;
    let meta = fs::symlink_metadata(target).map_err(|e| {
        Fatal::env(
            "owner",
            format!("cannot stat {}: {e}", target.display()),
            "check the disk",
        )
    })?;
    let wrong = meta.uid() != uid || gid.is_some_and(|g| meta.gid() != g);
    if !wrong {
        report.record(
            "owner",
            Verdict::Ok,
            format!("{} is owned by {owner}", target.display()),
        );
        return Ok(());
    }
    let found = format!("{}:{}", meta.uid(), meta.gid());
    if !fix {
        return Err(Fatal::env(
            "owner",
            format!(
                "{} is owned by {found}, not {owner}: cairn-snapshot (user {}) could not \
                 write to it",
                target.display(),
                owner.user
            ),
            format!(
                "`chown -R {owner} {}`, or set fix_owner = yes in [preflight]",
                target.display()
            ),
        ));
    }
    if dry_run {
        report.record(
            "owner",
            Verdict::Would,
            format!(
                "change the owner of {} from {found} to {owner} (recursively)",
                target.display()
            ),
        );
        return Ok(());
    }
    chown_tree(target, uid, gid).map_err(|e| {
        Fatal::env(
            "owner",
            format!(
                "cannot change the owner of {} to {owner}: {e}",
                target.display()
            ),
            format!("`chown -R {owner} {}` by hand", target.display()),
        )
    })?;
    report.record(
        "owner",
        Verdict::Repaired,
        format!(
            "changed the owner of {} from {found} to {owner}",
            target.display()
        ),
    );
    Ok(())
}

/// `chown -R` without following symlinks or leaving the filesystem.
pub(crate) fn chown_tree(root: &Path, uid: u32, gid: Option<u32>) -> std::io::Result<()> {
    let dev = fs::symlink_metadata(root)?.dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p)?;
        if meta.dev() != dev {
            continue;
        }
        std::os::unix::fs::lchown(&p, Some(uid), gid)?;
        if meta.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

fn no_repository(repo: &Path) -> Fatal {
    Fatal::env(
        "repository",
        format!("there is no cairn repository at {}", repo.display()),
        "create it with `cairn init` (or `cairn setup`); if it existed, this may be the wrong \
         disk",
    )
}

/// Step 5's repository check: it exists and no exclusive lock is held.
fn check_repository(repo: &Path, report: &mut Report<'_>) -> Result<(), Fatal> {
    if !repo.join("config").is_file() {
        return Err(no_repository(repo));
    }
    let backend = crate::backend::LocalBackend::new(repo);
    match crate::repo::lock::exclusive_holder(&backend) {
        Ok(None) => {
            report.record(
                "repository",
                Verdict::Ok,
                format!("{} exists, not exclusively locked", repo.display()),
            );
            Ok(())
        }
        Ok(Some(holder)) => Err(Fatal::env(
            "repository",
            format!(
                "the repository {} is exclusively locked ({holder})",
                repo.display()
            ),
            "wait for that cairn prune/forget to finish; if its process is gone, `cairn unlock`",
        )),
        Err(e) => Err(Fatal::env(
            "repository",
            format!("cannot read the locks of {}: {e}", repo.display()),
            "check the disk and the repository's permissions",
        )),
    }
}

/// Step 6: `Some(text)` when the pipeline is stale.
fn check_staleness(
    pf: &PreflightConfig,
    dirs: &Dirs,
    run: &Run,
    report: &mut Report<'_>,
) -> Option<String> {
    let Some(max_age) = pf.max_age else {
        report.record("staleness", Verdict::Skipped, "no max_age configured");
        return None;
    };
    let now = chrono::Utc::now();
    let snapshot = crate::stage::read_status(dirs, "snapshot").ok().flatten();
    let preflight_first = run.stage().map(|s| s.first_started());
    let (baseline, what) = match &snapshot {
        Some(s) => match s.last_success {
            Some(t) => (Some(t), "the last successful snapshot"),
            None => (
                s.first_started.or(Some(s.started)),
                "the first snapshot attempt (none has succeeded)",
            ),
        },
        None => (
            preflight_first,
            "cairn's first preflight (no snapshot has run)",
        ),
    };
    let Some(baseline) = baseline else {
        report.record("staleness", Verdict::Skipped, "no run recorded yet");
        return None;
    };
    let age = now
        .signed_duration_since(baseline)
        .to_std()
        .unwrap_or_default();
    let limit = crate::util::human_duration(max_age);
    if age <= max_age {
        report.record(
            "staleness",
            Verdict::Ok,
            format!(
                "{what} was {} ago (max_age {limit})",
                crate::util::human_duration(age)
            ),
        );
        return None;
    }
    let text = format!(
        "{what} was {} ago ({}), longer than max_age = {limit}: backups are not happening",
        crate::util::human_duration(age),
        baseline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    run.event(
        &msg::BACKUP_STALE,
        Priority::Err,
        &text,
        &[("CAIRN_STALE_STAGE", "snapshot")],
    );
    report.checks.push(Check {
        name: "staleness",
        verdict: Verdict::Failed,
        detail: text.clone(),
    });
    Some(text)
}

fn checks_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let v = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Repaired => "repaired",
            Verdict::Would => "would",
            Verdict::Skipped => "skipped",
            Verdict::Warning => "WARNING",
            Verdict::Failed => "FAILED",
        };
        out.push_str(&format!("  {v:<9} {:<11} {}\n", c.name, c.detail));
    }
    out
}

fn failure_alert(
    pf: &PreflightConfig,
    f: &Fatal,
    checks: &[Check],
    host: &str,
    run_id: Option<String>,
    args: &PreflightArgs,
) -> Alert {
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| crate::config::resolve_path(None).0);
    Alert {
        stage: "preflight".into(),
        verdict: "FAILED".into(),
        headline: f.what.clone(),
        body: format!(
            "cairn-preflight on {host} found the backup disk {} unfit, so no backup runs \
             until this is fixed.\n\nWhat failed: {}\n\nWhat to do: {}\n\nChecks:\n{}\n\
             Configuration: {}\nExit code: {} ({})\n",
            pf.mount.display(),
            f.what,
            f.todo,
            checks_text(checks),
            config.display(),
            f.exit.code(),
            f.exit.describe()
        ),
        run_id,
    }
}

fn stale_alert(text: &str, checks: &[Check], host: &str, run_id: Option<String>) -> Alert {
    Alert {
        stage: "snapshot".into(),
        verdict: "STALE".into(),
        headline: text.to_string(),
        body: format!(
            "STALE BACKUPS on {host}: {text}.\n\nWhat to do: look at why snapshots fail or do \
             not run: `cairn status`, `systemctl list-timers 'cairn*'`, \
             `journalctl -u cairn-snapshot.service`.\n\nToday's preflight checks:\n{}",
            checks_text(checks)
        ),
        run_id,
    }
}

fn warning_alert(
    pf: &PreflightConfig,
    warnings: &[String],
    checks: &[Check],
    run_id: Option<String>,
) -> Alert {
    Alert {
        stage: "preflight".into(),
        verdict: "WARNING".into(),
        headline: warnings.join("; "),
        body: format!(
            "cairn-preflight found the backup disk {} usable, and the backup goes ahead, \
             but something needs a look:\n\n{}\n\nChecks:\n{}",
            pf.mount.display(),
            warnings
                .iter()
                .map(|w| format!("- {w}"))
                .collect::<Vec<_>>()
                .join("\n"),
            checks_text(checks)
        ),
        run_id,
    }
}
