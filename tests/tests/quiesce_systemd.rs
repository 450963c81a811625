//! `cairn-quiesce` on a real systemd (PID 1, booted in a container) with a real service,
//! PostgreSQL 15's `postgresql@15-main.service`.
//!
//! Through the shipped units (`cairn setup`, then `systemctl start cairn-snapshot.service`),
//! one container, in turn:
//! - without `[quiesce]`, the snapshot of PostgreSQL's data directory holds
//!   `postmaster.pid` and a `pg_control` that says "in production" (the control: these
//!   checks can fail);
//! - quiescing `postgresql@15-main` (and a unit that is not running, which stays stopped):
//!   the snapshot holds no `postmaster.pid` and a `pg_control` that says "shut down", so
//!   the snapshot itself saw the server stopped; the unit timestamps say it was inactive
//!   from before the snapshot started until after it ended, and active after; the hooks
//!   ran as `hook_user`, the post_hook saw `CAIRN_RESULT=success`;
//! - the snapshot, blocked on its first write (the pre_hook froze the backup disk), is
//!   killed with SIGKILL while PostgreSQL is stopped: ExecStopPost brings it back, and the
//!   post_hook sees `CAIRN_RESULT=failure`;
//! - a unit that ignores SIGTERM past `stop_timeout`: the backup is aborted (no snapshot
//!   ran), PostgreSQL and that unit are running again, a FAILED mail went out;
//! - a unit that does not come back: a DOWN mail, `start` exits 3.
//!
//! By hand, in a second container (run in parallel): no `[quiesce]` is nothing to do; a
//! dry run changes nothing and writes no status file; a failing pre_hook stops nothing
//! (exit 3); `stop` and `start` are each safe to run twice.
//!
//! Mail goes through the container's exim4 (the host's, configured local-only by
//! `.ci/run`) into the mailbox of a user made in the container, read through
//! [`Container::root`]. Needs root, systemd-nspawn, loop devices and PostgreSQL 15;
//! prints `SKIPPED:` without root.

use cairn_tests::output_text as text;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn::stage::msg;
use cairn_tests::container::Container;
use cairn_tests::disk::{self, Disk, Fs};
use serde_json::Value;

const PG: &str = "postgresql@15-main.service";
const PGDATA: &str = "/var/lib/postgresql/15/main";
const MAIL_USER: &str = "cairnqmail";
const POST_LOG: &str = "/var/tmp/cairn-post-hook.log";
const QUIESCE_CONF: &str = "etc/cairn/cairn.conf.d/50-quiesce.conf";

fn ready() -> bool {
    if !cairn_tests::container::ready() {
        return false;
    }
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    assert!(
        Path::new("/lib/systemd/system/postgresql@.service").exists(),
        "PostgreSQL 15 is installed on the host (postgresql@.service): see .ci/run"
    );
    true
}

/// `systemctl show -P NAME UNIT`.
fn prop(c: &Container, unit: &str, name: &str) -> String {
    let o = c.systemctl(&["show", "-P", name, unit]);
    assert!(o.status.success(), "show {name} {unit}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A `…TimestampMonotonic` property, in µs (0: never).
fn mono(c: &Container, unit: &str, name: &str) -> u64 {
    prop(c, unit, name)
        .parse()
        .unwrap_or_else(|e| panic!("{unit} {name}: {e}"))
}

fn active(c: &Container, unit: &str) -> String {
    prop(c, unit, "ActiveState")
}

/// Write (or with `None` remove) the `[quiesce]` drop-in of the configuration.
fn set_quiesce(c: &Container, section: Option<&str>) {
    let p = c.root().join(QUIESCE_CONF);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match section {
        Some(s) => std::fs::write(&p, format!("[quiesce]\n{s}")).unwrap(),
        None => {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// `systemctl start cairn-snapshot.service`: (whether it succeeded, the run's invocation
/// id, what systemctl said).
fn snapshot_run(c: &Container) -> (bool, String, String) {
    let o = c.systemctl(&["start", "cairn-snapshot.service"]);
    let id = prop(c, "cairn-snapshot.service", "InvocationID");
    (o.status.success(), id, text(&o))
}

fn journal_of(c: &Container, invocation: &str) -> String {
    c.journal(&["-o", "cat", &format!("_SYSTEMD_INVOCATION_ID={invocation}")])
}

/// Journal entries (as JSON objects) with this MESSAGE_ID from run `run`.
fn events(c: &Container, id: &msg::MessageId, run: &str) -> Vec<Value> {
    c.journal(&[
        "-o",
        "json",
        &format!("MESSAGE_ID={}", id.id),
        &format!("CAIRN_RUN={run}"),
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn status(c: &Container, stage: &str) -> Value {
    let p = c.root().join(format!("var/lib/cairn/status/{stage}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// `cairn ARGS` run the way the snapshot runs it: a unit with the repository credential.
fn cairn(c: &Container, cairn_bin: &str, args: &[&str]) -> Output {
    let credential = if c.root().join("etc/credstore.encrypted/cairn.key").exists() {
        "LoadCredentialEncrypted=cairn.key:/etc/credstore.encrypted/cairn.key"
    } else {
        "LoadCredential=cairn.key:/etc/credstore/cairn.key"
    };
    let mut v = vec![
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "-p",
        credential,
        cairn_bin,
    ];
    v.extend_from_slice(args);
    c.exec(&v)
}

fn snapshot_count(c: &Container, cairn_bin: &str) -> usize {
    let o = cairn(c, cairn_bin, &["snapshots", "--json"]);
    assert!(o.status.success(), "cairn snapshots: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap().len()
}

/// What the latest snapshot says about PostgreSQL's data directory: whether it holds
/// `postmaster.pid`, and the cluster state of its `global/pg_control`.
fn latest_pg_state(c: &Container, cairn_bin: &str) -> (bool, String) {
    let o = cairn(c, cairn_bin, &["ls", "latest", PGDATA]);
    assert!(o.status.success(), "cairn ls: {}", text(&o));
    let has_pid = String::from_utf8_lossy(&o.stdout).contains("postmaster.pid");
    let o = cairn(
        c,
        cairn_bin,
        &["cat", "latest", &format!("{PGDATA}/global/pg_control")],
    );
    assert!(o.status.success(), "cairn cat pg_control: {}", text(&o));
    let dir = c.root().join("var/tmp/cairn-pgc/global");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pg_control"), &o.stdout).unwrap();
    let out = c.sh_ok("/usr/lib/postgresql/15/bin/pg_controldata -D /var/tmp/cairn-pgc");
    let state = out
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .unwrap_or_else(|| panic!("no cluster state in {out}"))
        .trim()
        .to_string();
    (has_pid, state)
}

fn post_log(c: &Container) -> Vec<String> {
    std::fs::read_to_string(c.root().join(POST_LOG.trim_start_matches('/')))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The first message in the container user's mailbox whose subject contains `needle`,
/// waiting for it up to `timeout`.
fn wait_for_mail(c: &Container, needle: &str, timeout: Duration) -> cairn_tests::mta::Message {
    c.wait_for_mail(MAIL_USER, needle, timeout)
}

/// Thaws the backup disk when dropped, so a failing test never leaves it frozen.
struct Thaw<'a>(&'a Container);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&["fsfreeze", "--unfreeze", "/srv/backup"]);
    }
}

/// Units the tests stop: one never started, one that ignores SIGTERM, one that fails to
/// start once `/run/flaky-broken` exists.
fn write_test_units(root: &Path) {
    let dir = root.join("etc/systemd/system");
    std::fs::write(
        dir.join("idle.service"),
        "[Unit]\nDescription=cairn test: a service that is not running\n\
         [Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("stubborn.service"),
        "[Unit]\nDescription=cairn test: a service that ignores SIGTERM\n\
         [Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; while :; do sleep 1; done'\n\
         TimeoutStopSec=12\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flaky.service"),
        "[Unit]\nDescription=cairn test: a service that fails to start when broken\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/bin/sh -c 'test ! -e /run/flaky-broken'\n",
    )
    .unwrap();
}

#[test]
fn quiesce_through_the_snapshot_unit() {
    if !ready() {
        return;
    }
    let t0 = Instant::now();
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let uuid = disk::random_uuid();
    let d = Disk::create_attached(
        dir.path(),
        Fs::Ext4,
        128,
        &disk::unique_label("qu", Fs::Ext4),
        &uuid,
    )
    .unwrap();
    let c = Container::builder()
        .block_device(d.device())
        .boot()
        .unwrap();
    let bindir = c.install_bins(&[
        "cairn",
        "cairn-preflight",
        "cairn-snapshot",
        "cairn-quiesce",
    ]);
    c.install_units(&bindir);
    let cairn_bin = bindir.join("cairn");
    let cairn_bin = cairn_bin.to_str().unwrap();
    let root = c.root().to_path_buf();
    write_test_units(&root);
    c.sh_ok(&format!(
        "useradd --create-home {MAIL_USER} && systemctl daemon-reload"
    ));
    std::fs::create_dir_all(root.join("etc/cairn")).unwrap();
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!(
            "[repository]\npath = /srv/backup/cairn\nkey_credential = cairn.key\n\
             [sources]\npaths = {PGDATA}\n\
             [preflight]\nmount = /srv/backup\nuuid = {uuid}\n\
             [alert]\nmail_to = {MAIL_USER}\n"
        ),
    )
    .unwrap();
    let o = c.exec(&[cairn_bin, "setup", "--json"]);
    assert_eq!(o.status.code(), Some(0), "cairn setup: {}", text(&o));
    // The tests start the snapshot themselves.
    c.sh_ok("systemctl stop cairn-backup.timer cairn-prune.timer");
    c.wait_for_unit_state(PG, "active", Duration::from_secs(30))
        .unwrap();
    eprintln!("set up in {:?}", t0.elapsed());

    // --- the control: without [quiesce], the snapshot reads a running server ----------
    let (ok, run, out) = snapshot_run(&c);
    assert!(ok, "{out}\n{}", journal_of(&c, &run));
    let (has_pid, state) = latest_pg_state(&c, cairn_bin);
    assert!(has_pid, "a running server has postmaster.pid");
    assert_eq!(state, "in production", "a running server's pg_control");
    let q = status(&c, "quiesce");
    assert_eq!(q["run_id"], run.as_str(), "quiesce ran in the unit: {q:#}");
    assert_eq!(q["result"], "success", "{q:#}");
    assert!(
        q["summary"].as_str().unwrap().contains("nothing to start"),
        "{q:#}"
    );

    // --- quiesced: PostgreSQL stopped for the snapshot, a stopped unit left alone ------
    assert_eq!(active(&c, "idle.service"), "inactive");
    set_quiesce(
        &c,
        Some(&format!(
            "units = {PG} idle.service\nstop_timeout = 20s\nhook_user = postgres\n\
             pre_hook = psql -qAtc CHECKPOINT && id -un > /var/tmp/cairn-pre-hook.user\n\
             post_hook = echo \"$$CAIRN_RESULT $$CAIRN_UNITS $$(id -un)\" >> {POST_LOG}\n"
        )),
    );
    let (ok, run, out) = snapshot_run(&c);
    assert!(ok, "{out}\n{}", journal_of(&c, &run));
    let (has_pid, state) = latest_pg_state(&c, cairn_bin);
    assert!(
        !has_pid,
        "the snapshot saw the server stopped: no postmaster.pid"
    );
    assert_eq!(
        state, "shut down",
        "the snapshot holds a cleanly shut down cluster"
    );
    let snap = "cairn-snapshot.service";
    let (start, exit) = (
        mono(&c, snap, "ExecMainStartTimestampMonotonic"),
        mono(&c, snap, "ExecMainExitTimestampMonotonic"),
    );
    let (down, left_down, up) = (
        mono(&c, PG, "InactiveEnterTimestampMonotonic"),
        mono(&c, PG, "InactiveExitTimestampMonotonic"),
        mono(&c, PG, "ActiveEnterTimestampMonotonic"),
    );
    assert!(
        0 < down && down < start && start < exit && exit < left_down && left_down <= up,
        "PostgreSQL inactive from before the snapshot started ({down} < {start}) until \
         after it ended ({exit} < {left_down} <= {up})"
    );
    assert_eq!(active(&c, PG), "active", "PostgreSQL is back");
    assert_eq!(active(&c, "idle.service"), "inactive", "left alone");
    assert_eq!(
        mono(&c, "idle.service", "ActiveEnterTimestampMonotonic"),
        0,
        "a unit that was not running is never started"
    );
    let pre_user = std::fs::read_to_string(root.join("var/tmp/cairn-pre-hook.user")).unwrap();
    assert_eq!(pre_user.trim(), "postgres", "the pre_hook ran as hook_user");
    assert_eq!(
        post_log(&c).last().map(String::as_str),
        Some(format!("success {PG} postgres").as_str()),
        "the post_hook ran as hook_user with CAIRN_RESULT=success and the stopped units"
    );
    let stopped = events(&c, &msg::UNIT_STOPPED, &run);
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["CAIRN_UNIT"], PG);
    assert_eq!(stopped[0]["CAIRN_STAGE"], "quiesce");
    assert_eq!(stopped[0]["SYSLOG_IDENTIFIER"], "cairn-quiesce");
    let started = events(&c, &msg::UNIT_STARTED, &run);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["CAIRN_UNIT"], PG);
    let q = status(&c, "quiesce");
    assert_eq!(q["result"], "success", "{q:#}");
    assert_eq!(q["figures"]["command"], "start", "{q:#}");
    assert_eq!(q["figures"]["snapshot_result"], "success", "{q:#}");
    assert!(
        !c.live_path("/run/cairn-snapshot/quiesced.json").exists(),
        "the record is cleared"
    );
    eprintln!("quiesced snapshot done at {:?}", t0.elapsed());

    // --- SIGKILL while PostgreSQL is stopped: ExecStopPost brings it back --------------
    let thaw = Thaw(&c);
    set_quiesce(
        &c,
        Some(&format!(
            "units = {PG}\n\
             pre_hook = fsfreeze --freeze /srv/backup\n\
             post_hook = fsfreeze --unfreeze /srv/backup 2>/dev/null; \
             echo \"$$CAIRN_RESULT $$CAIRN_UNITS\" >> {POST_LOG}\n"
        )),
    );
    let snapshots = snapshot_count(&c, cairn_bin);
    c.sh_ok("systemctl start --no-block cairn-snapshot.service");
    // The snapshot blocks on its first write to the frozen disk (the repository lock).
    let deadline = Instant::now() + Duration::from_secs(60);
    // (Until it has exec'd, the main process is systemd's fork, named "(snapshot)".)
    loop {
        let pid = prop(&c, snap, "MainPID");
        let comm = c.sh(&format!("cat /proc/{pid}/comm"));
        if pid != "0" && text(&comm).trim() == "cairn-snapshot" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never started (main process {pid}: {}): {}",
            text(&comm).trim(),
            c.journal(&["-u", snap, "-n", "30"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        active(&c, PG),
        "inactive",
        "PostgreSQL is stopped during the snapshot"
    );
    let record = std::fs::read_to_string(c.live_path("/run/cairn-snapshot/quiesced.json"))
        .expect("the record of stopped units");
    assert!(record.contains(PG), "{record}");
    c.sh_ok("systemctl kill --kill-whom=main --signal=SIGKILL cairn-snapshot.service");
    // A writer blocked on a frozen filesystem dies of the SIGKILL once it is thawed.
    c.sh_ok("fsfreeze --unfreeze /srv/backup");
    drop(thaw);
    c.wait_for_unit_state(snap, "failed", Duration::from_secs(60))
        .unwrap();
    assert_eq!(prop(&c, snap, "Result"), "signal");
    assert_eq!(prop(&c, snap, "ExecMainStatus"), "9", "killed by SIGKILL");
    assert_eq!(
        active(&c, PG),
        "active",
        "ExecStopPost brought PostgreSQL back"
    );
    assert_eq!(
        post_log(&c).last().map(String::as_str),
        Some(format!("failure {PG}").as_str()),
        "the post_hook saw CAIRN_RESULT=failure"
    );
    assert_eq!(
        snapshot_count(&c, cairn_bin),
        snapshots,
        "no snapshot recorded"
    );
    let run = prop(&c, snap, "InvocationID");
    assert_eq!(events(&c, &msg::UNIT_STARTED, &run).len(), 1);
    eprintln!("SIGKILL done at {:?}", t0.elapsed());

    // --- a unit that ignores SIGTERM past stop_timeout: the backup is aborted ----------
    c.sh_ok("systemctl start stubborn.service");
    set_quiesce(
        &c,
        Some(&format!(
            "units = {PG} stubborn.service\nstop_timeout = 6s\n\
             post_hook = echo \"$$CAIRN_RESULT $$CAIRN_UNITS\" >> {POST_LOG}\n"
        )),
    );
    let before = status(&c, "snapshot");
    let (ok, run, out) = snapshot_run(&c);
    assert!(!ok, "the snapshot unit fails when quiescing fails: {out}");
    let log = journal_of(&c, &run);
    assert_eq!(
        active(&c, PG),
        "active",
        "PostgreSQL was started again\n{log}"
    );
    assert_eq!(
        active(&c, "stubborn.service"),
        "active",
        "the unit that would not stop runs again (systemd killed it, then started it)\n{log}"
    );
    assert_eq!(
        status(&c, "snapshot")["run_id"],
        before["run_id"],
        "cairn-snapshot did not run\n{log}"
    );
    assert!(
        !log.contains("snapshot started"),
        "no snapshot stage in this run:\n{log}"
    );
    assert_eq!(snapshot_count(&c, cairn_bin), snapshots, "no new snapshot");
    let failed = events(&c, &msg::UNIT_STOP_FAILED, &run);
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(failed[0]["CAIRN_UNIT"], "stubborn.service");
    let restarted: Vec<_> = events(&c, &msg::UNIT_STARTED, &run)
        .iter()
        .map(|e| e["CAIRN_UNIT"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        restarted,
        ["stubborn.service", PG],
        "everything stopped is started again, in reverse order"
    );
    assert_eq!(
        post_log(&c).last().map(String::as_str),
        Some(format!("failure {PG} stubborn.service").as_str()),
    );
    let quiesce_failed: Vec<Value> = events(&c, &msg::STAGE_FAILED, &run);
    assert!(
        quiesce_failed
            .iter()
            .any(|e| e["CAIRN_STAGE"] == "quiesce" && e["CAIRN_EXIT_CODE"] == "3"),
        "cairn-quiesce stop exited 3: {quiesce_failed:?}"
    );
    let m = wait_for_mail(&c, "quiesce FAILED", Duration::from_secs(20));
    assert!(m.subject().contains("stubborn.service"), "{}", m.subject());
    assert!(m.body().contains("aborted"), "{}", m.body());
    // It would hold up the poweroff for its TimeoutStopSec.
    c.sh_ok("systemctl kill --signal=SIGKILL stubborn.service");
    eprintln!("stubborn done at {:?}", t0.elapsed());

    // --- a unit that does not come back: the DOWN mail, exit 3 --------------------------
    c.sh_ok("systemctl start flaky.service");
    set_quiesce(
        &c,
        Some(&format!(
            "units = flaky.service {PG}\n\
             pre_hook = touch /run/flaky-broken\n\
             post_hook = rm -f /run/flaky-broken; \
             echo \"$$CAIRN_RESULT $$CAIRN_UNITS\" >> {POST_LOG}\n"
        )),
    );
    let (ok, run, out) = snapshot_run(&c);
    let log = journal_of(&c, &run);
    assert!(!ok, "ExecStopPost failed, so the unit failed: {out}\n{log}");
    assert_eq!(
        status(&c, "snapshot")["run_id"],
        run.as_str(),
        "the snapshot itself ran"
    );
    assert_eq!(status(&c, "snapshot")["result"], "success");
    let q = status(&c, "quiesce");
    assert_eq!(q["result"], "failure", "{q:#}");
    assert_eq!(q["exit_code"], 3, "{q:#}");
    assert_eq!(q["figures"]["mail"], "sent", "{q:#}");
    assert_eq!(active(&c, PG), "active", "the other unit came back");
    assert_eq!(active(&c, "flaky.service"), "failed");
    let down = events(&c, &msg::UNIT_RESTART_FAILED, &run);
    assert_eq!(down.len(), 1, "{log}");
    assert_eq!(down[0]["CAIRN_UNIT"], "flaky.service");
    let m = wait_for_mail(&c, "quiesce DOWN", Duration::from_secs(20));
    assert!(m.subject().contains("flaky.service"), "{}", m.subject());
    assert!(m.body().contains("systemctl start"), "{}", m.body());
    assert_eq!(
        post_log(&c).last().map(String::as_str),
        Some(format!("success flaky.service {PG}").as_str()),
        "the snapshot succeeded; the post_hook still ran"
    );
    assert!(
        !c.live_path("/run/cairn-snapshot/quiesced.json").exists(),
        "the record is cleared"
    );
    eprintln!("all done at {:?}", t0.elapsed());
    c.shutdown().unwrap();
    drop(d);
}

/// `cairn-quiesce` run by hand (as an administrator would, outside any unit).
fn quiesce(c: &Container, bin: &str, args: &[&str]) -> (i32, Value, String) {
    let mut v = vec![bin];
    v.extend_from_slice(args);
    v.push("--json");
    let o = c.exec(&v);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let json = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {}", text(&o)));
    (o.status.code().unwrap_or(-1), json, stderr)
}

fn actions(v: &Value) -> Vec<(String, String)> {
    v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["unit"].as_str().unwrap().to_string(),
                u["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn quiesce_by_hand() {
    if !ready() {
        return;
    }
    let c = Container::boot().unwrap();
    let bin = c.install_bins(&["cairn-quiesce"]).join("cairn-quiesce");
    let bin = bin.to_str().unwrap();
    let root = c.root().to_path_buf();
    write_test_units(&root);
    c.sh_ok("systemctl daemon-reload");
    c.wait_for_unit_state(PG, "active", Duration::from_secs(30))
        .unwrap();
    std::fs::create_dir_all(root.join("etc/cairn")).unwrap();
    let status_file = root.join("var/lib/cairn/status/quiesce.json");
    let record = c.live_path("/run/cairn/quiesced.json");

    // Without [quiesce] there is nothing to do, and that is a success.
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        "[alert]\nmail_to = root\n",
    )
    .unwrap();
    for cmd in ["stop", "start"] {
        let (code, v, err) = quiesce(&c, bin, &[cmd]);
        assert_eq!(code, 0, "{v:#}\n{err}");
        assert!(
            v["summary"].as_str().unwrap().contains("nothing to"),
            "{v:#}"
        );
    }
    let _ = std::fs::remove_file(&status_file);

    // A dry run says what it would do and changes nothing.
    let conf = format!(
        "[quiesce]\nunits = {PG} idle.service missing.service\n\
         pre_hook = touch /var/tmp/cairn-pre-hook-ran\n"
    );
    std::fs::write(root.join("etc/cairn/cairn.conf"), &conf).unwrap();
    let pg_up = mono(&c, PG, "ActiveEnterTimestampMonotonic");
    let o = c.exec(&[bin, "stop", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("would run the pre_hook"), "{out}");
    assert!(out.contains(&format!("would stop {PG}")), "{out}");
    assert!(!out.contains("idle.service"), "{out}");
    let (code, v, err) = quiesce(&c, bin, &["--dry-run", "stop"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(
        actions(&v),
        [
            (PG.to_string(), "would_stop".to_string()),
            ("idle.service".into(), "not_running".into()),
            ("missing.service".into(), "not_loaded".into()),
        ],
        "{v:#}"
    );
    assert!(
        err.contains("would mail"),
        "the warning would be mailed: {err}"
    );
    assert_eq!(active(&c, PG), "active");
    assert_eq!(mono(&c, PG, "ActiveEnterTimestampMonotonic"), pg_up);
    assert!(!record.exists(), "a dry run records nothing");
    assert!(!status_file.exists(), "a dry run writes no status file");
    assert!(
        !root.join("var/tmp/cairn-pre-hook-ran").exists(),
        "no hook ran"
    );

    // A failing pre_hook: nothing is stopped, exit 3.
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!("[quiesce]\nunits = {PG}\npre_hook = echo flushing; exit 7\n"),
    )
    .unwrap();
    let (code, v, err) = quiesce(&c, bin, &["stop"]);
    assert_eq!(code, 3, "{v:#}\n{err}");
    assert_eq!(v["hooks"][0]["result"], "failed", "{v:#}");
    assert!(
        err.contains("pre_hook: flushing"),
        "its output is logged: {err}"
    );
    assert!(err.contains("status 7"), "{err}");
    assert!(actions(&v).is_empty(), "{v:#}");
    assert_eq!(active(&c, PG), "active");
    assert_eq!(
        mono(&c, PG, "ActiveEnterTimestampMonotonic"),
        pg_up,
        "never stopped"
    );
    assert!(!record.exists(), "nothing recorded");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&status_file).unwrap()).unwrap();
    assert_eq!(st["exit_code"], 3, "{st:#}");

    // stop twice, start twice: the second stop keeps what the first one stopped, the
    // second start has nothing to do.
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!("[quiesce]\nunits = {PG} idle.service\nstop_timeout = 30s\n"),
    )
    .unwrap();
    let (code, v, err) = quiesce(&c, bin, &["stop"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(actions(&v)[0], (PG.to_string(), "stopped".to_string()));
    assert_eq!(active(&c, PG), "inactive");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(r["units"][0]["unit"], PG, "{r:#}");
    assert_eq!(r["units"][0]["state"], "stopped", "{r:#}");
    assert_eq!(
        r["units"].as_array().unwrap().len(),
        1,
        "only what ran: {r:#}"
    );
    let (code, v, err) = quiesce(&c, bin, &["stop"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(
        actions(&v)[0],
        (PG.to_string(), "already_stopped".to_string())
    );
    assert!(err.contains("already in progress"), "{err}");
    let r2: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(r2["units"], r["units"], "the second stop forgets nothing");
    let (code, v, err) = quiesce(&c, bin, &["start"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(actions(&v), [(PG.to_string(), "started".to_string())]);
    assert_eq!(
        v["snapshot_result"], "failure",
        "by hand, without SERVICE_RESULT, the snapshot's result is unknown"
    );
    assert_eq!(active(&c, PG), "active");
    assert!(!record.exists(), "the record is cleared");
    let (code, v, err) = quiesce(&c, bin, &["start"]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert!(actions(&v).is_empty(), "{v:#}");
    assert!(
        v["summary"].as_str().unwrap().contains("nothing recorded"),
        "{v:#}"
    );
    assert_eq!(active(&c, "idle.service"), "inactive", "never started");
    c.shutdown().unwrap();
}
