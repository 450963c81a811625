//! `cairn setup`: put in place everything the pipeline and preflight's self-healing rely
//! on, step by step, idempotently.
//!
//! Design: setup is a list of [`Step`]s, each of which first *looks* (is it already so?),
//! then, unless this is a dry run, *does* one thing and says so: `done`, `already done`,
//! `would` (dry run, with the exact command or content), `skipped` (does not apply here,
//! and why) or `failed` (what to do). A failed step does not stop independent later steps,
//! but a step that needs an earlier one (init needs the key and the mounted disk) is
//! skipped with the reason. Running setup again changes nothing that is already right.
//! Every file it writes goes through temp + fsync + rename; the sudoers rule is
//! additionally checked with `visudo -cf` before the rename, under a name sudo ignores
//! (`.cairn.*`), so a broken sudoers file can never be in effect, not even for a moment.
//! System changes are made with the system's own tools (`useradd`, `systemd-creds`,
//! `apt-get`, `systemctl`), so what setup did is what an administrator would have done.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, PreflightConfig, RepositoryConfig};
use crate::mount;
use crate::repo::keyslot::{generate_key_file, KeySource};
use crate::repo::{InitParams, Repository};
use crate::stage::Dirs;

/// The built-in sudoers template (`sudoers.d/cairn.in` in the source tree).
pub const SUDOERS_TEMPLATE: &str = include_str!("../../sudoers.d/cairn.in");

/// Where the rendered rule goes.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/cairn";

/// Where encrypted credentials are kept (systemd's credential store).
pub use crate::credential::CREDSTORE_ENCRYPTED;

/// Where plain credentials are kept when `systemd-creds` is not available.
pub use crate::credential::CREDSTORE;

/// The units `cairn setup` enables and starts: the daily backup and the weekly drill
/// timers always, the weekly prune when `[retention]` says what to keep, and the heartbeat
/// daemon (pings, metrics, staleness alerts: what notices a backup that stopped) when
/// `[heartbeat]` says what to do.
pub const TIMERS: &[&str] = &[
    "cairn-backup.timer",
    "cairn-prune.timer",
    "cairn-drill.timer",
    "cairn-heartbeat.service",
];

/// The metrics directory `cairn-heartbeat.service` may write without a drop-in.
pub const HEARTBEAT_METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";

/// Where `cairn setup` writes its unit drop-ins (`UNIT.d/cairn-setup.conf`).
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// The name of the drop-in file `cairn setup` writes for each unit it configures.
pub const DROPIN_NAME: &str = "cairn-setup.conf";

/// The units that write the repository and get the setup drop-in.
pub const REPOSITORY_UNITS: &[&str] = &["cairn-snapshot.service", "cairn-prune.service"];

/// Command-line arguments of `cairn setup`.
pub struct SetupArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--install-mta`.
    pub install_mta: bool,
    /// `--sudoers-template FILE`.
    pub sudoers_template: Option<PathBuf>,
}

/// What a step found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResult {
    /// It was changed now.
    Done,
    /// It was already as it should be.
    AlreadyDone,
    /// Dry run: this would be done.
    Would,
    /// Does not apply here.
    Skipped,
    /// Could not be done.
    Failed,
}

impl StepResult {
    fn word(self) -> &'static str {
        match self {
            StepResult::Done => "done",
            StepResult::AlreadyDone => "already done",
            StepResult::Would => "would",
            StepResult::Skipped => "skipped",
            StepResult::Failed => "FAILED",
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Short name: `user`, `directories`, `mount`, `fstab`, `sudoers`, `mta`, `key`,
    /// `init`, `units`, `timers`, `preflight`.
    pub name: &'static str,
    /// The result.
    pub result: StepResult,
    /// What was found or done; for `would`, the exact command or content.
    pub detail: String,
}

struct Steps {
    steps: Vec<Step>,
    json: bool,
}

impl Steps {
    fn add(&mut self, name: &'static str, result: StepResult, detail: impl Into<String>) {
        let detail = detail.into();
        if !self.json {
            let mut lines = detail.lines();
            println!(
                "{:<12} {:<13} {}",
                name,
                result.word(),
                lines.next().unwrap_or_default()
            );
            for l in lines {
                println!("{:<27}{l}", "");
            }
        }
        self.steps.push(Step {
            name,
            result,
            detail,
        });
    }

    fn failed(&self, name: &str) -> bool {
        self.steps
            .iter()
            .any(|s| s.name == name && s.result == StepResult::Failed)
    }
}

/// Run `cairn setup`; returns the exit code: 0 when no step failed, 1 for a configuration
/// error, 2 when a step failed.
pub fn run(args: &SetupArgs) -> i32 {
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn setup: {e}");
            return 1;
        }
    };
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| crate::config::resolve_path(None).0);
    let template = match &args.sudoers_template {
        Some(p) => match fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "cairn setup: cannot read the sudoers template {}: {e}",
                    p.display()
                );
                return 1;
            }
        },
        None => SUDOERS_TEMPLATE.to_string(),
    };
    if args.dry_run && !args.json {
        println!("cairn setup --dry-run: the plan; nothing is changed\n");
    }
    let mut s = Steps {
        steps: Vec::new(),
        json: args.json,
    };
    let dirs = Dirs::from_env();
    let owner = cfg.preflight.as_ref().and_then(|p| p.owner.as_ref());
    let user = owner
        .map(|o| o.user.clone())
        .unwrap_or_else(|| "cairn".to_string());
    // `owner = user:group` names the group preflight checks; else the user's own group.
    let group = owner.and_then(|o| o.group.clone());

    step_user(&mut s, &user, &dirs, args.dry_run);
    step_directories(&mut s, &user, group.as_deref(), &dirs, args.dry_run);
    // The heartbeat's unit runs as cairn whatever [preflight] owner says.
    step_metrics_dir(&mut s, &cfg, "cairn", None, args.dry_run);
    match &cfg.preflight {
        Some(pf) => {
            step_disk(&mut s, pf, args.dry_run);
            step_sudoers(&mut s, &user, pf, &template, args.dry_run);
        }
        None => {
            s.add(
                "mount",
                StepResult::Skipped,
                "no [preflight] section: no backup disk to set up",
            );
            s.add(
                "sudoers",
                StepResult::Skipped,
                "no [preflight] section: no mount rule needed",
            );
        }
    }
    step_mta(&mut s, &cfg, args.install_mta, args.dry_run);
    match &cfg.repository {
        Some(r) => {
            let key = step_key(&mut s, r, &user, args.dry_run);
            let mounted = cfg.preflight.as_ref().is_none_or(|pf| {
                mount::mount_table()
                    .map(|t| mount::mount_at(&t, &pf.mount).is_some())
                    .unwrap_or(false)
            });
            step_init(
                &mut s,
                r,
                &user,
                group.as_deref(),
                mounted,
                key,
                args.dry_run,
            );
        }
        None => {
            s.add("key", StepResult::Skipped, "no [repository] section");
            s.add("init", StepResult::Skipped, "no [repository] section");
        }
    }
    step_units(
        &mut s,
        &cfg,
        &config_path,
        &user,
        group.as_deref(),
        args.dry_run,
    );
    let timers: Vec<&str> = TIMERS
        .iter()
        .copied()
        .filter(|t| *t != "cairn-prune.timer" || cfg.retention.is_some())
        .filter(|t| *t != "cairn-heartbeat.service" || cfg.heartbeat.is_some())
        .collect();
    let mut note = String::new();
    if cfg.retention.is_none() {
        note.push_str("\ncairn-prune.timer is left alone: no [retention] says what to keep");
    }
    if cfg.heartbeat.is_none() {
        note.push_str("\ncairn-heartbeat.service is left alone: no [heartbeat] says where to ping");
    }
    step_timers(&mut s, &timers, &note, args.dry_run);
    step_smoke(&mut s, &cfg, &config_path, args.dry_run);

    let failed = s
        .steps
        .iter()
        .filter(|x| x.result == StepResult::Failed)
        .count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": args.dry_run,
                "steps": s.steps,
                "failed": failed,
            }))
            .unwrap_or_default()
        );
    } else if failed > 0 {
        println!("\n{failed} step(s) failed; fix what they say and run `cairn setup` again");
    } else if !args.dry_run {
        println!("\ncairn is set up");
    }
    if failed > 0 {
        2
    } else {
        0
    }
}

fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}").replace('"', "");
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "`{shown}` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{shown}`: {e}")),
    }
}

fn lookup_user(name: &str) -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(name).ok().flatten()
}

/// The uid and gid files get: the user's, and `group`'s gid if given (else the user's
/// primary group).
fn owner_ids(user: &str, group: Option<&str>) -> Option<(u32, u32)> {
    let u = lookup_user(user)?;
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()?
                .gid
                .as_raw(),
        },
        None => u.gid.as_raw(),
    };
    Some((u.uid.as_raw(), gid))
}

/// `cmd args…` as a shell would need it typed: arguments with spaces quoted.
fn shell_line(cmd: &str, args: &[&str]) -> String {
    let mut out = cmd.to_string();
    for a in args {
        out.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            out.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            out.push_str(a);
        }
    }
    out
}

fn step_user(s: &mut Steps, user: &str, dirs: &Dirs, dry_run: bool) {
    if let Some(u) = lookup_user(user) {
        s.add(
            "user",
            StepResult::AlreadyDone,
            format!("user {user} exists (uid {})", u.uid),
        );
        return;
    }
    let home = dirs.state.display().to_string();
    let args = [
        "--system",
        "--user-group",
        "--home-dir",
        &home,
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "cairn backups",
        user,
    ];
    if dry_run {
        s.add("user", StepResult::Would, shell_line("useradd", &args));
        return;
    }
    match run_cmd(Command::new("useradd").args(args)) {
        Ok(_) => s.add(
            "user",
            StepResult::Done,
            format!("created the system user {user}"),
        ),
        Err(e) => s.add("user", StepResult::Failed, e),
    }
}

/// The directories setup creates: (path, mode).
fn directories(dirs: &Dirs) -> Vec<(PathBuf, u32)> {
    vec![
        (dirs.state.clone(), 0o750),
        (dirs.state.join("status"), 0o755),
        (dirs.cache.clone(), 0o750),
        (dirs.cache.join("drill"), 0o700),
    ]
}

/// `[heartbeat] metrics_file`'s directory: created for the user when missing (the
/// heartbeat's unit can only be given write access to a directory that exists when it
/// starts); an existing one (node_exporter's) is never changed, only checked.
fn step_metrics_dir(s: &mut Steps, cfg: &Config, user: &str, group: Option<&str>, dry_run: bool) {
    let Some(file) = cfg
        .heartbeat
        .as_ref()
        .and_then(|h| h.metrics_file.as_deref())
    else {
        return;
    };
    let Some(dir) = file.parent() else { return };
    let Some(ids) = owner_ids(user, group) else {
        s.add(
            "metrics",
            StepResult::Failed,
            format!(
                "the user {user}, whom cairn-heartbeat.service runs as, does not exist: install \
                 the cairn package (its sysusers.d creates it), then run setup again"
            ),
        );
        return;
    };
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => s.add(
            "metrics",
            StepResult::Failed,
            format!(
                "{} is not a directory ([heartbeat] metrics_file)",
                dir.display()
            ),
        ),
        Ok(m) => {
            let mode = m.permissions().mode();
            let writable = writable_by(m.uid(), m.gid(), mode, ids);
            // An ACL may grant the user more than the mode says.
            let has_acl = xattr_present(dir, "system.posix_acl_access");
            if writable || has_acl {
                s.add(
                    "metrics",
                    StepResult::AlreadyDone,
                    format!(
                        "{} is there for the heartbeat's metrics{}",
                        dir.display(),
                        if has_acl && !writable {
                            " (its ACL must let the user write)"
                        } else {
                            ""
                        }
                    ),
                );
            } else {
                s.add(
                    "metrics",
                    StepResult::Failed,
                    format!(
                        "{} is not writable by {user} (mode {:04o}), so the heartbeat cannot \
                         write [heartbeat] metrics_file there: `setfacl -m u:{user}:rwx {}` \
                         (node_exporter still reads it), or choose another metrics_file",
                        dir.display(),
                        mode & 0o7777,
                        dir.display()
                    ),
                );
            }
        }
        Err(_) if dry_run => s.add(
            "metrics",
            StepResult::Would,
            format!("create {} (mode 0755, owner {user})", dir.display()),
        ),
        Err(_) => {
            let made = fs::create_dir_all(dir)
                .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
                .and_then(|()| std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1)));
            match made {
                Ok(()) => s.add(
                    "metrics",
                    StepResult::Done,
                    format!(
                        "created {} (mode 0755, owner {user}) for the heartbeat's metrics",
                        dir.display()
                    ),
                ),
                Err(e) => s.add(
                    "metrics",
                    StepResult::Failed,
                    format!("cannot create {}: {e}", dir.display()),
                ),
            }
        }
    }
}

/// Whether the mode bits of a directory owned by `uid`:`gid` let `(user, group)` write
/// (root's powers and ACLs aside).
fn writable_by(uid: u32, gid: u32, mode: u32, (u, g): (u32, u32)) -> bool {
    if uid == u {
        return mode & 0o200 != 0;
    }
    if gid == g {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

/// Whether `path` has the extended attribute `name`.
fn xattr_present(path: &Path, name: &str) -> bool {
    let mut none: [u8; 0] = [];
    rustix::fs::getxattr(path, name, &mut none[..]).is_ok()
}

fn step_directories(s: &mut Steps, user: &str, group: Option<&str>, dirs: &Dirs, dry_run: bool) {
    let ids = owner_ids(user, group);
    let mut changed = Vec::new();
    let mut problems = Vec::new();
    for (path, mode) in directories(dirs) {
        let want = |m: &fs::Metadata| {
            m.is_dir()
                && m.permissions().mode() & 0o7777 == mode
                && ids.is_none_or(|(u, g)| m.uid() == u && m.gid() == g)
        };
        match fs::symlink_metadata(&path) {
            Ok(m) if want(&m) => continue,
            Ok(m) if !m.is_dir() => {
                problems.push(format!("{} exists and is not a directory", path.display()));
                continue;
            }
            _ => {}
        }
        let line = format!("{} (mode {mode:04o}, owner {user})", path.display());
        if dry_run {
            changed.push(line);
            continue;
        }
        let made = fs::create_dir_all(&path)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
            .and_then(|()| match ids {
                Some((u, g)) => std::os::unix::fs::chown(&path, Some(u), Some(g)),
                None => Ok(()),
            });
        match made {
            Ok(()) => changed.push(line),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if !problems.is_empty() {
        s.add("directories", StepResult::Failed, problems.join("\n"));
    } else if changed.is_empty() {
        s.add(
            "directories",
            StepResult::AlreadyDone,
            format!(
                "{} and {} are in place",
                dirs.state.display(),
                dirs.cache.display()
            ),
        );
    } else if dry_run {
        s.add(
            "directories",
            StepResult::Would,
            format!("create {}", changed.join("\ncreate ")),
        );
    } else {
        s.add(
            "directories",
            StepResult::Done,
            format!(
                "created or corrected {}",
                changed.join("\ncreated or corrected ")
            ),
        );
    }
}

fn step_disk(s: &mut Steps, pf: &PreflightConfig, dry_run: bool) {
    if pf.uuid.is_none() && pf.label.is_none() {
        s.add(
            "mount",
            StepResult::Skipped,
            "[preflight] has no uuid or label: cairn cannot find, mount or add the disk to \
             /etc/fstab by itself (add `uuid = …` from `blkid`)",
        );
        return;
    }
    let (checks, result) = crate::preflight::setup_disk(pf, dry_run);
    for c in &checks {
        use crate::preflight::Verdict as V;
        let (name, r) = match (c.name, c.verdict) {
            ("identity", _) => continue,
            ("fstab", v) => ("fstab", v),
            (_, v) => ("mount", v),
        };
        let r = match r {
            V::Ok => StepResult::AlreadyDone,
            V::Repaired => StepResult::Done,
            V::Would => StepResult::Would,
            V::Skipped => StepResult::Skipped,
            V::Warning | V::Failed => StepResult::Failed,
        };
        s.add(name, r, c.detail.clone());
    }
    if let Err(e) = result {
        // The failed check says what; the error also says what to do.
        match s
            .steps
            .iter_mut()
            .rev()
            .find(|x| x.result == StepResult::Failed && (x.name == "mount" || x.name == "fstab"))
        {
            Some(step) => step.detail = e,
            None => s.add("mount", StepResult::Failed, e),
        }
    }
}

/// Escape a path for a sudoers command argument: sudoers treats `,`, `:`, `=`, `\`,
/// spaces and `#` specially.
fn sudoers_escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if matches!(
            c,
            ',' | ':' | '=' | '\\' | ' ' | '\t' | '#' | '"' | '*' | '?' | '[' | ']'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The sudoers rule for `user` and the mount point.
pub fn render_sudoers(template: &str, user: &str, mount: &Path) -> String {
    template
        .replace("@USER@", user)
        .replace("@MOUNT@", &sudoers_escape(&mount.to_string_lossy()))
}

fn step_sudoers(s: &mut Steps, user: &str, pf: &PreflightConfig, template: &str, dry_run: bool) {
    let content = render_sudoers(template, user, &pf.mount);
    let target = Path::new(SUDOERS_FILE);
    if fs::read_to_string(target).is_ok_and(|c| c == content) {
        s.add(
            "sudoers",
            StepResult::AlreadyDone,
            format!("{SUDOERS_FILE} holds the mount rule"),
        );
        return;
    }
    let dir = target.parent().unwrap_or(Path::new("/etc/sudoers.d"));
    // sudo ignores files whose names contain a dot: the candidate is never in effect.
    let tmp = dir.join(format!(".cairn.{}.tmp", std::process::id()));
    if run_cmd(Command::new("visudo").arg("--version")).is_err() {
        s.add(
            "sudoers",
            StepResult::Failed,
            "visudo is not installed, so the sudoers rule cannot be checked: install sudo \
             (`apt-get install sudo`)",
        );
        return;
    }
    let check = |path: &Path| {
        run_cmd(
            Command::new("visudo")
                .arg("-c")
                .arg("-q")
                .arg("-f")
                .arg(path),
        )
    };
    if dry_run {
        // Check the rendered rule in a private temporary directory: nothing under /etc.
        let verdict = tempfile::tempdir()
            .map_err(|e| e.to_string())
            .and_then(|d| {
                let p = d.path().join("cairn");
                fs::write(&p, &content).map_err(|e| e.to_string())?;
                check(&p)
            });
        match verdict {
            Ok(_) => s.add(
                "sudoers",
                StepResult::Would,
                format!(
                    "install {SUDOERS_FILE} (mode 0440, checked with visudo -cf):\n{}",
                    content.trim_end()
                ),
            ),
            Err(e) => s.add(
                "sudoers",
                StepResult::Failed,
                format!("the rendered sudoers rule is invalid, it would not be installed: {e}"),
            ),
        }
        return;
    }
    if !dir.is_dir() {
        s.add(
            "sudoers",
            StepResult::Failed,
            format!(
                "{} does not exist: install sudo (`apt-get install sudo`)",
                dir.display()
            ),
        );
        return;
    }
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o440))?;
        f.write_all(content.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        s.add(
            "sudoers",
            StepResult::Failed,
            format!("cannot write {}: {e}", tmp.display()),
        );
        return;
    }
    if let Err(e) = check(&tmp) {
        let _ = fs::remove_file(&tmp);
        s.add(
            "sudoers",
            StepResult::Failed,
            format!("the rendered sudoers rule is invalid and was not installed ({e}); {SUDOERS_FILE} is unchanged"),
        );
        return;
    }
    let installed = fs::rename(&tmp, target).and_then(|()| crate::atomic::sync_dir(dir));
    match installed {
        Ok(()) => s.add(
            "sudoers",
            StepResult::Done,
            format!(
                "installed {SUDOERS_FILE}: {user} may mount and unmount {}",
                pf.mount.display()
            ),
        ),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            s.add(
                "sudoers",
                StepResult::Failed,
                format!("cannot install {SUDOERS_FILE}: {e}"),
            );
        }
    }
}

/// The commands `--install-mta` runs: Debian's exim4 in "local delivery only" mode.
pub const MTA_INSTALL: &[&[&str]] = &[
    &["debconf-set-selections"],
    &[
        "apt-get",
        "install",
        "-y",
        "-q",
        "exim4-daemon-light",
        "bsd-mailx",
    ],
];

/// The debconf answers for a local-only exim4.
pub const MTA_DEBCONF: &str =
    "exim4-config exim4/dc_eximconfig_configtype select local delivery only; not on a network\n\
exim4-config exim4/dc_local_interfaces string 127.0.0.1 ; ::1\n\
exim4-config exim4/dc_other_hostnames string\n\
exim4-config exim4/use_split_config boolean false\n";

fn step_mta(s: &mut Steps, cfg: &Config, install: bool, dry_run: bool) {
    let sendmail = cfg
        .alert
        .as_ref()
        .map(|a| a.sendmail.clone())
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SENDMAIL));
    if sendmail.exists() {
        s.add(
            "mta",
            StepResult::AlreadyDone,
            format!("{} is present", sendmail.display()),
        );
        return;
    }
    if !install {
        s.add(
            "mta",
            StepResult::Failed,
            format!(
                "no MTA: {} is missing, so alerts cannot be mailed; run `cairn setup \
                 --install-mta` (Debian's exim4, local delivery only) or install one",
                sendmail.display()
            ),
        );
        return;
    }
    if dry_run {
        s.add(
            "mta",
            StepResult::Would,
            format!(
                "debconf-set-selections <<'EOF'\n{}EOF\nDEBIAN_FRONTEND=noninteractive {}",
                MTA_DEBCONF,
                MTA_INSTALL[1].join(" ")
            ),
        );
        return;
    }
    let debconf = (|| {
        let mut child = Command::new("debconf-set-selections")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run debconf-set-selections: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(MTA_DEBCONF.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let st = child.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("debconf-set-selections failed ({st})"))
        }
    })();
    let result = debconf.and_then(|()| {
        run_cmd(
            Command::new(MTA_INSTALL[1][0])
                .args(&MTA_INSTALL[1][1..])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    match result {
        Ok(_) if sendmail.exists() => s.add(
            "mta",
            StepResult::Done,
            "installed exim4 (local delivery only): alerts are delivered to local mailboxes",
        ),
        Ok(_) => s.add(
            "mta",
            StepResult::Failed,
            format!(
                "exim4 was installed but {} is still missing",
                sendmail.display()
            ),
        ),
        Err(e) => s.add("mta", StepResult::Failed, e),
    }
}

/// The key a fresh repository is created with, as setup arranged it.
enum SetupKey {
    /// A source that opens (or will open) the repository.
    Source(KeySource),
    /// A private temporary directory holding a plain copy of a credential's key as
    /// `key`, removed on drop.
    Temp(tempfile::TempDir),
    /// None could be arranged (the step failed or was skipped).
    Missing(String),
}

fn step_key(s: &mut Steps, r: &RepositoryConfig, user: &str, dry_run: bool) -> SetupKey {
    if let Some(k) = &r.key_file {
        if k.exists() {
            s.add(
                "key",
                StepResult::AlreadyDone,
                format!("key file {} exists", k.display()),
            );
            return SetupKey::Source(KeySource::KeyFile(k.clone()));
        }
        if dry_run {
            s.add(
                "key",
                StepResult::Would,
                format!(
                    "generate a key file {} (mode 0640, owner root:{user})",
                    k.display()
                ),
            );
            return SetupKey::Missing("dry run".into());
        }
        let parent = k.parent().unwrap_or(Path::new("/"));
        let made = fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))
            .and_then(|()| generate_key_file(k))
            .and_then(|()| {
                let gid = lookup_user(user).map(|u| u.gid.as_raw());
                std::os::unix::fs::chown(k, Some(0), gid)
                    .and_then(|()| fs::set_permissions(k, fs::Permissions::from_mode(0o640)))
                    .map_err(|e| format!("cannot set the owner of {}: {e}", k.display()))
            });
        return match made {
            Ok(()) => {
                s.add(
                    "key",
                    StepResult::Done,
                    format!(
                        "generated the key file {} (mode 0640, root:{user}); keep a copy \
                         off this machine: without it the backups cannot be read",
                        k.display()
                    ),
                );
                SetupKey::Source(KeySource::KeyFile(k.clone()))
            }
            Err(e) => {
                s.add("key", StepResult::Failed, e.clone());
                SetupKey::Missing(e)
            }
        };
    }
    if let Some(name) = &r.key_credential {
        return key_credential(s, name, dry_run);
    }
    match crate::keys::sources(r) {
        Ok(src) if !src.is_empty() => {
            s.add(
                "key",
                StepResult::AlreadyDone,
                format!("the repository key comes from the {}", src[0].describe()),
            );
            SetupKey::Source(src[0].clone())
        }
        Ok(_) => {
            let e = "no key configured in [repository]: set key_file (setup generates it) or \
                     key_credential"
                .to_string();
            s.add("key", StepResult::Failed, e.clone());
            SetupKey::Missing(e)
        }
        Err(e) => {
            s.add("key", StepResult::Failed, e.clone());
            SetupKey::Missing(e)
        }
    }
}

/// `key_credential = NAME`: an encrypted credential in /etc/credstore.encrypted (made with
/// `systemd-creds encrypt`), else a plain one in /etc/credstore (mode 0600).
fn key_credential(s: &mut Steps, name: &str, dry_run: bool) -> SetupKey {
    let enc = Path::new(CREDSTORE_ENCRYPTED).join(name);
    let plain = Path::new(CREDSTORE).join(name);
    let have_creds = run_cmd(Command::new("systemd-creds").arg("--version")).is_ok();
    let temp = || -> Result<(tempfile::TempDir, PathBuf), String> {
        let d = tempfile::Builder::new()
            .prefix("cairn-setup-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let p = d.path().join("key");
        Ok((d, p))
    };
    if enc.exists() {
        s.add(
            "key",
            StepResult::AlreadyDone,
            format!("encrypted credential {} exists", enc.display()),
        );
        if dry_run {
            return SetupKey::Missing("dry run".into());
        }
        // A plain copy for `cairn init`, decrypted into a private temporary directory.
        return match temp().and_then(|(d, p)| {
            run_cmd(
                Command::new("systemd-creds")
                    .arg("decrypt")
                    .arg(format!("--name={name}"))
                    .arg(&enc)
                    .arg(&p),
            )?;
            Ok((d, p))
        }) {
            Ok((d, _)) => SetupKey::Temp(d),
            Err(e) => SetupKey::Missing(format!("cannot decrypt {}: {e}", enc.display())),
        };
    }
    if plain.exists() {
        s.add(
            "key",
            StepResult::AlreadyDone,
            format!("credential {} exists", plain.display()),
        );
        return SetupKey::Source(KeySource::KeyFile(plain));
    }
    if dry_run {
        let how = if have_creds {
            format!(
                "generate a key into a private temporary file and encrypt it with \
                 `systemd-creds encrypt --name={name} KEYFILE {}` (units load it with \
                 LoadCredentialEncrypted={name}:{})",
                enc.display(),
                enc.display()
            )
        } else {
            format!(
                "generate a key into {} (mode 0600; units load it with LoadCredential={name}:{})",
                plain.display(),
                plain.display()
            )
        };
        s.add("key", StepResult::Would, how);
        return SetupKey::Missing("dry run".into());
    }
    if !have_creds {
        let made = fs::create_dir_all(CREDSTORE)
            .and_then(|()| fs::set_permissions(CREDSTORE, fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {CREDSTORE}: {e}"))
            .and_then(|()| generate_key_file(&plain));
        return match made {
            Ok(()) => {
                s.add(
                    "key",
                    StepResult::Done,
                    format!("generated the key {} (systemd-creds is not available, so it is not encrypted); keep a copy off this machine", plain.display()),
                );
                SetupKey::Source(KeySource::KeyFile(plain))
            }
            Err(e) => {
                s.add("key", StepResult::Failed, e.clone());
                SetupKey::Missing(e)
            }
        };
    }
    let made = temp().and_then(|(d, p)| {
        generate_key_file(&p)?;
        fs::create_dir_all(CREDSTORE_ENCRYPTED)
            .and_then(|()| {
                fs::set_permissions(CREDSTORE_ENCRYPTED, fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot create {CREDSTORE_ENCRYPTED}: {e}"))?;
        let tmp_out = Path::new(CREDSTORE_ENCRYPTED).join(format!(".{name}.tmp"));
        run_cmd(
            Command::new("systemd-creds")
                .arg("encrypt")
                .arg(format!("--name={name}"))
                .arg(&p)
                .arg(&tmp_out),
        )?;
        fs::File::open(&tmp_out)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&tmp_out, &enc))
            .and_then(|()| crate::atomic::sync_dir(Path::new(CREDSTORE_ENCRYPTED)))
            .map_err(|e| format!("cannot install {}: {e}", enc.display()))?;
        Ok((d, p))
    });
    match made {
        Ok((d, _)) => {
            s.add(
                "key",
                StepResult::Done,
                format!(
                    "generated the repository key, encrypted as the credential {} (systemd-creds); \
                     keep a copy of the key off this machine (`systemd-creds decrypt --name={name} {} -`)",
                    enc.display(),
                    enc.display()
                ),
            );
            SetupKey::Temp(d)
        }
        Err(e) => {
            s.add("key", StepResult::Failed, e.clone());
            SetupKey::Missing(e)
        }
    }
}

fn step_init(
    s: &mut Steps,
    r: &RepositoryConfig,
    user: &str,
    group: Option<&str>,
    mounted: bool,
    key: SetupKey,
    dry_run: bool,
) {
    if r.path.join("config").is_file() {
        s.add(
            "init",
            StepResult::AlreadyDone,
            format!("a repository exists at {}", r.path.display()),
        );
        return;
    }
    if s.failed("mount") || (!mounted && !dry_run) {
        s.add(
            "init",
            StepResult::Skipped,
            "the backup disk is not mounted (see the mount step): a repository is never \
             created on the bare mount point",
        );
        return;
    }
    if dry_run {
        s.add(
            "init",
            StepResult::Would,
            format!(
                "create the repository at {} (`cairn init`), owned by {user}",
                r.path.display()
            ),
        );
        return;
    }
    // A temporary plain key (decrypted credential) lives until the end of this function.
    let source = match &key {
        SetupKey::Source(k) => k.clone(),
        SetupKey::Temp(d) => KeySource::KeyFile(d.path().join("key")),
        SetupKey::Missing(why) => {
            s.add("init", StepResult::Skipped, format!("no key: {why}"));
            return;
        }
    };
    let params = InitParams {
        chunk_min: r.chunk_min as u32,
        chunk_avg: r.chunk_avg as u32,
        chunk_max: r.chunk_max as u32,
    };
    let made = Repository::init(&r.path, &source, &params).map_err(|e| e.to_string());
    let owned = made.and_then(|id| match owner_ids(user, group) {
        Some((uid, gid)) => crate::preflight::chown_tree(&r.path, uid, Some(gid))
            .map(|()| id)
            .map_err(|e| format!("created, but cannot give it to {user}: {e}")),
        None => Ok(id),
    });
    match owned {
        Ok(id) => s.add(
            "init",
            StepResult::Done,
            format!(
                "created the repository {} at {}, owned by {user}",
                &id[..12],
                r.path.display()
            ),
        ),
        Err(e) => s.add("init", StepResult::Failed, e),
    }
    drop(key);
}

/// The drop-in `cairn setup` writes for a unit that writes the repository: what only the
/// config knows (the repository path the sandbox must leave writable, the key
/// credential, a user other than `cairn`, a config file elsewhere), or None when the
/// unit needs nothing beyond its shipped file.
pub fn repository_dropin(
    cfg: &Config,
    config_path: &Path,
    user: &str,
    group: Option<&str>,
) -> Option<String> {
    let r = cfg.repository.as_ref()?;
    let mut out = dropin_head(
        "[repository] path or key_credential, or [preflight] owner",
        config_path,
    );
    out.push_str(&format!(
        "# The repository: the one place outside the state and cache directories this\n\
         # unit may write (ProtectSystem=strict).\nReadWritePaths={}\n",
        unit_quote(&r.path.display().to_string())
    ));
    if let Some(name) = &r.key_credential {
        out.push_str(&credential_lines(name, "The repository key"));
    }
    if user != "cairn" || group.is_some() {
        out.push_str(&format!(
            "# The repository's owner, as [preflight] owner says.\nUser={user}\nGroup={}\n",
            group.unwrap_or(user)
        ));
    }
    Some(out)
}

/// The start of a setup drop-in: what it is, which keys to re-run setup after
/// (`changing`), the `[Service]` header, and `CAIRN_CONFIG` when the configuration is not
/// in the default place.
fn dropin_head(changing: &str, config_path: &Path) -> String {
    let mut out = format!(
        "# Written by `cairn setup` from the configuration; run `cairn setup` again after\n\
         # changing {changing}.\n[Service]\n"
    );
    if config_path != Path::new(crate::config::DEFAULT_PATH) {
        out.push_str(&format!(
            "# The configuration is not in the default place.\nEnvironment={}\n",
            unit_quote(&format!("CAIRN_CONFIG={}", config_path.display()))
        ));
    }
    out
}

/// `LoadCredentialEncrypted=` from the encrypted store when the credential is there,
/// else `LoadCredential=` from the plain one, with a comment naming `what` it is.
fn credential_lines(name: &str, what: &str) -> String {
    let encrypted = Path::new(CREDSTORE_ENCRYPTED).join(name);
    if encrypted.exists() {
        format!(
            "# {what}, decrypted by systemd into $CREDENTIALS_DIRECTORY.\n\
             LoadCredentialEncrypted={name}:{}\n",
            encrypted.display()
        )
    } else {
        format!(
            "# {what} (plain: systemd-creds was not available to encrypt it).\n\
             LoadCredential={name}:{}\n",
            Path::new(CREDSTORE).join(name).display()
        )
    }
}

/// The drop-in for `cairn-drill.service`: the configuration's place, the repository key
/// and the bucket's credential (it reads either copy), and a scratch directory other than
/// the default, which its sandbox must leave writable.
pub fn drill_dropin(cfg: &Config, config_path: &Path) -> Option<String> {
    let r = cfg.repository.as_ref()?;
    let mut out = dropin_head(
        "[repository] key_credential, [remote] credentials or [drill] scratch",
        config_path,
    );
    if let Some(name) = &r.key_credential {
        out.push_str(&credential_lines(name, "The repository key"));
    }
    if let Some(crate::config::Credentials::Credential(name)) =
        cfg.remote.as_ref().map(|x| &x.credentials)
    {
        out.push_str(&credential_lines(name, "The bucket's read key"));
    }
    if let Some(scratch) = cfg.drill.as_ref().and_then(|d| d.scratch.as_ref()) {
        out.push_str(&format!(
            "# [drill] scratch: emptied and written by the drill.\nReadWritePaths={}\n",
            unit_quote(&scratch.display().to_string())
        ));
    }
    Some(out)
}

/// The drop-in for `cairn-upload.service`: the configuration's place, the repository's
/// lock directory (its one write: a shared lock that keeps a prune away) and the bucket's
/// credential.
pub fn upload_dropin(cfg: &Config, config_path: &Path) -> Option<String> {
    let r = cfg.repository.as_ref()?;
    let mut out = dropin_head("[repository] path or [remote] credentials", config_path);
    out.push_str(&format!(
        "# The repository's locks: upload's one write there (a shared lock).\n\
         ReadWritePaths={}\n",
        unit_quote(&r.path.join("locks").display().to_string())
    ));
    if let Some(crate::config::Credentials::Credential(name)) =
        cfg.remote.as_ref().map(|x| &x.credentials)
    {
        out.push_str(&credential_lines(name, "The bucket's upload key"));
    }
    Some(out)
}

/// The drop-in for `cairn-heartbeat.service`: the configuration's place, and the directory
/// of a `[heartbeat] metrics_file` outside the one its unit may write.
pub fn heartbeat_dropin(cfg: &Config, config_path: &Path) -> String {
    let mut out = dropin_head("[heartbeat] metrics_file", config_path);
    let dir = cfg
        .heartbeat
        .as_ref()
        .and_then(|h| h.metrics_file.as_deref())
        .and_then(Path::parent);
    if let Some(dir) = dir.filter(|d| !d.starts_with(HEARTBEAT_METRICS_DIR)) {
        out.push_str(&format!(
            "# [heartbeat] metrics_file's directory: the metrics are written there.
             ReadWritePaths={}
",
            unit_quote(&dir.display().to_string())
        ));
    }
    out
}

/// One word of a unit file setting: `%` doubled (systemd expands `%` specifiers), and
/// quoted C-style when it holds whitespace, quotes or backslashes.
fn unit_quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    if !word.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        return word;
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn step_units(
    s: &mut Steps,
    cfg: &Config,
    config_path: &Path,
    user: &str,
    group: Option<&str>,
    dry_run: bool,
) {
    let Some(content) = repository_dropin(cfg, config_path, user, group) else {
        s.add("units", StepResult::Skipped, "no [repository] section");
        return;
    };
    let drill = drill_dropin(cfg, config_path).unwrap_or_default();
    let upload = upload_dropin(cfg, config_path).unwrap_or_default();
    let mut dropins: Vec<(&str, &str)> = REPOSITORY_UNITS
        .iter()
        .map(|u| (*u, content.as_str()))
        .collect();
    dropins.push(("cairn-drill.service", drill.as_str()));
    dropins.push(("cairn-upload.service", upload.as_str()));
    let heartbeat = heartbeat_dropin(cfg, config_path);
    dropins.push(("cairn-heartbeat.service", heartbeat.as_str()));
    // The OnFailure= alert reads the same configuration (a template's drop-in applies to
    // every instance).
    let alert = dropin_head("the configuration's place", config_path);
    dropins.push(("cairn-alert@.service", alert.as_str()));
    let base = Path::new(SYSTEMD_DIR);
    if !base.is_dir() {
        s.add(
            "units",
            StepResult::Skipped,
            format!("{} does not exist: not a systemd host", base.display()),
        );
        return;
    }
    let mut changed = Vec::new();
    let mut problems = Vec::new();
    for (unit, content) in dropins {
        let dir = base.join(format!("{unit}.d"));
        let file = dir.join(DROPIN_NAME);
        if fs::read_to_string(&file).is_ok_and(|c| c == content) {
            continue;
        }
        if dry_run {
            changed.push(format!("{}:\n{content}", file.display()));
            continue;
        }
        let written = fs::create_dir_all(&dir)
            .and_then(|()| crate::atomic::write_atomic(&file, content.as_bytes(), 0o644));
        match written {
            Ok(()) => changed.push(file.display().to_string()),
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    if !problems.is_empty() {
        s.add("units", StepResult::Failed, problems.join("\n"));
        return;
    }
    if changed.is_empty() {
        s.add(
            "units",
            StepResult::AlreadyDone,
            format!(
                "the drop-ins for {}, cairn-drill.service, cairn-upload.service, \
                 cairn-heartbeat.service, cairn-alert@.service are in place",
                REPOSITORY_UNITS.join(", ")
            ),
        );
        return;
    }
    if dry_run {
        s.add(
            "units",
            StepResult::Would,
            format!("write {}", changed.join("\nwrite ")),
        );
        return;
    }
    // systemd reads drop-ins on reload; without systemd running there is nothing to tell.
    let reloaded = if crate::systemd::is_running() {
        crate::systemd::Systemd::connect()
            .and_then(|sd| sd.reload())
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    match reloaded {
        Ok(()) => s.add(
            "units",
            StepResult::Done,
            format!("wrote {}", changed.join(", ")),
        ),
        Err(e) => s.add(
            "units",
            StepResult::Failed,
            format!(
                "wrote {}, but systemd did not reload ({e}): run `systemctl daemon-reload`",
                changed.join(", ")
            ),
        ),
    }
}

fn step_timers(s: &mut Steps, timers: &[&str], note: &str, dry_run: bool) {
    let mut add = |result: StepResult, detail: String| s.add("timers", result, detail + note);
    if !crate::systemd::is_running() {
        add(
            StepResult::Skipped,
            "systemd is not running here: no timers to enable".to_string(),
        );
        return;
    }
    let sd = match crate::systemd::Systemd::connect() {
        Ok(sd) => sd,
        Err(e) => {
            add(StepResult::Failed, e.to_string());
            return;
        }
    };
    let mut missing = Vec::new();
    let mut todo = Vec::new();
    let mut ok = Vec::new();
    for t in timers {
        match sd.unit_file_state(t) {
            Ok(Some(state))
                if state == "enabled" && sd.unit_state(t).is_ok_and(|u| u.is_active()) =>
            {
                ok.push(*t)
            }
            Ok(Some(_)) => todo.push(*t),
            Ok(None) => missing.push(*t),
            Err(e) => {
                add(StepResult::Failed, format!("{t}: {e}"));
                return;
            }
        }
    }
    if !missing.is_empty() {
        add(
            StepResult::Failed,
            format!(
                "{} not installed: install the cairn package (units in /usr/lib/systemd/system)",
                missing.join(", ")
            ),
        );
        return;
    }
    if todo.is_empty() {
        add(
            StepResult::AlreadyDone,
            format!("{} enabled and active", ok.join(", ")),
        );
        return;
    }
    if dry_run {
        add(
            StepResult::Would,
            format!("systemctl enable --now {}", todo.join(" ")),
        );
        return;
    }
    let mut not_running = Vec::new();
    let result = sd.enable_unit_files(&todo).and_then(|()| {
        for t in &todo {
            // A start job that ends does not mean the unit runs (a daemon may exit at
            // once, e.g. on a configuration error): its state says.
            let state = sd.start_unit(t, std::time::Duration::from_secs(30))?;
            if !state.is_active() {
                not_running.push(format!(
                    "{t} is {} ({}) after its start: see `journalctl -u {t}`",
                    state.active_state, state.sub_state
                ));
            }
        }
        Ok(())
    });
    match result {
        Ok(()) if not_running.is_empty() => add(
            StepResult::Done,
            format!("enabled and started {}", todo.join(", ")),
        ),
        Ok(()) => add(
            StepResult::Failed,
            format!(
                "enabled {}, but {}",
                todo.join(", "),
                not_running.join("; ")
            ),
        ),
        Err(e) => add(StepResult::Failed, e.to_string()),
    }
}

fn step_smoke(s: &mut Steps, cfg: &Config, config_path: &Path, dry_run: bool) {
    if cfg.preflight.is_none() {
        s.add("preflight", StepResult::Skipped, "no [preflight] section");
        return;
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("cairn-preflight")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("cairn-preflight"));
    if dry_run {
        s.add(
            "preflight",
            StepResult::Would,
            format!(
                "run `{} --config {}` as a smoke test",
                bin.display(),
                config_path.display()
            ),
        );
        return;
    }
    let out = Command::new(&bin)
        .arg("--config")
        .arg(config_path)
        .arg("--json")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            s.add("preflight", StepResult::Done, "cairn-preflight passed")
        }
        Ok(o) => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let why = v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&o.stderr).trim().to_string());
            s.add(
                "preflight",
                StepResult::Failed,
                format!(
                    "cairn-preflight exited {}: {why}",
                    o.status.code().unwrap_or(-1)
                ),
            )
        }
        Err(e) => s.add(
            "preflight",
            StepResult::Failed,
            format!("cannot run {}: {e}", bin.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_directory_is_writable_only_through_the_class_that_applies() {
        let cairn = (995, 995);
        assert!(writable_by(995, 0, 0o755, cairn), "owner");
        assert!(
            !writable_by(995, 995, 0o575, cairn),
            "owner without w: group bits ignored"
        );
        assert!(writable_by(0, 995, 0o775, cairn), "group");
        assert!(
            !writable_by(0, 995, 0o757, cairn),
            "group without w: other bits ignored"
        );
        assert!(
            !writable_by(0, 0, 0o755, cairn),
            "node_exporter's usual root 0755"
        );
        assert!(writable_by(0, 0, 0o1777, cairn), "world-writable");
    }

    #[test]
    fn the_rule_names_the_user_and_the_escaped_mount_point() {
        let r = render_sudoers(SUDOERS_TEMPLATE, "cairn", Path::new("/srv/my backup,1"));
        assert!(
            r.contains("cairn ALL=(root) NOPASSWD: /usr/bin/mount /srv/my\\ backup\\,1"),
            "{r}"
        );
        assert!(!r.contains('@'), "every placeholder replaced: {r}");
    }

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cairn.conf");
        fs::write(&p, text).unwrap();
        Config::load(Some(&p)).unwrap()
    }

    #[test]
    fn the_dropin_carries_what_only_the_config_knows() {
        let cfg = config("[repository]\npath = \"/srv/my backup/100%\"\nkey_file = /k\n");
        let d =
            repository_dropin(&cfg, Path::new(crate::config::DEFAULT_PATH), "cairn", None).unwrap();
        assert!(
            d.contains("\nReadWritePaths=\"/srv/my backup/100%%\"\n"),
            "quoted, % doubled: {d}"
        );
        assert!(
            !d.contains("Credential"),
            "a key file needs no credential: {d}"
        );
        assert!(!d.contains("User="), "{d}");
        assert!(!d.contains("CAIRN_CONFIG"), "{d}");

        let cfg = config("[repository]\npath = /srv/r\nkey_credential = cairn-test-none.key\n");
        let d = repository_dropin(&cfg, Path::new("/opt/c.conf"), "backup", Some("disk")).unwrap();
        assert!(d.contains("\nReadWritePaths=/srv/r\n"), "{d}");
        assert!(
            d.contains("\nLoadCredential=cairn-test-none.key:/etc/credstore/cairn-test-none.key\n"),
            "no encrypted credential exists: the plain one: {d}"
        );
        assert!(d.contains("\nUser=backup\nGroup=disk\n"), "{d}");
        assert!(
            d.contains("\nEnvironment=CAIRN_CONFIG=/opt/c.conf\n"),
            "{d}"
        );
        assert!(repository_dropin(
            &config("[alert]\nmail_to = root\n"),
            Path::new("/c"),
            "cairn",
            None
        )
        .is_none());
    }

    #[test]
    fn unit_words_are_quoted_only_when_needed() {
        assert_eq!(unit_quote("/srv/backup"), "/srv/backup");
        assert_eq!(unit_quote("a b"), "\"a b\"");
        assert_eq!(unit_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(unit_quote("50%"), "50%%");
    }
}
