//! Tests of the stage contract with real files, sockets and a private D-Bus daemon.

use super::*;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

type Entries = log::MemoryLog;

fn env_with(notifier: Notifier, dbus: DbusTarget) -> (StageEnv, Entries) {
    let mem: Entries = Arc::new(Mutex::new(Vec::new()));
    let env = StageEnv {
        invocation_id: Some("0123456789ABCDEF0123456789abcdef".into()),
        notifier,
        dbus,
        dbus_timeout: Duration::from_secs(5),
        sink: Some(Sink::Memory(mem.clone())),
        tty: false,
    };
    (env, mem)
}

fn quiet_env() -> (StageEnv, Entries) {
    env_with(Notifier::default(), DbusTarget::Off)
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn entries_with_id(mem: &Entries, id: &MessageId) -> Vec<Vec<(String, String)>> {
    mem.lock()
        .unwrap()
        .iter()
        .filter(|e| field(e, "MESSAGE_ID") == Some(id.id))
        .cloned()
        .collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn start_writes_running_status_and_logs_started() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, mem) = quiet_env();
    let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
    assert_eq!(stage.run_id(), "0123456789abcdef0123456789abcdef");
    assert_eq!(stage.name(), "snapshot");

    let st = read_status(&dirs, "snapshot").unwrap().unwrap();
    assert_eq!(st.stage, "snapshot");
    assert_eq!(st.run_id, stage.run_id());
    assert_eq!(st.result, StageResult::Running);
    assert_eq!(st.exit_code, None);
    assert_eq!(st.finished, None);
    assert_eq!(st.pid, std::process::id());
    assert_eq!(st.version, VERSION);
    assert!(!st.host.is_empty());

    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs.state.join("status/snapshot.json")).unwrap())
            .unwrap();
    assert_eq!(raw["result"], "running");
    let started = raw["started"].as_str().unwrap();
    assert!(DateTime::parse_from_rfc3339(started).is_ok(), "{started}");

    let started_logs = entries_with_id(&mem, &msg::STAGE_STARTED);
    assert_eq!(started_logs.len(), 1);
    let e = &started_logs[0];
    assert_eq!(field(e, "SYSLOG_IDENTIFIER"), Some("cairn-snapshot"));
    assert_eq!(field(e, "CAIRN_STAGE"), Some("snapshot"));
    assert_eq!(field(e, "CAIRN_RUN"), Some(stage.run_id()));
    assert_eq!(field(e, "PRIORITY"), Some("6"));
    assert_eq!(stage.finish(Outcome::success("ok")), 0);
}

#[test]
fn finish_records_success_partial_and_failure() {
    let cases = [
        (
            Outcome::success("3 files").with_figures(serde_json::json!({"files": 3})),
            0,
            StageResult::Success,
            &msg::STAGE_SUCCEEDED,
            "5",
        ),
        (
            Outcome::partial("2 of 3 files", "/etc/shadow: permission denied")
                .with_figures(serde_json::json!({"files": 2, "unreadable": 1})),
            3,
            StageResult::Partial,
            &msg::STAGE_PARTIAL,
            "4",
        ),
        (
            Outcome::failure(
                Exit::Environment,
                "backup disk missing",
                "/srv/backup is not mounted",
            ),
            2,
            StageResult::Failure,
            &msg::STAGE_FAILED,
            "3",
        ),
        (
            Outcome::failure(Exit::Undelivered, "ping\nfailed", "timeout"),
            5,
            StageResult::Failure,
            &msg::STAGE_FAILED,
            "3",
        ),
    ];
    for (outcome, code, result, id, prio) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs::under(tmp.path());
        let (env, mem) = quiet_env();
        let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
        let run = stage.run_id().to_owned();
        let expected = outcome.clone();
        assert_eq!(stage.finish(outcome), code);

        let st = read_status(&dirs, "snapshot").unwrap().unwrap();
        assert_eq!(st.result, result);
        assert_eq!(st.exit_code, Some(code));
        assert_eq!(st.run_id, run);
        assert_eq!(st.summary, expected.summary.replace('\n', " "));
        assert!(!st.summary.contains('\n'));
        assert_eq!(st.error, expected.error);
        assert_eq!(st.figures, expected.figures);
        let finished = st.finished.expect("finished time");
        assert!(finished >= st.started);
        // Written atomically: nothing but the status file is left behind.
        assert_eq!(dir_names(&dirs.state.join("status")), vec!["snapshot.json"]);

        let logged = entries_with_id(&mem, id);
        assert_eq!(logged.len(), 1, "{result}");
        assert_eq!(field(&logged[0], "PRIORITY"), Some(prio));
        assert_eq!(field(&logged[0], "CAIRN_RESULT"), Some(result.as_str()));
        assert_eq!(
            field(&logged[0], "CAIRN_EXIT_CODE"),
            Some(code.to_string().as_str())
        );
        assert_eq!(field(&logged[0], "CAIRN_ERROR"), expected.error.as_deref());
    }
}

#[test]
fn last_success_and_first_start_are_carried_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let run = |outcome: Outcome| {
        let (env, _) = quiet_env();
        let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
        stage.finish(outcome);
        read_status(&dirs, "snapshot").unwrap().unwrap()
    };
    let first = run(Outcome::failure(Exit::Failed, "x", "y"));
    assert_eq!(first.last_success, None, "never succeeded");
    assert_eq!(first.first_started, Some(first.started));
    let ok = run(Outcome::success("fine"));
    assert_eq!(ok.last_success, ok.finished);
    assert_eq!(ok.first_started, Some(first.started));
    let failed = run(Outcome::failure(Exit::Environment, "disk", "gone"));
    assert_eq!(failed.result, StageResult::Failure);
    assert_eq!(failed.last_success, ok.finished, "kept through a failure");
    assert_eq!(failed.first_started, Some(first.started));
    let partial = run(Outcome::partial("some", "unreadable"));
    assert_eq!(
        partial.last_success, ok.finished,
        "a partial run is not a success"
    );
}

#[test]
fn status_file_is_world_readable_and_pretty() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, _) = quiet_env();
    let stage = Stage::start_in("upload", &dirs, env).unwrap();
    stage.finish(Outcome::success("done"));
    let path = dirs.state.join("status/upload.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let dmode = std::fs::metadata(dirs.state.join("status"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o755);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("}\n"));
    for key in [
        "stage",
        "run_id",
        "host",
        "pid",
        "version",
        "started",
        "finished",
        "result",
        "exit_code",
        "summary",
        "error",
        "figures",
    ] {
        assert!(
            text.contains(&format!("\"{key}\":")),
            "{key} missing in {text}"
        );
    }
}

#[test]
fn dropping_a_stage_records_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, mem) = quiet_env();
    drop(Stage::start_in("drill", &dirs, env).unwrap());
    let st = read_status(&dirs, "drill").unwrap().unwrap();
    assert_eq!(st.result, StageResult::Failure);
    assert_eq!(st.exit_code, Some(3));
    assert!(st.error.unwrap().contains("without recording an outcome"));
    assert_eq!(entries_with_id(&mem, &msg::STAGE_FAILED).len(), 1);
}

#[test]
fn an_unfinished_previous_run_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, _) = quiet_env();
    let first = Stage::start_in("snapshot", &dirs, env).unwrap();
    let first_run = first.run_id().to_owned();
    std::mem::forget(first); // as if the process had been killed

    let (mut env, mem) = quiet_env();
    env.invocation_id = None;
    let second = Stage::start_in("snapshot", &dirs, env).unwrap();
    assert_ne!(second.run_id(), first_run);
    assert_eq!(second.run_id().len(), 32);
    let logged = entries_with_id(&mem, &msg::STAGE_INTERRUPTED);
    assert_eq!(logged.len(), 1);
    assert_eq!(
        field(&logged[0], "CAIRN_PREVIOUS_RUN"),
        Some(first_run.as_str())
    );
    assert_eq!(second.finish(Outcome::success("")), 0);
}

#[test]
fn unwritable_state_dir_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: fails even for root.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let dirs = Dirs {
        state: blocker.join("state"),
        cache: tmp.path().join("cache"),
        runtime: tmp.path().join("run"),
    };
    let (env, mem) = quiet_env();
    let err = Stage::start_in("snapshot", &dirs, env).unwrap_err();
    assert!(matches!(err, StageError::StatusDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&blocker.display().to_string()),
        "{err}"
    );
    assert_eq!(err.exit(), Exit::Environment);
    // The failure was logged, and no STAGE_FAILED was recorded by a drop.
    let entries = mem.lock().unwrap();
    assert!(entries
        .iter()
        .any(|e| field(e, "PRIORITY") == Some("3")
            && field(e, "MESSAGE").unwrap().contains("blocker")));
    assert!(!entries
        .iter()
        .any(|e| field(e, "MESSAGE_ID") == Some(msg::STAGE_FAILED.id)));
}

#[test]
fn status_files_read_back_and_reject_odd_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    assert!(read_status(&dirs, "snapshot").unwrap().is_none());
    assert!(matches!(
        read_status(&dirs, "../x"),
        Err(StageError::InvalidName(_))
    ));
    assert!(matches!(
        read_status(&dirs, ""),
        Err(StageError::InvalidName(_))
    ));
    std::fs::create_dir_all(dirs.state.join("status")).unwrap();
    std::fs::write(dirs.state.join("status/bad.json"), b"{").unwrap();
    let err = read_status(&dirs, "bad").unwrap_err();
    assert!(err.to_string().contains("bad.json"), "{err}");
}

#[test]
fn dirs_take_the_first_entry_of_colon_lists() {
    let d = Dirs::from_values(
        Some(OsStr::new("/var/lib/cairn:/var/lib/other")),
        Some(OsStr::new(":/var/cache/x")),
        Some(OsStr::new("")),
    );
    assert_eq!(d.state, PathBuf::from("/var/lib/cairn"));
    assert_eq!(d.cache, PathBuf::from("/var/cache/x"));
    assert_eq!(d.runtime, PathBuf::from(Dirs::DEFAULT_RUNTIME));
    let d = Dirs::from_values(None, None, None);
    assert_eq!(
        d,
        Dirs {
            state: "/var/lib/cairn".into(),
            cache: "/var/cache/cairn".into(),
            runtime: "/run/cairn".into(),
        }
    );
}

#[test]
fn run_ids_come_from_invocation_id_or_randomness() {
    assert_eq!(
        run_id_from(Some("A1B2C3D4E5F60718293A4B5C6D7E8F90")).unwrap(),
        "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    );
    let a = run_id_from(Some("not-an-id")).unwrap();
    let b = run_id_from(None).unwrap();
    assert_ne!(a, b);
    for id in [a, b] {
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}

#[test]
fn exit_codes_and_result_mapping() {
    let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
    for e in Exit::ALL {
        assert_eq!(Exit::from_code(e.code()), Some(e));
        assert!(!e.describe().is_empty());
    }
    assert_eq!(Exit::from_code(6), None);
    assert_eq!(Outcome::success("x").result(), StageResult::Success);
    assert_eq!(Outcome::partial("x", "y").result(), StageResult::Partial);
    assert_eq!(Outcome::partial("x", "y").exit, Exit::Failed);
    assert_eq!(
        Outcome::failure(Exit::Failed, "x", "y").result(),
        StageResult::Failure
    );
    let mut odd = Outcome::failure(Exit::Mismatch, "x", "y");
    odd.partial = true; // partial only qualifies exit 3
    assert_eq!(odd.result(), StageResult::Failure);
}

#[test]
fn sd_notify_messages_reach_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, _) = env_with(
        Notifier::new(Some(sock_path.into_os_string())),
        DbusTarget::Off,
    );
    let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
    let recv = || {
        let mut buf = [0u8; 1024];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    stage.ready();
    assert_eq!(recv(), "READY=1\n");
    stage.status("reading /etc\nand more");
    assert_eq!(recv(), "STATUS=reading /etc and more\n");
    stage.extend_timeout(Duration::from_secs(30));
    assert_eq!(recv(), "EXTEND_TIMEOUT_USEC=30000000\n");
    stage.watchdog();
    assert_eq!(recv(), "WATCHDOG=1\n");
    let p = stage.progress(Some(100), "reading files");
    p.inc(50);
    assert_eq!(recv(), "STATUS=reading files: 50 B of 100 B (50%)\n");
    p.finish();
    assert_eq!(recv(), "STATUS=reading files: done, 50 B\n");
    stage.finish(Outcome::success("all good"));
    assert_eq!(recv(), "STATUS=succeeded: all good\n");
}

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

fn private_bus() -> Option<Bus> {
    let spawned = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: dbus-daemon is not installed (Debian package dbus-daemon)");
            return None;
        }
        Err(e) => panic!("cannot start dbus-daemon: {e}"),
    };
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line.trim().to_owned();
    assert!(!address.is_empty(), "dbus-daemon printed no address");
    Some(Bus { child, address })
}

#[test]
fn stage_finished_signal_is_received() {
    let Some(bus) = private_bus() else { return };
    let listener = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(dbus::INTERFACE)
        .unwrap()
        .member(dbus::SIGNAL)
        .unwrap()
        .path(dbus::OBJECT_PATH)
        .unwrap()
        .build();
    let mut messages =
        zbus::blocking::MessageIterator::for_match_rule(rule, &listener, None).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(m) = messages.next() {
            let _ = tx.send(m);
        }
    });

    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::under(tmp.path());
    let (env, mem) = env_with(
        Notifier::default(),
        DbusTarget::Address(bus.address.clone()),
    );
    let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
    let run = stage.run_id().to_owned();
    let code = stage.finish(
        Outcome::partial("2 of 3 files", "1 unreadable")
            .with_figures(serde_json::json!({"files": 2})),
    );
    assert_eq!(code, 3);

    let msg = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no StageFinished signal within 10 s")
        .unwrap();
    let header = msg.header();
    assert_eq!(header.path().map(|p| p.as_str()), Some(dbus::OBJECT_PATH));
    let (stage_name, result, run_id, json): (String, String, String, String) =
        msg.body().deserialize().unwrap();
    assert_eq!(stage_name, "snapshot");
    assert_eq!(result, "partial");
    assert_eq!(run_id, run);
    let summary: StatusFile = serde_json::from_str(&json).unwrap();
    assert_eq!(summary, read_status(&dirs, "snapshot").unwrap().unwrap());
    assert_eq!(summary.figures["files"], 2);
    // No complaint about the bus was logged.
    assert!(!mem
        .lock()
        .unwrap()
        .iter()
        .any(|e| field(e, "MESSAGE").unwrap().contains("D-Bus")));
}

#[test]
fn an_absent_bus_fails_fast_and_never_fails_the_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let status = StatusFile {
        stage: "snapshot".into(),
        run_id: "r".into(),
        host: "h".into(),
        pid: 1,
        version: VERSION.into(),
        started: now(),
        finished: None,
        result: StageResult::Success,
        exit_code: Some(0),
        summary: String::new(),
        error: None,
        figures: serde_json::Value::Null,
        last_success: None,
        first_started: None,
    };
    let missing = format!("unix:path={}", tmp.path().join("no-bus").display());
    let t = Instant::now();
    let err =
        dbus::emit_stage_finished_at(Some(&missing), &status, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, SignalError::Connect(_)), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );

    // A bus that accepts the connection but never answers is cut off by the timeout.
    let wedged_path = tmp.path().join("wedged");
    let _wedged = UnixListener::bind(&wedged_path).unwrap();
    let wedged = format!("unix:path={}", wedged_path.display());
    let t = Instant::now();
    let err = dbus::emit_stage_finished_at(Some(&wedged), &status, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, SignalError::TimedOut(_)), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );

    // Through a stage: the exit code is the outcome's, the miss is logged as a notice.
    let dirs = Dirs::under(tmp.path());
    let (mut env, mem) = env_with(Notifier::default(), DbusTarget::Address(wedged));
    env.dbus_timeout = Duration::from_millis(300);
    let stage = Stage::start_in("snapshot", &dirs, env).unwrap();
    assert_eq!(stage.finish(Outcome::success("fine")), 0);
    assert_eq!(
        read_status(&dirs, "snapshot").unwrap().unwrap().result,
        StageResult::Success
    );
    assert!(mem
        .lock()
        .unwrap()
        .iter()
        .any(|e| field(e, "PRIORITY") == Some("5")
            && field(e, "MESSAGE")
                .unwrap()
                .contains("D-Bus signal not sent")));
}

#[test]
fn notifier_from_explicit_socket_is_disabled_when_empty() {
    assert!(!Notifier::new(Some(OsString::new())).is_enabled());
}
