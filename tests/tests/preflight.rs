//! `cairn-preflight` on real filesystems: ext4 and xfs images with chosen LABEL/UUID on
//! loop devices, mounted (or not) in a private mount namespace whose `/etc` is a
//! throw-away overlay, so preflight really mounts and really rewrites `/etc/fstab`
//! without touching the host; alerts go through the real local MTA (exim4, local
//! delivery) into a mailbox the test reads.
//!
//! Every test needs root (mounts, loop devices, the mailbox) and prints `SKIPPED:` and
//! returns without it. With root, a missing MTA or mkfs is a failure that says what to
//! install: CI installs them (`.ci/run`), so those tests never silently stop running.
//!
//! Each test's mails are told apart by its mount point, a unique temporary path that
//! every preflight mail names.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cairn_tests::disk::{self, Disk, Fs};
use cairn_tests::mta::{Mailbox, Mta};
use cairn_tests::nsrun::{self, Ns};
use cairn_tests::Bins;
use serde_json::Value;

const MAIL_WAIT: Duration = Duration::from_secs(20);

/// One test's scratch space: mount point, state directory, config file.
struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    mnt: PathBuf,
    state: PathBuf,
    conf: PathBuf,
    bins: Bins,
}

fn case(fs: &[Fs]) -> Option<Case> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: preflight tests need root (loop devices, mounts)");
        return None;
    }
    nsrun::available().expect("mount namespaces");
    disk::available(fs).expect("mkfs for the test disks (see .ci/run)");
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mnt = root.join("backup");
    std::fs::create_dir(&mnt).unwrap();
    Some(Case {
        mnt,
        state: root.join("state"),
        conf: root.join("cairn.conf"),
        root,
        _dir: dir,
        bins: Bins::locate(),
    })
}

fn mailbox() -> Mailbox {
    Mta::available().expect("the local MTA (exim4, see .ci/run)");
    Mta::mailbox().expect("the test mailbox")
}

impl Case {
    /// Write the config: `[preflight] mount = …` plus `preflight`, and `[alert]` to the
    /// test mailbox (with `extra` alert keys), and `rest` verbatim.
    fn config(&self, preflight: &str, alert: Option<&str>, rest: &str) {
        let mut text = format!("[preflight]\nmount = {}\n{preflight}\n", self.mnt.display());
        if let Some(extra) = alert {
            text.push_str(&format!(
                "[alert]\nmail_to = {}\n{extra}\n",
                cairn_tests::mta::ADDRESS
            ));
        }
        text.push_str(rest);
        std::fs::write(&self.conf, text).unwrap();
    }

    fn disk(&self, fs: Fs, label: &str, uuid: &str) -> Disk {
        let size = fs.min_size_mib().max(64);
        Disk::create_attached(&self.root, fs, size, label, uuid).unwrap()
    }

    /// A fresh ext4 disk (label from `tag`) mounted with `opts` on the mount point in a new
    /// namespace. Bind the results in this order (`let (uuid, _disk, ns) = …`), so the
    /// namespace goes before the disk.
    fn mounted(&self, tag: &str, opts: &str) -> (String, Disk, Ns) {
        let uuid = disk::random_uuid();
        let d = self.disk(Fs::Ext4, &disk::unique_label(tag, Fs::Ext4), &uuid);
        let ns = Ns::start().unwrap();
        mount_in(&ns, &d, &self.mnt, opts);
        (uuid, d, ns)
    }

    /// Run cairn-preflight (with `--json` and `args`) in `ns`.
    fn preflight(&self, ns: &Ns, args: &[&str]) -> Run {
        let out = ns
            .command(self.bins.path("cairn-preflight"))
            .arg("--config")
            .arg(&self.conf)
            .arg("--json")
            .args(args)
            .env("STATE_DIRECTORY", &self.state)
            .env("CAIRN_NO_DBUS", "1")
            .env_remove("CAIRN_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run::new(out)
    }

    /// Run cairn-preflight (`--json`) in `ns` as the user `nobody`.
    fn preflight_as_nobody(&self, ns: &Ns) -> Run {
        let out = ns
            .command("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(self.bins.path("cairn-preflight"))
            .arg("--json")
            .arg("--config")
            .arg(&self.conf)
            .env("STATE_DIRECTORY", &self.state)
            .env("CAIRN_NO_DBUS", "1")
            .output()
            .unwrap();
        Run::new(out)
    }

    fn status(&self) -> Value {
        let p = self.state.join("status/preflight.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    /// The needle that tells this test's mails apart.
    fn needle(&self) -> String {
        self.mnt.display().to_string()
    }
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

impl Run {
    fn new(out: Output) -> Run {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "preflight printed no JSON ({e}): stdout {:?}, stderr {stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Run {
            code: out.status.code().unwrap_or(-1),
            json,
            stderr,
        }
    }

    #[track_caller]
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; JSON {:#}\nstderr:\n{}",
            self.json, self.stderr
        );
        self
    }

    /// The verdict of the last check with this name.
    fn verdict(&self, name: &str) -> String {
        self.check(name)["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn check(&self, name: &str) -> Value {
        self.json["checks"]
            .as_array()
            .and_then(|c| c.iter().rev().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {:#}", self.json))
    }

    fn error(&self) -> String {
        self.json["error"].as_str().unwrap_or_default().to_string()
    }
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mount_in(ns: &Ns, d: &Disk, target: &Path, opts: &str) {
    ns.sh_ok(&format!(
        "mount -o {opts} {} {}",
        d.device().display(),
        target.display()
    ))
    .unwrap();
}

#[test]
fn the_right_disk_mounted_passes_and_nobody_is_mailed() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let uuid = disk::random_uuid();
    let label = disk::unique_label("ok", Fs::Ext4);
    let d = c.disk(Fs::Ext4, &label, &uuid);
    let ns = Ns::start().unwrap();
    mount_in(&ns, &d, &c.mnt, "rw");
    // A real repository on the disk, so the repository check has something to find.
    let key = c.root.join("key");
    let repo = c.mnt.join("repo");
    c.config(
        &format!("uuid = {uuid}\nlabel = {label}\nfs_type = ext4\nmin_free = 1MiB\nowner = root"),
        Some(""),
        &format!(
            "[repository]\npath = {}\nkey_file = {}\n",
            repo.display(),
            key.display()
        ),
    );
    let cairn = c.bins.path("cairn");
    for args in [vec!["key", "generate", key.to_str().unwrap()], vec!["init"]] {
        let o = ns
            .command(&cairn)
            .args(&args)
            .arg("--config")
            .arg(&c.conf)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let before = names(&ns.path(&repo));

    let r = c.preflight(&ns, &[]);
    r.expect(0);
    for check in [
        "mount",
        "identity",
        "writable",
        "owner",
        "space",
        "repository",
    ] {
        assert_eq!(r.verdict(check), "ok", "{check}: {:#}", r.json);
    }
    assert!(r.check("identity")["detail"]
        .as_str()
        .unwrap()
        .contains(&uuid));
    assert_eq!(names(&ns.path(&repo)), before, "the probe file is gone");
    let st = c.status();
    assert_eq!(st["result"], "success");
    assert_eq!(st["exit_code"], 0);
    mail.expect_none(&c.needle(), Duration::from_secs(1))
        .unwrap();
}

#[test]
fn the_right_disk_not_mounted_is_mounted_by_preflight() {
    let Some(c) = case(&[Fs::Xfs]) else { return };
    let uuid = disk::random_uuid();
    let label = disk::unique_label("mnt", Fs::Xfs);
    let _d = c.disk(Fs::Xfs, &label, &uuid);
    let ns = Ns::start().unwrap();
    c.config(&format!("uuid = {uuid}\nfs_type = xfs"), None, "");
    assert!(!ns.is_mounted(&c.mnt).unwrap());

    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("mount"), "repaired", "{:#}", r.json);
    assert_eq!(r.verdict("identity"), "ok");
    assert!(ns.is_mounted(&c.mnt).unwrap(), "preflight mounted the disk");
    let fs = ns
        .sh_ok(&format!("findmnt -n -o FSTYPE,UUID {}", c.mnt.display()))
        .unwrap();
    assert!(fs.contains("xfs") && fs.contains(&uuid), "{fs}");
    assert!(
        r.stderr.contains("mounted"),
        "the repair is logged: {}",
        r.stderr
    );
    assert!(
        !nsrun::host_is_mounted(&c.mnt).unwrap(),
        "the mount stayed in the test's namespace"
    );
    // Mounted now: the next run finds it as it is.
    let again = c.preflight(&ns, &[]);
    again.expect(0);
    assert_eq!(again.verdict("mount"), "ok");
}

#[test]
fn an_impostor_disk_is_refused_and_nothing_is_written_to_it() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let wanted = disk::random_uuid();
    // Same label, other UUID: the label alone must not be trusted over the UUID.
    let label = disk::unique_label("imp", Fs::Ext4);
    let impostor = c.disk(Fs::Ext4, &label, &disk::random_uuid());
    let ns = Ns::start().unwrap();
    mount_in(&ns, &impostor, &c.mnt, "rw");
    let before = names(&ns.path(&c.mnt));
    c.config(&format!("uuid = {wanted}\nlabel = {label}"), Some(""), "");

    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("identity"), "failed", "{:#}", r.json);
    assert!(r.error().contains("different disk"), "{}", r.error());
    assert!(r.error().contains(&wanted), "{}", r.error());
    for later in ["writable", "space", "repository"] {
        assert!(
            !r.json["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == later),
            "{later} must not run on an impostor"
        );
    }
    assert_eq!(
        names(&ns.path(&c.mnt)),
        before,
        "nothing was created on the impostor"
    );
    assert_eq!(c.status()["exit_code"], 2);
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.subject().contains("preflight FAILED"), "{}", m.subject());
    assert!(m.body().contains("different disk"), "{}", m.body());
    assert!(m.body().contains("What to do:"), "{}", m.body());
}

#[test]
fn a_plain_directory_on_the_root_filesystem_is_refused() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let ns = Ns::start().unwrap();
    c.config(
        &format!("uuid = {}\nauto_mount = no", disk::random_uuid()),
        Some(""),
        "",
    );
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("mount"), "failed");
    assert!(r.error().contains("plain directory"), "{}", r.error());
    assert!(
        names(&c.mnt).is_empty(),
        "nothing was written to the bare mount point"
    );
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.body().contains("plain directory"), "{}", m.body());
}

#[test]
fn a_disk_that_is_not_attached_fails_and_fstab_stays_byte_for_byte() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let original = b"# test fstab\nproc /proc proc defaults 0 0\n".to_vec();
    let ns = Ns::builder().etc_file("fstab", &original).start().unwrap();
    let before = ns.file_state("/etc/fstab").unwrap().unwrap();
    let uuid = disk::random_uuid();
    c.config(&format!("uuid = {uuid}\nensure_fstab = yes"), Some(""), "");

    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert!(r.error().contains("not attached"), "{}", r.error());
    // The line for a disk nobody can find would fail `findmnt --verify`: not written.
    assert_eq!(r.verdict("fstab"), "warning", "{:#}", r.json);
    let why = r.check("fstab")["detail"].as_str().unwrap().to_string();
    assert!(why.contains("invalid") && why.contains("findmnt"), "{why}");
    assert_eq!(ns.file_state("/etc/fstab").unwrap().unwrap(), before);
    let changes = ns.etc_changes().unwrap();
    assert!(
        changes.iter().all(|ch| ch.path == Path::new("fstab")),
        "no backup or temporary file left in /etc: {changes:?}"
    );
    assert!(names(&c.mnt).is_empty());
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.body().contains(&uuid), "{}", m.body());
}

#[test]
fn a_missing_fstab_line_is_added_valid_and_only_once() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let original = b"# test fstab\nproc /proc proc defaults 0 0".to_vec();
    let uuid = disk::random_uuid();
    let d = c.disk(Fs::Ext4, &disk::unique_label("fst", Fs::Ext4), &uuid);
    let ns = Ns::builder().etc_file("fstab", &original).start().unwrap();
    mount_in(&ns, &d, &c.mnt, "rw");
    c.config(&format!("uuid = {uuid}\nensure_fstab = yes"), None, "");

    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("fstab"), "repaired", "{:#}", r.json);
    let fstab = ns.read_string("/etc/fstab").unwrap();
    let line = format!(
        "UUID={uuid} {} ext4 defaults,nofail,x-systemd.device-timeout=30 0 2",
        c.mnt.display()
    );
    assert!(
        fstab.starts_with("# test fstab\nproc /proc proc defaults 0 0\n"),
        "{fstab}"
    );
    assert!(fstab.ends_with(&format!("{line}\n")), "{fstab}");
    let verify = ns.sh("findmnt --verify --tab-file /etc/fstab").unwrap();
    let verify_text = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(
        !verify_text.contains(&format!("{}\n   [E]", c.mnt.display())),
        "the new line verifies: {verify_text}"
    );
    let backups: Vec<_> = names(&ns.path("/etc"))
        .into_iter()
        .filter(|n| n.starts_with("fstab.cairn-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(ns.read(format!("/etc/{}", backups[0])).unwrap(), original);

    let before = ns.file_state("/etc/fstab").unwrap().unwrap();
    let again = c.preflight(&ns, &[]);
    again.expect(0);
    assert_eq!(again.verdict("fstab"), "ok");
    assert_eq!(
        ns.file_state("/etc/fstab").unwrap().unwrap(),
        before,
        "left alone"
    );
}

#[test]
fn a_read_only_mount_is_refused() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let (uuid, _disk, ns) = c.mounted("ro", "ro");
    c.config(&format!("uuid = {uuid}"), Some(""), "");
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("writable"), "failed");
    assert!(r.error().contains("read-only"), "{}", r.error());
    mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
}

#[test]
fn below_min_free_is_refused() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let (uuid, _disk, ns) = c.mounted("full", "rw");
    disk::fill_until_free_below(&ns.path(&c.mnt), 4 << 20).unwrap();
    c.config(&format!("uuid = {uuid}\nmin_free = 8MiB"), Some(""), "");
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("space"), "failed");
    assert!(r.error().contains("min_free"), "{}", r.error());
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.body().contains("min_free"), "{}", m.body());

    // A percentage is of the disk's size: 1% of 64 MiB fits.
    c.config(&format!("uuid = {uuid}\nmin_free = 1%"), None, "");
    c.preflight(&ns, &[]).expect(0);
}

/// A status file for the snapshot stage whose last success is `age` ago.
fn snapshot_status(state: &Path, age: chrono::Duration) {
    let then = chrono::Utc::now() - age;
    let st = serde_json::json!({
        "stage": "snapshot", "run_id": "0123456789abcdef0123456789abcdef",
        "host": "h", "pid": 1, "version": "0.1.0",
        "started": then, "finished": then, "result": "success", "exit_code": 0,
        "summary": "", "figures": null, "last_success": then, "first_started": then,
    });
    std::fs::create_dir_all(state.join("status")).unwrap();
    std::fs::write(state.join("status/snapshot.json"), st.to_string()).unwrap();
}

#[test]
fn a_stale_pipeline_sends_a_stale_alert_even_when_the_disk_is_fine() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let (uuid, _disk, ns) = c.mounted("stl", "rw");
    c.config(&format!("uuid = {uuid}\nmax_age = 2d"), Some(""), "");

    snapshot_status(&c.state, chrono::Duration::hours(20));
    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("staleness"), "ok");
    assert!(r.json["stale"].is_null());
    mail.expect_none(&c.needle(), Duration::from_secs(1))
        .unwrap();

    snapshot_status(&c.state, chrono::Duration::days(16));
    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("staleness"), "failed");
    assert!(
        r.json["stale"].as_str().unwrap().contains("16d"),
        "{:#}",
        r.json
    );
    assert!(
        r.stderr.contains("backups are not happening"),
        "{}",
        r.stderr
    );
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.subject().contains("STALE"), "{}", m.subject());
    assert!(m.body().contains("16d"), "{}", m.body());
}

#[test]
fn an_alert_that_cannot_be_delivered_is_exit_5_unless_worse_failed() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let (uuid, _disk, ns) = c.mounted("und", "rw");
    // No MTA at all: neither a sendmail nor (whatever runs on this host) the SMTP fallback.
    let nomta = "sendmail = /nonexistent/sendmail\nsmtp = no";
    snapshot_status(&c.state, chrono::Duration::days(3));
    c.config(&format!("uuid = {uuid}\nmax_age = 1d"), Some(nomta), "");
    let r = c.preflight(&ns, &[]);
    r.expect(5);
    assert_eq!(r.json["mail"], "failed");
    assert!(r.stderr.contains("NOT delivered"), "{}", r.stderr);
    // The disk is wrong and nobody can be told: still 2, the worse news.
    c.config(&format!("uuid = {}", disk::random_uuid()), Some(nomta), "");
    c.preflight(&ns, &[]).expect(2);
}

#[test]
fn a_dry_run_says_what_it_would_do_and_does_nothing() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let uuid = disk::random_uuid();
    let _d = c.disk(Fs::Ext4, &disk::unique_label("dry", Fs::Ext4), &uuid);
    let ns = Ns::builder()
        .etc_file("fstab", b"# empty\n")
        .start()
        .unwrap();
    let before = ns.file_state("/etc/fstab").unwrap().unwrap();
    c.config(&format!("uuid = {uuid}\nensure_fstab = yes"), Some(""), "");
    let out = ns
        .command(c.bins.path("cairn-preflight"))
        .args(["--dry-run", "--config"])
        .arg(&c.conf)
        .env("STATE_DIRECTORY", &c.state)
        .env("CAIRN_NO_DBUS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("would mount"), "{stdout}");
    assert!(
        stdout.contains(&format!("would append to /etc/fstab: UUID={uuid}")),
        "{stdout}"
    );
    assert!(!ns.is_mounted(&c.mnt).unwrap());
    assert_eq!(ns.file_state("/etc/fstab").unwrap().unwrap(), before);
    assert!(
        !c.state.join("status/preflight.json").exists(),
        "a dry run is not a run"
    );
    mail.expect_none(&c.needle(), Duration::from_secs(1))
        .unwrap();
}

#[test]
fn the_owner_is_checked_and_fixed_only_when_asked() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let (uuid, _disk, ns) = c.mounted("own", "rw");
    let repo = c.mnt.join("repo");
    ns.sh_ok(&format!(
        "mkdir -p {0}/data {0}/locks && touch {0}/config",
        repo.display()
    ))
    .unwrap();
    let rest = format!("[repository]\npath = {}\n", repo.display());
    c.config(&format!("uuid = {uuid}\nowner = nobody"), None, &rest);
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("owner"), "failed");
    assert!(r.error().contains("fix_owner"), "{}", r.error());

    c.config(
        &format!("uuid = {uuid}\nowner = nobody\nfix_owner = yes"),
        None,
        &rest,
    );
    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("owner"), "repaired");
    let owners = ns
        .sh_ok(&format!(
            "find {} -printf '%u\\n' | sort -u",
            repo.display()
        ))
        .unwrap();
    assert_eq!(
        owners.trim(),
        "nobody",
        "the whole repository changed hands"
    );
}

#[test]
fn not_root_it_mounts_through_the_sudo_rule() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    if !Path::new("/usr/bin/sudo").exists() {
        panic!("sudo is not installed (CI installs it, see .ci/run)");
    }
    let uuid = disk::random_uuid();
    let d = c.disk(Fs::Ext4, &disk::unique_label("sudo", Fs::Ext4), &uuid);
    let fstab = format!("UUID={uuid} {} ext4 defaults,nofail 0 2\n", c.mnt.display());
    let rule = cairn::setup::render_sudoers(cairn::setup::SUDOERS_TEMPLATE, "nobody", &c.mnt);
    let ns = Ns::builder()
        .etc_file("fstab", fstab)
        .etc_file_mode("sudoers.d/cairn-test", rule, 0o440)
        .start()
        .unwrap();
    // udev does not run here, so the /dev/disk/by-uuid link it would make is made by
    // hand (a stand-in for udev), on a tmpfs private to the namespace.
    let dev = d.device().display().to_string();
    ns.sh_ok(&format!(
        "mkdir -p /dev/disk && mount -t tmpfs tmpfs /dev/disk && mkdir /dev/disk/by-uuid \
         && ln -s {dev} /dev/disk/by-uuid/{uuid}"
    ))
    .unwrap();
    std::fs::create_dir_all(&c.state).unwrap();
    ns.sh_ok(&format!(
        "chown -R nobody {} {}",
        c.state.display(),
        c.root.display()
    ))
    .unwrap();
    c.config(&format!("uuid = {uuid}"), None, "");
    let r = c.preflight_as_nobody(&ns);
    // Mounted by `sudo -n mount`; the filesystem root belongs to root, so writing needs
    // the owner put right: that the probe fails as `nobody` is the expected end.
    assert_eq!(r.verdict("mount"), "repaired", "{:#}\n{}", r.json, r.stderr);
    assert!(r.check("mount")["detail"]
        .as_str()
        .unwrap()
        .contains("sudo"));
    assert_eq!(r.verdict("identity"), "ok", "{:#}", r.json);
    assert!(ns.is_mounted(&c.mnt).unwrap());
    ns.sh_ok(&format!("chown nobody {}", c.mnt.display()))
        .unwrap();
    c.preflight_as_nobody(&ns).expect(0);
}

#[test]
fn a_missing_or_exclusively_locked_repository_is_refused() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let (uuid, _disk, ns) = c.mounted("lck", "rw");
    let repo = c.mnt.join("repo");
    let rest = format!("[repository]\npath = {}\n", repo.display());
    c.config(&format!("uuid = {uuid}"), None, &rest);
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert_eq!(r.verdict("repository"), "failed");
    assert!(r.error().contains("cairn init"), "{}", r.error());

    ns.sh_ok(&format!(
        "mkdir -p {0}/locks && touch {0}/config",
        repo.display()
    ))
    .unwrap();
    c.preflight(&ns, &[]).expect(0);
    // A live exclusive lock (this test process, this host) as `cairn prune` holds it.
    let lock = serde_json::json!({
        "host": nix::unistd::gethostname().unwrap().to_string_lossy(),
        "pid": std::process::id(), "time": chrono::Utc::now(),
        "exclusive": true, "command": "cairn prune",
    });
    std::fs::write(ns.path(repo.join("locks/00ff")), lock.to_string()).unwrap();
    let r = c.preflight(&ns, &[]);
    r.expect(2);
    assert!(r.error().contains("exclusively locked"), "{}", r.error());
    assert!(r.error().contains("cairn prune"), "{}", r.error());
    // A shared lock (a running snapshot or restore) is no reason to stop.
    let shared = serde_json::json!({
        "host": "elsewhere", "pid": 1, "time": chrono::Utc::now(),
        "exclusive": false, "command": "cairn restore",
    });
    std::fs::write(ns.path(repo.join("locks/00ff")), shared.to_string()).unwrap();
    c.preflight(&ns, &[]).expect(0);
}

#[test]
fn a_configuration_error_is_mailed_when_alert_can_be_read() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let ns = Ns::start().unwrap();
    // The repository is not on the backup disk: preflight cannot vouch for it.
    c.config(
        &format!("uuid = {}", disk::random_uuid()),
        Some(""),
        &format!("[repository]\npath = {}/elsewhere\n", c.root.display()),
    );
    let r = c.preflight(&ns, &[]);
    r.expect(1);
    assert!(
        r.error().contains("not on the backup disk"),
        "{}",
        r.error()
    );
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(
        m.subject().contains("configuration error"),
        "{}",
        m.subject()
    );
}

#[test]
fn an_fstab_line_for_another_disk_on_the_mount_point_is_a_warning() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let mail = mailbox();
    let uuid = disk::random_uuid();
    let d = c.disk(Fs::Ext4, &disk::unique_label("oth", Fs::Ext4), &uuid);
    let stale = format!("LABEL=OLDBACKUP {} ext4 defaults 0 2\n", c.mnt.display());
    let ns = Ns::builder().etc_file("fstab", &stale).start().unwrap();
    mount_in(&ns, &d, &c.mnt, "rw");
    c.config(&format!("uuid = {uuid}\nensure_fstab = yes"), Some(""), "");
    let r = c.preflight(&ns, &[]);
    r.expect(0);
    assert_eq!(r.verdict("fstab"), "warning", "{:#}", r.json);
    assert_eq!(
        ns.read_string("/etc/fstab").unwrap(),
        stale,
        "not rewritten"
    );
    let m = mail.wait_for(&c.needle(), MAIL_WAIT).unwrap();
    assert!(m.subject().contains("WARNING"), "{}", m.subject());
    assert!(m.body().contains("LABEL=OLDBACKUP"), "{}", m.body());
}

#[test]
fn a_wrong_disk_mounted_by_its_fstab_line_is_unmounted_again() {
    let Some(c) = case(&[Fs::Ext4]) else { return };
    let wanted = disk::random_uuid();
    let other = disk::random_uuid();
    let d = c.disk(Fs::Ext4, &disk::unique_label("wrg", Fs::Ext4), &other);
    // An old fstab line names the other disk; `sudo mount PATH` (as not root) follows it.
    let fstab = format!(
        "UUID={other} {} ext4 defaults,nofail 0 2\n",
        c.mnt.display()
    );
    let rule = cairn::setup::render_sudoers(cairn::setup::SUDOERS_TEMPLATE, "nobody", &c.mnt);
    let ns = Ns::builder()
        .etc_file("fstab", fstab)
        .etc_file_mode("sudoers.d/cairn-test", rule, 0o440)
        .start()
        .unwrap();
    // A stand-in for udev's /dev/disk/by-uuid links (udev does not run here).
    ns.sh_ok(&format!(
        "mkdir -p /dev/disk && mount -t tmpfs tmpfs /dev/disk && mkdir /dev/disk/by-uuid \
         && ln -s {} /dev/disk/by-uuid/{other}",
        d.device().display()
    ))
    .unwrap();
    std::fs::create_dir_all(&c.state).unwrap();
    ns.sh_ok(&format!("chown -R nobody {}", c.root.display()))
        .unwrap();
    c.config(&format!("uuid = {wanted}"), None, "");
    let r = c.preflight_as_nobody(&ns);
    r.expect(2);
    assert_eq!(r.verdict("identity"), "failed", "{:#}", r.json);
    assert!(
        r.stderr.contains("unmounted the wrong disk"),
        "{}",
        r.stderr
    );
    assert!(
        !ns.is_mounted(&c.mnt).unwrap(),
        "the wrong disk is gone again"
    );
}
