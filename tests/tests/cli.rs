//! The command line as an operator meets it: wrong keys, bad configuration, missing or
//! locked repositories, unreadable files, passphrase slots, an unprivileged user, and
//! secrets that never show up anywhere.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{code, ok, stderr, text, Env};

fn src() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let s = d.path().join("src");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("a.txt"), "alpha\n").unwrap();
    (d, s)
}

fn one_line_error(o: &std::process::Output) -> String {
    let e = stderr(o);
    assert!(
        !e.contains("panicked"),
        "a panic is not an error message:\n{e}"
    );
    let errs: Vec<&str> = e.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errs.len(), 1, "expected one error line:\n{e}");
    errs[0].to_string()
}

#[test]
fn wrong_and_missing_keys() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    // Another key file: wrong key, exit 1, one line.
    std::fs::rename(&env.key, env.path("good.key")).unwrap();
    ok(&env.cairn(&["key", "generate", env.key.to_str().unwrap()]));
    let o = env.cairn(&["snapshots"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        one_line_error(&o).contains("wrong key or passphrase"),
        "{}",
        text(&o)
    );
    let o = env.snapshot();
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_eq!(env.status("snapshot")["result"], "failure");
    // A key file that is not there: environment, exit 2.
    std::fs::remove_file(&env.key).unwrap();
    let o = env.cairn(&["snapshots"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(one_line_error(&o).contains(&env.key.display().to_string()));
    // A key file with garbage in it: named, content never echoed.
    std::fs::write(&env.key, "not-a-key-SECRETBYTES").unwrap();
    let o = env.cairn(&["snapshots"]);
    assert!(!stderr(&o).contains("SECRETBYTES"), "{}", text(&o));
    assert!(stderr(&o).contains("not a cairn key file"), "{}", text(&o));
}

#[test]
fn passphrase_slots_and_secrets_stay_secret() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let pf = env.path("pass");
    std::fs::write(&pf, "correct horse battery staple\n").unwrap();
    ok(&env.cairn(&[
        "key",
        "add",
        "--passphrase-file",
        pf.to_str().unwrap(),
        "--label",
        "people",
    ]));
    let o = env.cairn(&["key", "list", "--json"]);
    ok(&o);
    let slots: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(slots.as_array().unwrap().len(), 2);
    // A config with only a passphrase opens the repository; a wrong one does not.
    let conf2 = env.path("pass.conf");
    std::fs::write(
        &conf2,
        format!(
            "[repository]\npath = {}\npassphrase = ${{TEST_PW_VAR}}\n[sources]\npaths = {}\n",
            env.repo.display(),
            s.display()
        ),
    )
    .unwrap();
    let run = |pw: &str, bin: &str, args: &[&str]| {
        env.cmd(bin)
            .env("CAIRN_CONFIG", &conf2)
            .env("TEST_PW_VAR", pw)
            .args(args)
            .output()
            .unwrap()
    };
    ok(&run("correct horse battery staple", "cairn-snapshot", &[]));
    let o = run("hunter2-wrong", "cairn", &["snapshots"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o2 = run("hunter2-wrong", "cairn-snapshot", &[]);
    assert_eq!(code(&o2), 1);
    let status = std::fs::read_to_string(env.path("state/status/snapshot.json")).unwrap();
    for hay in [
        stderr(&o),
        stderr(&o2),
        status,
        String::from_utf8_lossy(&o.stdout).into_owned(),
    ] {
        assert!(!hay.contains("hunter2"), "a passphrase leaked: {hay}");
    }
    // CAIRN_PASSPHRASE works too. Removing a slot works; the last one never goes.
    let o = env
        .cmd("cairn")
        .env("CAIRN_CONFIG", &conf2)
        .env("TEST_PW_VAR", "")
        .env("CAIRN_PASSPHRASE", "correct horse battery staple")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let ids: Vec<String> = slots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let people = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "people")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&env.cairn(&["key", "remove", &people[..16]]));
    let last: Vec<&String> = ids.iter().filter(|i| **i != people).collect();
    let o = env.cairn(&["key", "remove", last[0]]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("last key slot"));
}

#[test]
fn bad_configuration_names_file_and_line() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let good = std::fs::read_to_string(&env.conf).unwrap();
    let cases = [
        (format!("{good}exclude_cache = yes\n"), "exclude_cache"),
        (
            format!("{good}one_file_system = perhaps\n"),
            "one_file_system",
        ),
        (good.replace("[sources]", "[sauces]"), "sauces"),
        (
            format!("{good}exclude = ${{CAIRN_TEST_SURELY_UNSET}}\n"),
            "CAIRN_TEST_SURELY_UNSET",
        ),
    ];
    for (text_, what) in cases {
        std::fs::write(&env.conf, &text_).unwrap();
        let line = text_.lines().position(|l| l.contains(what)).unwrap() + 1;
        let want = format!("{}:{line}", env.conf.display());
        for bin in ["cairn", "cairn-snapshot"] {
            let o = if bin == "cairn" {
                env.cairn(&["snapshots"])
            } else {
                env.snapshot()
            };
            assert_eq!(code(&o), 1, "{bin}: {}", text(&o));
            let e = stderr(&o);
            assert!(
                e.contains(&want) && e.contains(what),
                "{bin} must name {want} and {what}:\n{e}"
            );
        }
    }
    // A drop-in is read after the main file and its errors name the drop-in.
    std::fs::write(&env.conf, &good).unwrap();
    let dropin = env.path("cairn.conf.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("10-local.conf"),
        "[repository]\ncompression = lz4\n",
    )
    .unwrap();
    let o = env.cairn(&["snapshots"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("10-local.conf:2"), "{}", text(&o));
    // Usage errors exit 1 too; --help exits 0; global options work after the subcommand.
    std::fs::remove_file(dropin.join("10-local.conf")).unwrap();
    assert_eq!(code(&env.cairn(&["restore"])), 1);
    assert_eq!(code(&env.cairn(&["--help"])), 0);
    assert_eq!(
        code(&env.cmd("cairn-snapshot").arg("--bogus").output().unwrap()),
        1
    );
    let o = env
        .bins
        .cmd("cairn")
        .args([
            "snapshots",
            "--config",
            env.conf.to_str().unwrap(),
            "--json",
        ])
        .env("STATE_DIRECTORY", env.path("state"))
        .output()
        .unwrap();
    ok(&o);
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .is_array());
}

#[test]
fn missing_and_locked_repositories_are_environment_errors() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    // A live exclusive lock from another host: exit 2 naming the holder.
    let lock = serde_json::json!({"host": "otherhost", "pid": 4242, "time": chrono::Utc::now(), "exclusive": true, "command": "cairn prune"});
    let lp = env.repo.join("locks").join("0".repeat(32));
    std::fs::write(&lp, lock.to_string()).unwrap();
    let o = env.snapshot();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("otherhost"), "{}", text(&o));
    assert_eq!(env.status("snapshot")["exit_code"], 2);
    // `unlock` leaves a live lock alone; `unlock --all` removes it.
    ok(&env.cairn(&["unlock"]));
    assert!(lp.exists());
    ok(&env.cairn(&["unlock", "--all"]));
    ok(&env.snapshot());
    // No repository there at all.
    std::fs::rename(&env.repo, env.path("moved")).unwrap();
    let o = env.snapshot();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(stderr(&o).contains("cairn init"), "{}", text(&o));
    // init refuses a non-empty directory and an existing repository.
    std::fs::rename(env.path("moved"), &env.repo).unwrap();
    let o = env.cairn(&["init"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

/// The whole flow as an unprivileged user; an unreadable file makes an incomplete
/// snapshot (exit 3) that names it, and everything else still restores.
#[test]
fn unprivileged_user_runs_the_whole_flow() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to switch to the nobody user (setpriv)");
        return;
    }
    let (d, s) = src();
    std::fs::write(s.join("secret"), "root only").unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let chown = |p: &std::path::Path| {
        std::process::Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(p)
            .status()
            .unwrap()
    };
    chown(&s);
    chown(&home);
    std::fs::set_permissions(s.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let conf = home.join("cairn.conf");
    std::fs::write(
        &conf,
        format!(
            "[repository]\npath = {0}/repo\nkey_file = {0}/key\n[sources]\npaths = {1}\n",
            home.display(),
            s.display()
        ),
    )
    .unwrap();
    chown(&conf);
    let bins = cairn_tests::Bins::locate();
    let as_nobody = |bin: &str, args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bins.path(bin))
            .args(args);
        c.env("CAIRN_CONFIG", &conf)
            .env("STATE_DIRECTORY", home.join("state"))
            .env("CACHE_DIRECTORY", home.join("cache"))
            .env("RUNTIME_DIRECTORY", home.join("run"))
            .env("CAIRN_NO_DBUS", "1")
            .env("HOME", &home);
        c.output().unwrap()
    };
    let key = format!("{}/key", home.display());
    ok(&as_nobody("cairn", &["key", "generate", &key]));
    ok(&as_nobody("cairn", &["init"]));
    let o = as_nobody("cairn-snapshot", &["--json"]);
    assert_eq!(
        code(&o),
        3,
        "an unreadable file must make the run partial:\n{}",
        text(&o)
    );
    assert!(stderr(&o).contains("secret"), "{}", text(&o));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("state/status/snapshot.json")).unwrap())
            .unwrap();
    assert_eq!(st["result"], "partial", "{st}");
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["snapshot_record"]["complete"], false);
    assert!(out["snapshot_record"]["errors"][0]
        .as_str()
        .unwrap()
        .contains("secret"));
    let t = format!("{}/restore", home.display());
    ok(&as_nobody("cairn", &["restore", "latest", "--target", &t]));
    let restored = std::path::Path::new(&t).join(s.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored.join("a.txt")).unwrap(), b"alpha\n");
    assert!(!restored.join("secret").exists());
    ok(&as_nobody("cairn", &["check", "--read-data"]));
    let o = as_nobody("cairn", &["snapshots"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("INCOMPLETE"),
        "{}",
        text(&o)
    );
}

/// A file that grows while it is read is stored as read and reported.
#[test]
fn a_file_changing_while_read_is_reported() {
    let (_d, s) = src();
    let big = s.join("growing.log");
    std::fs::write(&big, vec![b'x'; 64 << 20]).unwrap();
    let env = Env::new(&[&s]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (big, stop) = (big.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"more\n").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let o = env.snapshot();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    ok(&o);
    assert!(
        stderr(&o).contains("changed while it was read"),
        "{}",
        text(&o)
    );
    let st = env.status("snapshot");
    assert!(
        st["figures"]["figures"]["files_changed_during_read"]
            .as_u64()
            .unwrap()
            >= 1,
        "{st}"
    );
}

#[test]
fn preflight_without_a_backup_disk_section_checks_nothing_and_passes() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let o = env
        .cmd("cairn-preflight")
        .arg("--json")
        .output()
        .expect("run cairn-preflight");
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checks"][0]["verdict"], "skipped", "{v:#}");
    assert!(
        stderr(&o).contains("no [preflight] section"),
        "said loudly: {}",
        text(&o)
    );
    assert_eq!(env.status("preflight")["result"], "success");
}

#[test]
fn write_commands_refuse_remote_and_touch_nothing() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    let before = common::listing(&env.repo);
    for args in [
        &["--remote", "prune"][..],
        &["--remote", "forget"],
        &["--remote", "unlock", "--all"],
        &["--remote", "init"],
        &["--remote", "setup", "--dry-run"],
    ] {
        let o = env.cairn(args);
        assert_eq!(code(&o), 1, "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains("--remote"), "{args:?}: {}", text(&o));
    }
    assert_eq!(
        common::listing(&env.repo),
        before,
        "the local repository is untouched"
    );
}
