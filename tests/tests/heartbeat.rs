//! `cairn-heartbeat` end to end, on real parts: a private `dbus-daemon` as the system bus
//! (`$DBUS_SYSTEM_BUS_ADDRESS`) carrying real `StageFinished` signals — from the real
//! `cairn-snapshot` binary, or the library's emit function for results that are hard to
//! cause (a partial run, a drill) — a local HTTP listener ([`HttpSink`]) as the
//! dead-man's switch and the webhook, exim4 for the mail, and the metrics file read with a
//! strict Prometheus text-format parser ([`promparse`]).
//!
//! Staleness is driven by the timestamps in status files written by the test (an old
//! `last_success`), never by sleeping. Each test has its own state directory, bus and
//! listener, so they run in parallel.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::stage::{StageResult, StatusFile};
use cairn_tests::httpsink::HttpSink;
use cairn_tests::mta::{self, Mta};
use cairn_tests::promparse;
use chrono::{DateTime, Utc};
use common::{code, ok, text, Env};

const WAIT: Duration = Duration::from_secs(20);

/// A private bus daemon, killed when dropped.
struct Bus {
    child: Child,
    address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn private_bus() -> Bus {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (Debian package dbus-daemon, installed by scripts/deps.sh)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().to_owned();
    assert!(!address.is_empty(), "dbus-daemon printed no address");
    Bus { child, address }
}

/// A scratch directory with a config, a state directory and a metrics directory, for
/// tests that write the status files themselves.
struct Scratch {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Scratch {
    fn new(conf: &str) -> Scratch {
        let dir = cairn_tests::fixture::tempdir().unwrap();
        let s = Scratch {
            conf: dir.path().join("cairn.conf"),
            dir,
        };
        std::fs::create_dir_all(s.state().join("status")).unwrap();
        std::fs::create_dir_all(s.path("metrics")).unwrap();
        s.set_conf(conf);
        s
    }

    fn set_conf(&self, conf: &str) {
        std::fs::write(
            &self.conf,
            conf.replace("@DIR@", &self.dir.path().display().to_string()),
        )
        .unwrap();
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn cmd(&self) -> Command {
        hb_cmd(&self.conf, &self.state())
    }

    fn metrics(&self) -> PathBuf {
        self.path("metrics/cairn.prom")
    }
}

/// `cairn-heartbeat` with a clean environment pointing at `conf` and `state`.
fn hb_cmd(conf: &Path, state: &Path) -> Command {
    let mut c = cairn_tests::Bins::locate().cmd("cairn-heartbeat");
    c.env("CAIRN_CONFIG", conf)
        .env("STATE_DIRECTORY", state)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .env_remove("WATCHDOG_USEC")
        .env_remove("MONITOR_UNIT")
        .env_remove("MONITOR_INVOCATION_ID")
        .env_remove("MONITOR_SERVICE_RESULT")
        .env_remove("MONITOR_EXIT_CODE")
        .env_remove("MONITOR_EXIT_STATUS");
    for p in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(p);
    }
    c
}

/// `cairn-heartbeat run` under test: stderr to a file, `READY=1` awaited on a
/// notification socket of the test's own.
struct Daemon {
    child: Child,
    log: PathBuf,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(mut cmd: Command, bus: &Bus) -> Daemon {
        let dir = cairn_tests::fixture::tempdir().unwrap();
        let sock = dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = dir.path().join("stderr");
        let child = cmd
            .arg("run")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("NOTIFY_SOCKET", &sock)
            .env("WATCHDOG_USEC", "2000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run cairn-heartbeat");
        let d = Daemon {
            child,
            log,
            notify,
            _dir: dir,
        };
        d.wait_notify("READY=1");
        d
    }

    /// Wait for a datagram containing `needle`.
    fn wait_notify(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.notify.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.contains(needle) {
                    return m;
                }
                seen.push(m);
            }
        }
        panic!(
            "no {needle:?} from cairn-heartbeat; got {seen:?}\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cairn-heartbeat never logged {needle:?}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn status(stage: &str, run: &str, result: StageResult, exit: Option<i32>) -> StatusFile {
    let now = Utc::now();
    StatusFile {
        stage: stage.into(),
        run_id: run.into(),
        host: "test".into(),
        pid: 1,
        version: "0".into(),
        started: now - chrono::Duration::seconds(5),
        finished: (result != StageResult::Running).then_some(now),
        result,
        exit_code: exit,
        summary: format!("{stage} {result} in a test"),
        error: (result != StageResult::Success && result != StageResult::Running)
            .then(|| "it went wrong".to_string()),
        figures: serde_json::Value::Null,
        last_success: (result == StageResult::Success).then_some(now),
        first_started: Some(now - chrono::Duration::days(30)),
    }
}

/// Write a status file as a stage does: temp file, then rename into place.
fn put_status(state: &Path, s: &StatusFile) {
    let dir = state.join("status");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".tmp-{}.json-test", s.stage));
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{}.json", s.stage))).unwrap();
}

/// Write `s` and emit its signal on `bus`, as `Stage::finish` does.
fn finish(state: &Path, bus: &Bus, s: &StatusFile) {
    put_status(state, s);
    cairn::stage::dbus::emit_stage_finished_at(Some(&bus.address), s, Duration::from_secs(5))
        .expect("emit StageFinished on the private bus");
}

/// Poll the metrics file until it parses and `pred` holds.
fn wait_metrics(
    path: &Path,
    pred: impl Fn(&promparse::Exposition) -> bool,
) -> promparse::Exposition {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() {
            let e = promparse::parse(&text).unwrap_or_else(|e| {
                panic!("{} is not valid exposition: {e}\n{text}", path.display())
            });
            if pred(&e) {
                return e;
            }
        }
        if Instant::now() >= deadline {
            panic!("{} never got there:\n{text}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mailbox() -> mta::Mailbox {
    Mta::available().expect("the local MTA (exim4, see scripts/deps.sh)");
    Mta::mailbox().expect("the test mailbox")
}

// -----------------------------------------------------------------------------------------

#[test]
fn real_snapshot_runs_ping_start_success_and_failure_and_fill_the_metrics() {
    let bus = private_bus();
    let sink = HttpSink::start();
    let src = cairn_tests::fixture::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(src.path().join(format!("f{i}")), vec![b'x'; 1000 * (i + 1)]).unwrap();
    }
    let e = Env::new(&[src.path()]);
    let metrics = e.path("metrics/cairn.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let mut conf = std::fs::read_to_string(&e.conf).unwrap();
    conf.push_str(&format!(
        "[heartbeat]\nping_url = {}\nmetrics_file = {}\ntimeout = 5s\nretries = 1\n",
        sink.url("/ping/abc"),
        metrics.display()
    ));
    std::fs::write(&e.conf, conf).unwrap();
    let d = Daemon::start(hb_cmd(&e.conf, &e.path("state")), &bus);
    d.wait_log("listening for StageFinished signals on the system bus");

    let snapshot = || {
        e.cmd("cairn-snapshot")
            .env_remove("CAIRN_NO_DBUS")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .output()
            .unwrap()
    };
    // --- success: pinged once ------------------------------------------------------------
    // (Its `/start` is not asserted: a run this small may be over before the daemon reads
    // the file that said `running`; the drill test checks `/start` deterministically.)
    ok(&snapshot());
    let st = e.status("snapshot");
    let run = st["run_id"].as_str().unwrap().to_string();
    let success = sink.wait_for_path("/ping/abc", WAIT).unwrap();
    assert!(
        success.text().starts_with("cairn on ")
            && success
                .text()
                .contains(&format!("snapshot success (run {run}, exit 0)")),
        "{}",
        success.text()
    );
    // The body's JSON is the status file.
    let body_json: serde_json::Value =
        serde_json::from_str(success.text().split_once("\n\n").unwrap().1).unwrap();
    assert_eq!(body_json, st);
    // The real signal reached the daemon (and changed nothing: the file came first).
    d.wait_log(&format!(
        "StageFinished signal: snapshot success (run {run})"
    ));

    // --- the metrics are the status file's figures ---------------------------------------
    let m = wait_metrics(&metrics, |m| {
        m.value(
            "cairn_stage_result",
            &[("stage", "snapshot"), ("result", "success")],
        ) == Some(1.0)
    });
    let f = &st["figures"]["figures"];
    assert_eq!(
        m.value("cairn_snapshot_size_bytes", &[]),
        f["bytes_total"].as_f64()
    );
    assert_eq!(m.value("cairn_snapshot_size_bytes", &[]), Some(15000.0));
    assert_eq!(m.value("cairn_snapshot_files", &[]), Some(5.0));
    assert_eq!(m.value("cairn_snapshot_complete", &[]), Some(1.0));
    assert_eq!(
        m.value("cairn_stage_last_exit_code", &[("stage", "snapshot")]),
        Some(0.0)
    );
    let last: DateTime<Utc> = serde_json::from_value(st["last_success"].clone()).unwrap();
    assert_eq!(
        m.value("cairn_pipeline_last_success_timestamp_seconds", &[]),
        Some(ts(last))
    );
    assert_eq!(
        m.value(
            "cairn_stage_last_success_timestamp_seconds",
            &[("stage", "snapshot")]
        ),
        Some(ts(last))
    );
    for fam in &m.families {
        assert_eq!(fam.kind, "gauge", "{}", fam.name);
        assert!(
            fam.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{}",
            fam.name
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&metrics).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "node_exporter (another user) reads it");

    // --- failure: the repository is gone, exit 2, ping /2 ----------------------------------
    let away = e.path("repo.away");
    std::fs::rename(&e.repo, &away).unwrap();
    let o = snapshot();
    assert_eq!(code(&o), 2, "{}", text(&o));
    std::fs::rename(&away, &e.repo).unwrap();
    let failed_run = e.status("snapshot")["run_id"].as_str().unwrap().to_string();
    let fail = sink.wait_for_path("/ping/abc/2", WAIT).unwrap();
    assert!(
        fail.text()
            .contains(&format!("snapshot failure (run {failed_run}, exit 2)")),
        "{}",
        fail.text()
    );
    d.wait_log(&format!(
        "StageFinished signal: snapshot failure (run {failed_run})"
    ));
    wait_metrics(&metrics, |m| {
        m.value(
            "cairn_stage_result",
            &[("stage", "snapshot"), ("result", "failure")],
        ) == Some(1.0)
            && m.value("cairn_stage_last_exit_code", &[("stage", "snapshot")]) == Some(2.0)
    });

    // --- a partial snapshot fails the check with its code and never pings success ----------
    let mut partial = status(
        "snapshot",
        "partial-run-0001",
        StageResult::Partial,
        Some(3),
    );
    partial.last_success = Some(last);
    finish(&e.path("state"), &bus, &partial);
    let p = sink.wait_for_path("/ping/abc/3", WAIT).unwrap();
    assert!(
        p.text()
            .contains("snapshot partial (run partial-run-0001, exit 3)"),
        "{}",
        p.text()
    );

    // --- a signal the status file does not confirm is ignored ------------------------------
    let forged = status("snapshot", "forged-run", StageResult::Success, Some(0));
    cairn::stage::dbus::emit_stage_finished_at(Some(&bus.address), &forged, Duration::from_secs(5))
        .unwrap();
    d.wait_log("StageFinished signal for snapshot run forged-run (success) is not what its status file says: ignored");

    // Each run pinged once: one start, one success, whatever signals and file events came.
    assert_eq!(sink.to_path("/ping/abc").len(), 1, "{:#?}", sink.requests());
    assert!(
        sink.to_path("/ping/abc/start").len() <= 2,
        "{:#?}",
        sink.requests()
    );
    assert!(sink.requests().iter().all(|r| r.method == "POST"));
    assert_eq!(sink.to_path("/ping/abc/2").len(), 1);
    assert_eq!(sink.to_path("/ping/abc/3").len(), 1);
}

#[test]
fn with_a_remote_upload_is_the_pipeline_and_the_drill_has_its_own_check() {
    let bus = private_bus();
    let sink = HttpSink::start();
    let s = Scratch::new(&format!(
        "[remote]\nurl = s3://bucket/host\npreset = garage\nendpoint = http://127.0.0.1:9\n\
         [heartbeat]\nping_url = {}\ndrill_ping_url = {}\nmetrics_file = @DIR@/metrics/cairn.prom\n\
         retries = 0\n",
        sink.url("/p/pipe"),
        sink.url("/p/drill")
    ));
    // Results from before the daemon started are history: not pinged.
    put_status(
        &s.state(),
        &status("upload", "old-run", StageResult::Failure, Some(3)),
    );
    let d = Daemon::start(s.cmd(), &bus);
    d.wait_log("listening for StageFinished signals");

    // A snapshot's success is not the pipeline's when there is a remote...
    finish(
        &s.state(),
        &bus,
        &status("snapshot", "snap-1", StageResult::Success, Some(0)),
    );
    d.wait_log("StageFinished signal: snapshot success (run snap-1)");
    // ...the upload's is.
    finish(
        &s.state(),
        &bus,
        &status("upload", "up-1", StageResult::Success, Some(0)),
    );
    let r = sink.wait_for_path("/p/pipe", WAIT).unwrap();
    assert!(
        r.text().contains("upload success (run up-1"),
        "{}",
        r.text()
    );
    // The snapshot's /start was the only other request to the pipeline check.
    let pipe: Vec<String> = sink
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/p/pipe"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        pipe,
        ["/p/pipe"],
        "no ping for old-run, none for snap-1's success"
    );

    // The drill: start, pass, mismatch.
    put_status(
        &s.state(),
        &status("drill", "drill-1", StageResult::Running, None),
    );
    sink.wait_for_path("/p/drill/start", WAIT).unwrap();
    let mut passed = status("drill", "drill-1", StageResult::Success, Some(0));
    passed.figures = serde_json::json!({"figures": {"files": 7, "bytes": 7000, "seconds": 1.5,
        "restore_seconds": 1.25, "throughput": 5600.0}});
    finish(&s.state(), &bus, &passed);
    sink.wait_for_path("/p/drill", WAIT).unwrap();
    let m = wait_metrics(&s.metrics(), |m| {
        m.value("cairn_drill_passed", &[]) == Some(1.0)
    });
    assert_eq!(m.value("cairn_drill_duration_seconds", &[]), Some(1.5));
    assert_eq!(m.value("cairn_drill_restore_seconds", &[]), Some(1.25));
    assert_eq!(m.value("cairn_drill_files", &[]), Some(7.0));
    assert_eq!(m.value("cairn_drill_bytes", &[]), Some(7000.0));
    assert_eq!(
        m.value("cairn_drill_throughput_bytes_per_second", &[]),
        Some(5600.0)
    );
    let last = passed.last_success.unwrap();
    assert!(m
        .value("cairn_pipeline_last_success_timestamp_seconds", &[])
        .is_some());
    assert_eq!(
        m.value(
            "cairn_stage_last_success_timestamp_seconds",
            &[("stage", "drill")]
        ),
        Some(ts(last))
    );
    finish(
        &s.state(),
        &bus,
        &status("drill", "drill-2", StageResult::Failure, Some(4)),
    );
    let r = sink.wait_for_path("/p/drill/4", WAIT).unwrap();
    assert!(
        r.text().contains("drill failure (run drill-2, exit 4)"),
        "{}",
        r.text()
    );
    wait_metrics(&s.metrics(), |m| {
        m.value("cairn_drill_passed", &[]) == Some(0.0)
    });
    // Drill results never touch the pipeline's check.
    assert_eq!(
        sink.requests()
            .iter()
            .filter(|r| r.path.starts_with("/p/pipe"))
            .count(),
        1
    );
}

#[test]
fn a_restarted_daemon_writes_the_same_metrics_from_the_status_files() {
    let bus = private_bus();
    let s = Scratch::new("[heartbeat]\nmetrics_file = @DIR@/metrics/cairn.prom\nmax_age = 1d\n");
    let mut snap = status("snapshot", "s-1", StageResult::Success, Some(0));
    snap.figures = serde_json::json!({"snapshot": "ab", "complete": true, "errors": 0,
        "figures": {"files_new": 1, "files_changed": 2, "files_unchanged": 3, "bytes_read": 10,
            "bytes_total": 600, "bytes_added": 5, "bytes_added_stored": 4},
        "repository": {"stored_bytes": 300, "logical_bytes": 1200, "snapshots": 2}});
    put_status(&s.state(), &snap);
    let mut up = status("upload", "u-1", StageResult::Failure, Some(3));
    up.figures = serde_json::json!({"figures": {"uploaded": {"data": 2, "index": 1}, "bytes": 4096,
        "present": 10, "throughput": 2048.0}});
    put_status(&s.state(), &up);
    let first = {
        let _d = Daemon::start(s.cmd(), &bus);
        wait_metrics(&s.metrics(), |m| {
            m.value("cairn_snapshot_size_bytes", &[]).is_some()
        })
    };
    std::fs::remove_file(s.metrics()).unwrap();
    let second = {
        let _d = Daemon::start(s.cmd(), &bus);
        wait_metrics(&s.metrics(), |m| {
            m.value("cairn_snapshot_size_bytes", &[]).is_some()
        })
    };
    assert_eq!(first.series(), second.series());
    for name in [
        "cairn_snapshot_size_bytes",
        "cairn_repository_size_bytes",
        "cairn_dedup_ratio",
        "cairn_upload_bytes",
        "cairn_pipeline_stale",
    ] {
        assert_eq!(first.value(name, &[]), second.value(name, &[]), "{name}");
    }
    assert_eq!(second.value("cairn_snapshot_files", &[]), Some(6.0));
    assert_eq!(
        second.value("cairn_repository_size_bytes", &[]),
        Some(300.0)
    );
    assert_eq!(
        second.value("cairn_repository_logical_bytes", &[]),
        Some(1200.0)
    );
    assert_eq!(second.value("cairn_repository_snapshots", &[]), Some(2.0));
    assert_eq!(second.value("cairn_dedup_ratio", &[]), Some(4.0));
    assert_eq!(second.value("cairn_upload_bytes", &[]), Some(4096.0));
    assert_eq!(second.value("cairn_upload_objects", &[]), Some(3.0));
    assert_eq!(
        second.value("cairn_upload_present_objects", &[]),
        Some(10.0)
    );
    assert_eq!(second.value("cairn_pipeline_stale", &[]), Some(0.0));
    assert_eq!(
        second.value("cairn_pipeline_max_age_seconds", &[]),
        Some(86400.0)
    );
    assert_eq!(
        second.value(
            "cairn_stage_result",
            &[("stage", "upload"), ("result", "failure")]
        ),
        Some(1.0)
    );
    // Every family the file can hold is documented in cairn-heartbeat(8).
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/cairn-heartbeat.8"),
    )
    .unwrap();
    for (name, _, _) in cairn::heartbeat::metrics::FAMILIES {
        assert!(
            page.contains(&name.replace('_', "\\_")) || page.contains(name),
            "{name} is not in cairn-heartbeat(8)"
        );
    }
}

#[test]
fn staleness_is_alerted_once_per_episode_by_mail_and_webhook() {
    let mail = mailbox();
    let tag = mta::token("hbstale");
    let sink = HttpSink::start();
    let s = Scratch::new(&format!(
        "[heartbeat]\nmax_age = 1d\nmetrics_file = @DIR@/metrics/cairn.prom\nretries = 0\n\
         [alert]\nmail_to = {}\nwebhook = {}\nwebhook_format = json\n",
        mta::ADDRESS,
        sink.url("/hook/stale")
    ));
    let old = Utc::now() - chrono::Duration::days(3);
    let mut failing = status("snapshot", "fail-1", StageResult::Failure, Some(2));
    failing.last_success = Some(old);
    failing.summary = format!("disk gone {tag}");
    put_status(&s.state(), &failing);

    // First check: stale, alerted by both paths, exit 3.
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        text(&o).contains("has not succeeded for 3d"),
        "{}",
        text(&o)
    );
    let m = mail.wait_for(&tag, WAIT).unwrap();
    assert!(
        m.subject()
            .contains("snapshot STALE: no successful backup for 3d"),
        "{}",
        m.subject()
    );
    assert!(
        m.body()
            .contains("The last successful run of cairn-snapshot.service"),
        "{}",
        m.body()
    );
    let hook = sink.wait_for_path("/hook/stale", WAIT).unwrap();
    let v = hook.json();
    assert_eq!(v["verdict"], "STALE");
    assert_eq!(v["stage"], "snapshot");
    assert_eq!(v["run_id"], "fail-1");
    assert!(v["body"].as_str().unwrap().contains(&tag));
    assert_eq!(hook.header("content-type"), Some("application/json"));
    let metrics = promparse::parse(&std::fs::read_to_string(s.metrics()).unwrap()).unwrap();
    assert_eq!(metrics.value("cairn_pipeline_stale", &[]), Some(1.0));

    // Second check, and a daemon started on the same state: same episode, nobody told again.
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("still stale"), "{}", text(&o));
    {
        let bus = private_bus();
        let d = Daemon::start(s.cmd(), &bus);
        d.wait_notify("STALE: pipeline");
    }
    assert_eq!(sink.to_path("/hook/stale").len(), 1);
    mail.expect_none_more(&tag, 1);

    // A success ends the episode...
    put_status(
        &s.state(),
        &status("snapshot", "ok-1", StageResult::Success, Some(0)),
    );
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("succeeded again"), "{}", text(&o));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("heartbeat/heartbeat.json")).unwrap())
            .unwrap();
    assert_eq!(state["episodes"], serde_json::json!({}), "{state:#}");

    // ...and the next staleness is a new one, alerted again.
    let mut again = status("snapshot", "fail-2", StageResult::Failure, Some(3));
    again.last_success = Some(Utc::now() - chrono::Duration::hours(30));
    again.summary = format!("again {tag}");
    put_status(&s.state(), &again);
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    mail.wait_for_count(&tag, 2, WAIT).unwrap();
    assert_eq!(sink.to_path("/hook/stale").len(), 2);
    mail.remove(&tag).unwrap();
}

/// Mailbox helper: no more than `n` messages with `needle` arrive within a grace period.
trait NoMore {
    fn expect_none_more(&self, needle: &str, n: usize);
}

impl NoMore for mta::Mailbox {
    fn expect_none_more(&self, needle: &str, n: usize) {
        std::thread::sleep(Duration::from_millis(500));
        let c = self.count(needle).unwrap();
        assert_eq!(c, n, "{c} messages with {needle}, expected {n}");
    }
}

#[test]
fn a_pipeline_that_never_ran_is_stale_and_an_undelivered_alert_is_exit_5_and_retried() {
    let sink = HttpSink::start();
    sink.answer("/hook", 500);
    let s = Scratch::new(&format!(
        "[heartbeat]\nmax_age = 2h\nretries = 1\n\
         [alert]\nmail_to = root\nsendmail = /nonexistent/sendmail\nsmtp = no\nwebhook = {}\n",
        sink.url("/hook/x")
    ));
    // The heartbeat first looked 3 hours ago; nothing ran since.
    let first_seen = Utc::now() - chrono::Duration::hours(3);
    std::fs::create_dir_all(s.state().join("heartbeat")).unwrap();
    std::fs::write(
        s.state().join("heartbeat/heartbeat.json"),
        serde_json::json!({"first_seen": first_seen}).to_string(),
    )
    .unwrap();
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("has not succeeded for 3h"), "{out}");
    assert!(
        out.contains("alert for root@localhost NOT delivered"),
        "{out}"
    );
    assert!(
        out.contains("the webhook (json) did not take the alert: the server answered HTTP 500"),
        "{out}"
    );
    assert!(out.contains("after 2 attempts"), "{out}");
    assert!(
        !out.contains(&sink.url("/hook")),
        "the webhook URL is a secret: {out}"
    );
    assert_eq!(sink.to_path("/hook/x").len(), 2, "one retry");
    // Nobody was told: the next check tries again.
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(sink.to_path("/hook/x").len(), 4);
    // The webhook works again: the alert reaches it, and that ends the retries.
    sink.answer("/hook", 200);
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 5, "the mail still failed: {}", text(&o));
    let hook = sink.to_path("/hook/x").pop().unwrap().json();
    assert!(
        hook["body"]
            .as_str()
            .unwrap()
            .contains("No run of cairn-snapshot.service"),
        "{hook}"
    );
    let o = s.cmd().arg("check").output().unwrap();
    assert_eq!(code(&o), 3, "alerted in this episode: {}", text(&o));
    assert_eq!(sink.to_path("/hook/x").len(), 5);
}

#[test]
fn ping_sends_one_ping_and_reports_an_undelivered_one() {
    let sink = HttpSink::start();
    sink.answer("/down", 503);
    let s = Scratch::new(&format!(
        "[heartbeat]\nping_url = {}\ndrill_ping_url = {}\nretries = 2\n",
        sink.url("/hc/uuid-1"),
        sink.url("/hc/drill-9")
    ));
    ok(&s.cmd().arg("ping").output().unwrap());
    ok(&s.cmd().args(["ping", "--fail"]).output().unwrap());
    put_status(
        &s.state(),
        &status("drill", "d-7", StageResult::Success, Some(0)),
    );
    ok(&s.cmd().args(["ping", "--stage", "drill"]).output().unwrap());
    let paths: Vec<String> = sink.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/hc/uuid-1", "/hc/uuid-1/fail", "/hc/drill-9"]);
    assert!(sink.to_path("/hc/drill-9")[0]
        .text()
        .contains("drill success (run d-7"));
    assert_eq!(
        sink.requests()[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    s.set_conf(&format!(
        "[heartbeat]\nping_url = {}\nretries = 2\ntimeout = 2s\n",
        sink.url("/down/uuid-2")
    ));
    let o = s.cmd().arg("ping").output().unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("NOT delivered: the server answered HTTP 503"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("uuid-2"), "never the URL: {}", text(&o));
    assert_eq!(
        sink.to_path("/down/uuid-2").len(),
        3,
        "retries are bounded: 1 + 2"
    );
    // No drill URL: a usage error, nothing sent.
    let o = s.cmd().args(["ping", "--stage", "drill"]).output().unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("drill_ping_url is not set"),
        "{}",
        text(&o)
    );
}

#[test]
fn non_http_urls_are_refused_without_being_shown() {
    for (conf, secret) in [
        (
            "[heartbeat]\nping_url = ftp://example.org/tok-ftp\n",
            "tok-ftp",
        ),
        ("[heartbeat]\nping_url = file:///etc/tok-file\n", "tok-file"),
        (
            "[heartbeat]\ndrill_ping_url = gopher://h/tok-go\n",
            "tok-go",
        ),
        (
            "[alert]\nmail_to = root\nwebhook = javascript:tok-js\n",
            "tok-js",
        ),
    ] {
        let s = Scratch::new(conf);
        for args in [&["ping"][..], &["check"], &["alert", "x.service"]] {
            let o = s.cmd().args(args).output().unwrap();
            assert_eq!(code(&o), 1, "{conf} {args:?}: {}", text(&o));
            assert!(
                text(&o).contains("not an http:// or https:// URL"),
                "{}",
                text(&o)
            );
            assert!(!text(&o).contains(secret), "{}", text(&o));
        }
    }
}

#[test]
fn webhook_payloads_have_each_formats_shape_and_mail_and_webhook_are_independent() {
    let mail = mailbox();
    let sink = HttpSink::start();
    let unit = "hbtest-unit.service";
    let run = |format: &str, url: &str, sendmail: &str, tag: &str| {
        let s = Scratch::new(&format!(
            "[heartbeat]\nretries = 0\n[alert]\nmail_to = {}\nsendmail = {sendmail}\nsmtp = no\nwebhook = {url}\nwebhook_format = {format}\n",
            mta::ADDRESS
        ));
        s.cmd()
            .args(["alert", unit])
            .env("MONITOR_UNIT", unit)
            .env("MONITOR_SERVICE_RESULT", "exit-code")
            .env("MONITOR_EXIT_CODE", "exited")
            .env("MONITOR_EXIT_STATUS", "3")
            .env("MONITOR_INVOCATION_ID", tag)
            .output()
            .unwrap()
    };
    let tag = mta::token("hbhook").replace('-', "");
    let tag = &tag[tag.len() - 32..];
    let subject = format!("{unit} FAILED: {unit} failed (exit-code, exited, status 3");

    ok(&run("slack", &sink.url("/slack/T1/B2"), mta::SENDMAIL, tag));
    let v = sink.wait_for_path("/slack/T1/B2", WAIT).unwrap().json();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["text"]);
    assert!(v["text"].as_str().unwrap().contains(&subject), "{v}");
    assert!(v["text"].as_str().unwrap().contains(tag), "{v}");
    mail.wait_for(tag, WAIT).unwrap();

    ok(&run(
        "discord",
        &sink.url("/api/webhooks/1/tok"),
        mta::SENDMAIL,
        tag,
    ));
    let v = sink
        .wait_for_path("/api/webhooks/1/tok", WAIT)
        .unwrap()
        .json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["content"]
    );
    let c = v["content"].as_str().unwrap();
    assert!(c.starts_with("**[cairn] ") && c.contains(&subject), "{c}");
    assert!(c.chars().count() <= 2000);

    ok(&run("ntfy", &sink.url("/backups-db1"), mta::SENDMAIL, tag));
    let r = sink.wait_for_path("/", WAIT).unwrap();
    let v = r.json();
    assert_eq!(v["topic"], "backups-db1");
    assert!(v["title"].as_str().unwrap().contains(&subject), "{v}");
    assert!(v["message"].as_str().unwrap().contains(tag), "{v}");
    assert_eq!(v["priority"], 4);
    assert_eq!(
        v["tags"],
        serde_json::json!(["rotating_light", "cairn", unit])
    );

    ok(&run("json", &sink.url("/plain"), mta::SENDMAIL, tag));
    let v = sink.wait_for_path("/plain", WAIT).unwrap().json();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["body", "headline", "host", "run_id", "stage", "verdict"]
    );
    assert_eq!(v["verdict"], "FAILED");
    assert_eq!(v["stage"], unit);
    assert_eq!(v["run_id"], tag);
    assert!(
        v["body"]
            .as_str()
            .unwrap()
            .contains("Result:      exit-code"),
        "{v}"
    );

    // The webhook refuses: the mail still goes, the exit code says not everything did.
    sink.answer("/refuse", 500);
    let o = run("json", &sink.url("/refuse"), mta::SENDMAIL, tag);
    assert_eq!(code(&o), 5, "{}", text(&o));
    mail.wait_for_count(tag, 5, WAIT).unwrap();
    // No MTA: the webhook still gets it.
    let o = run("json", &sink.url("/nomail"), "/nonexistent/sendmail", tag);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("alert posted to the webhook (json)"),
        "{}",
        text(&o)
    );
    sink.wait_for_path("/nomail", WAIT).unwrap();
    assert_eq!(mail.count(tag).unwrap(), 5);
    mail.remove(tag).unwrap();
}
