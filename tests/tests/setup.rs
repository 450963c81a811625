//! `cairn setup` on a clean system: in a private mount namespace whose `/etc` is a
//! throw-away overlay (users, fstab, sudoers and credentials are written there, never to
//! the host's `/etc`), with a real loop-device backup disk, real `useradd`, `visudo` and
//! `systemd-creds`. State and cache go to the test's temporary directory. Each test uses
//! a user name of its own, so a `cairn` user on the machine cannot make "clean" untrue.
//!
//! Needs root; prints `SKIPPED:` without it.

use std::path::{Path, PathBuf};
use std::process::Output;

use cairn_tests::disk::{self, Disk, Fs};
use cairn_tests::nsrun::{self, Ns};
use cairn_tests::Bins;
use serde_json::Value;

struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    mnt: PathBuf,
    conf: PathBuf,
    user: String,
    bins: Bins,
    disk: Disk,
}

fn case() -> Option<Case> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: setup tests need root (users, mounts, sudoers)");
        return None;
    }
    nsrun::available().expect("mount namespaces");
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    for tool in ["/usr/sbin/useradd", "/usr/sbin/visudo"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing (CI installs sudo and passwd, see .ci/run)"
        );
    }
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mnt = root.join("backup");
    std::fs::create_dir(&mnt).unwrap();
    let uuid = disk::random_uuid();
    let disk = Disk::create_attached(
        &root,
        Fs::Ext4,
        64,
        &disk::unique_label("setup", Fs::Ext4),
        &uuid,
    )
    .unwrap();
    // A name no other test (and no real user) has: `cst` and 8 random hex digits.
    let user = format!("cst{}", &disk::random_uuid().replace('-', "")[..8]);
    let conf = root.join("cairn.conf");
    let c = Case {
        mnt,
        conf,
        user,
        bins: Bins::locate(),
        disk,
        root,
        _dir: dir,
    };
    c.config("key_file = /etc/cairn/repo.key", "");
    Some(c)
}

impl Case {
    fn config(&self, key: &str, alert: &str) {
        let text = format!(
            "[repository]\npath = {mnt}/repo\n{key}\n\n[preflight]\nmount = {mnt}\nuuid = {uuid}\n\
             owner = {user}\n\n[alert]\nmail_to = root\n{alert}\n",
            mnt = self.mnt.display(),
            uuid = self.disk.uuid(),
            user = self.user,
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    fn setup(&self, ns: &Ns, args: &[&str]) -> (i32, Value, String) {
        let out: Output = ns
            .command(self.bins.path("cairn"))
            .arg("setup")
            .args(args)
            .arg("--json")
            .arg("--config")
            .arg(&self.conf)
            .env("STATE_DIRECTORY", self.root.join("state"))
            .env("CACHE_DIRECTORY", self.root.join("cache"))
            .env("CAIRN_NO_DBUS", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON from cairn setup ({e}): {} / {stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code().unwrap_or(-1), v, stderr)
    }
}

/// step name → (result, detail)
fn steps(v: &Value) -> Vec<(String, String, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
                s["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn step(v: &Value, name: &str) -> (String, String) {
    steps(v)
        .into_iter()
        .find(|s| s.0 == name)
        .map(|s| (s.1, s.2))
        .unwrap_or_else(|| panic!("no step {name} in {v:#}"))
}

fn user_exists(ns: &Ns, user: &str) -> bool {
    ns.sh(&format!("getent passwd {user}"))
        .unwrap()
        .status
        .success()
}

#[test]
fn a_dry_run_on_a_clean_system_prints_the_plan_and_changes_nothing() {
    let Some(c) = case() else { return };
    let ns = Ns::start().unwrap();
    // Human output: one line per step with the exact plan.
    let out = ns
        .command(c.bins.path("cairn"))
        .args(["setup", "--dry-run", "--config"])
        .arg(&c.conf)
        .env("STATE_DIRECTORY", c.root.join("state"))
        .env("CACHE_DIRECTORY", c.root.join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nothing is changed"), "{text}");
    assert!(text.contains("useradd --system"), "{text}");
    assert!(text.contains(&c.user), "{text}");
    assert!(
        text.contains(&format!("UUID={}", c.disk.uuid())),
        "the fstab line: {text}"
    );
    assert!(
        text.contains(&format!(
            "{} ALL=(root) NOPASSWD: /usr/bin/mount {}",
            c.user,
            c.mnt.display()
        )),
        "the sudoers rule: {text}"
    );

    let (code, v, err) = c.setup(&ns, &["--dry-run"]);
    assert_eq!(code, 0, "{v:#} {err}");
    for (name, want) in [
        ("user", "would"),
        ("directories", "would"),
        ("mount", "would"),
        ("fstab", "would"),
        ("sudoers", "would"),
        ("key", "would"),
        ("init", "would"),
        ("preflight", "would"),
    ] {
        assert_eq!(step(&v, name).0, want, "{name}: {v:#}");
    }
    assert!(
        ns.etc_changes().unwrap().is_empty(),
        "{:?}",
        ns.etc_changes()
    );
    assert!(!user_exists(&ns, &c.user));
    assert!(!ns.is_mounted(&c.mnt).unwrap());
    assert!(!c.root.join("state").exists() && !c.root.join("cache").exists());
}

#[test]
fn setup_twice_does_everything_once() {
    let Some(c) = case() else { return };
    let ns = Ns::start().unwrap();
    let (code, v, err) = c.setup(&ns, &[]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    for name in [
        "user",
        "directories",
        "mount",
        "fstab",
        "sudoers",
        "key",
        "init",
        "preflight",
    ] {
        assert_eq!(step(&v, name).0, "done", "{name}: {v:#}");
    }
    assert_eq!(step(&v, "mta").0, "already_done");
    assert!(user_exists(&ns, &c.user));
    assert!(ns.is_mounted(&c.mnt).unwrap());
    let fstab = ns.read_string("/etc/fstab").unwrap();
    assert!(
        fstab.contains(&format!("UUID={} {}", c.disk.uuid(), c.mnt.display())),
        "{fstab}"
    );
    let rule = ns.file_state("/etc/sudoers.d/cairn").unwrap().unwrap();
    assert_eq!(rule.mode & 0o7777, 0o440);
    let key = ns.file_state("/etc/cairn/repo.key").unwrap().unwrap();
    assert_eq!(key.mode & 0o7777, 0o640);
    // The repository exists, belongs to the user, and opens with the generated key.
    let repo = c.mnt.join("repo");
    let owner = ns
        .sh_ok(&format!("stat -c %U {}/config", repo.display()))
        .unwrap();
    assert_eq!(owner.trim(), c.user);
    let o = ns
        .command(c.bins.path("cairn"))
        .args(["snapshots", "--config"])
        .arg(&c.conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let state = c.root.join("state");
    let uid = ns.sh_ok(&format!("id -u {}", c.user)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap()).to_string(),
        uid.trim()
    );

    let etc_before = ns.etc_changes().unwrap();
    let written = || -> Vec<_> {
        [
            "/etc/fstab",
            "/etc/sudoers.d/cairn",
            "/etc/passwd",
            "/etc/cairn/repo.key",
        ]
        .iter()
        .map(|f| ns.file_state(f).unwrap())
        .collect()
    };
    let files = written();
    let (code, v, err) = c.setup(&ns, &[]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    for (name, result, detail) in steps(&v) {
        match name.as_str() {
            "preflight" => assert_eq!(result, "done", "the smoke test runs every time"),
            "timers" => assert_eq!(result, "skipped", "{detail}"),
            _ => assert_eq!(result, "already_done", "{name}: {detail}"),
        }
    }
    assert_eq!(ns.etc_changes().unwrap(), etc_before, "no new file in /etc");
    let after = written();
    assert_eq!(after, files, "nothing rewritten");
}

#[test]
fn a_broken_sudoers_template_is_refused_and_sudoers_d_is_untouched() {
    let Some(c) = case() else { return };
    let ns = Ns::start().unwrap();
    let template = c.root.join("broken.in");
    std::fs::write(
        &template,
        "@USER@ ALL=(root NOPASSWD /usr/bin/mount @MOUNT@\n",
    )
    .unwrap();
    let listing = |ns: &Ns| {
        let mut v: Vec<_> = std::fs::read_dir(ns.path("/etc/sudoers.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&ns);
    let t = template.to_str().unwrap();
    let (code, v, _) = c.setup(&ns, &["--dry-run", "--sudoers-template", t]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(step(&v, "sudoers").0, "failed");
    let (code, v, _) = c.setup(&ns, &["--sudoers-template", t]);
    assert_eq!(code, 2, "{v:#}");
    let (result, detail) = step(&v, "sudoers");
    assert_eq!(result, "failed");
    assert!(
        detail.contains("invalid") && detail.contains("unchanged"),
        "{detail}"
    );
    assert_eq!(listing(&ns), before, "no file left in /etc/sudoers.d");
    assert!(
        !ns.etc_changes()
            .unwrap()
            .iter()
            .any(|ch| ch.path.starts_with("sudoers.d") && ch.path != Path::new("sudoers.d")),
        "{:?}",
        ns.etc_changes()
    );
    // The other steps went ahead.
    assert_eq!(step(&v, "init").0, "done", "{v:#}");
}

#[test]
fn a_missing_mta_is_reported_with_the_fix() {
    let Some(c) = case() else { return };
    let ns = Ns::start().unwrap();
    c.config(
        "key_file = /etc/cairn/repo.key",
        "sendmail = /nonexistent/sendmail",
    );
    let (code, v, _) = c.setup(&ns, &["--dry-run"]);
    assert_eq!(code, 2);
    let (result, detail) = step(&v, "mta");
    assert_eq!(result, "failed");
    assert!(detail.contains("--install-mta"), "{detail}");
    let (code, v, _) = c.setup(&ns, &["--dry-run", "--install-mta"]);
    assert_eq!(code, 0, "{v:#}");
    let (result, detail) = step(&v, "mta");
    assert_eq!(result, "would");
    assert!(detail.contains("exim4-daemon-light"), "{detail}");
    assert!(detail.contains("local delivery only"), "{detail}");
}

#[test]
fn a_credential_key_is_encrypted_with_systemd_creds() {
    let Some(c) = case() else { return };
    if !Path::new("/usr/bin/systemd-creds").exists() {
        eprintln!("SKIPPED: systemd-creds is not installed");
        return;
    }
    let ns = Ns::start().unwrap();
    c.config("key_credential = cairn-repository-key", "");
    let (code, v, err) = c.setup(&ns, &[]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    let (result, detail) = step(&v, "key");
    assert_eq!(result, "done");
    assert!(
        detail.contains("/etc/credstore.encrypted/cairn-repository-key"),
        "{detail}"
    );
    let cred = ns
        .read("/etc/credstore.encrypted/cairn-repository-key")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&cred)
            .chars()
            .all(|ch| ch.is_ascii_hexdigit() || ch == '\n'),
        "the credential is not the plain key"
    );
    // What a unit's LoadCredentialEncrypted= would hand the service opens the repository.
    let creds = c.root.join("creds");
    std::fs::create_dir(&creds).unwrap();
    ns.sh_ok(&format!(
        "systemd-creds decrypt --name=cairn-repository-key \
         /etc/credstore.encrypted/cairn-repository-key {}/cairn-repository-key",
        creds.display()
    ))
    .unwrap();
    let o = ns
        .command(c.bins.path("cairn"))
        .args(["snapshots", "--config"])
        .arg(&c.conf)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No plain copy of the key was left behind.
    let leftovers = ns
        .sh_ok("ls -d /tmp/cairn-setup-* 2>/dev/null || true")
        .unwrap();
    assert!(leftovers.trim().is_empty(), "{leftovers}");
    let (code, v, _) = c.setup(&ns, &[]);
    assert_eq!(code, 0);
    assert_eq!(step(&v, "key").0, "already_done");
}
