//! `cairn-heartbeat` under a real systemd (booted container), through the shipped units:
//! - a failing unit with `OnFailure=cairn-alert@%n.service`: `cairn-heartbeat alert`
//!   (root, sandboxed, NoNewPrivileges=) mails its result, from systemd's `$MONITOR_*`
//!   variables, and its last journal lines, read through sd-journal, over SMTP on the
//!   loopback to an exim4 daemon the test starts in the container on a free port
//!   (`[alert] smtp`), which delivers it into a local mailbox;
//! - `cairn-heartbeat.service` (Type=notify, user cairn, sandboxed) on the system bus: a
//!   real `cairn-snapshot` run as a unit sends its `StageFinished` signal, the daemon pings
//!   the test's HTTP listener and writes the metrics file; a drill that has not passed for
//!   longer than `[drill] max_age` is found STALE at the daemon's first check (journal,
//!   metrics; its mail cannot use the setuid sendmail inside this sandbox and goes to the
//!   same loopback SMTP port); the sandbox keeps `/var/lib/cairn` read-only but for the
//!   heartbeat's own directory.
//!
//! The container shares the host's network (`host_network`), so the daemon reaches the
//! listener on the host's loopback; exim4.service is masked (the test's exim daemon
//! listens on a free port instead), as is PostgreSQL, so nothing in it listens on a fixed
//! port. Needs root and systemd-nspawn; prints `SKIPPED:` without root.

use cairn_tests::output_text as text;
use std::time::{Duration, Instant};

use cairn_tests::container::Container;
use cairn_tests::httpsink::HttpSink;

const MAIL_USER: &str = "cairnhbmail";
const WAIT: Duration = Duration::from_secs(30);

/// The first message in the container user's mailbox whose subject contains `needle`.
fn wait_for_mail(c: &Container, needle: &str) -> cairn_tests::mta::Message {
    c.wait_for_mail(MAIL_USER, needle, WAIT)
}

#[test]
fn alerts_and_heartbeat_under_systemd() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (containers)");
        return;
    }
    Container::available().expect("a booted systemd container (see .ci/run)");
    let sink = HttpSink::start();
    let c = Container::builder()
        .host_network()
        .mask("postgresql.service")
        .mask("postgresql@15-main.service")
        .mask("exim4.service")
        .boot()
        .unwrap();
    let bindir = c.install_bins(&["cairn", "cairn-heartbeat", "cairn-snapshot"]);
    let units = c.install_units(&bindir);
    for u in ["cairn-heartbeat.service", "cairn-alert@.service"] {
        assert!(units.iter().any(|n| n == u), "{u} is shipped: {units:?}");
    }
    let unit_dir = "/usr/local/lib/systemd/system";
    let o = c.exec(&[
        "systemd-analyze",
        "verify",
        &format!("{unit_dir}/cairn-heartbeat.service"),
        &format!("{unit_dir}/cairn-alert@.service"),
    ]);
    assert!(
        o.status.success() && !text(&o).contains("Unknown"),
        "verify: {}",
        text(&o)
    );
    for u in ["cairn-heartbeat.service", "cairn-alert@.service"] {
        let o = c.exec(&[
            "systemd-analyze",
            "security",
            "--offline=yes",
            "--threshold=60",
            &format!("{unit_dir}/{u}"),
        ]);
        let out = text(&o);
        let score = out.lines().last().unwrap_or_default().to_string();
        eprintln!("{u}: {score}");
        assert!(
            o.status.success(),
            "{u} is above the exposure threshold: {out}"
        );
    }

    let bin = |n: &str| bindir.join(n).display().to_string();
    c.sh_ok(&format!(
            "useradd --create-home {MAIL_USER} && \
             (id cairn || useradd --system --home-dir /var/lib/cairn --shell /usr/sbin/nologin cairn) && \
             install -d -o cairn -g cairn -m 0750 /var/lib/cairn /var/lib/cairn/status && \
             install -d -o cairn -g cairn /var/lib/prometheus/node-exporter /srv/repo && \
             install -d -m 0755 /etc/cairn"
        ),
    );
    // The MTA's daemon, on a free port of the (shared) loopback: the sandboxed units hand
    // their mail to it over SMTP.
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    c.sh_ok(&format!(
        "systemd-run --unit=cairn-hbtest-exim {} -bdf -oX {smtp_port}",
        cairn_tests::mta::EXIM
    ));
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_err() {
        assert!(Instant::now() < deadline, "exim listens on {smtp_port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let root = c.root().to_path_buf();
    let tag = cairn_tests::mta::token("hbct");
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!(
            "[repository]\npath = /srv/repo/cairn\nkey_file = /etc/cairn/repo.key\n\
             [sources]\npaths = /etc/hostname\n\
             [heartbeat]\nping_url = {}\nmetrics_file = /var/lib/prometheus/node-exporter/cairn.prom\n\
             retries = 1\ntimeout = 5s\n\
             [drill]\nmax_age = 1d\n\
             [alert]\nmail_to = {MAIL_USER}\nsmtp = 127.0.0.1:{smtp_port}\n",
            sink.url(&format!("/ping/{tag}"))
        ),
    )
    .unwrap();
    c.sh_ok(&format!(
        "chown root:cairn /etc/cairn/cairn.conf && chmod 0640 /etc/cairn/cairn.conf && \
             {cairn} key generate /etc/cairn/repo.key && chown root:cairn /etc/cairn/repo.key && \
             chmod 0640 /etc/cairn/repo.key && setpriv --reuid=cairn --regid=cairn --init-groups \
             env CAIRN_CONFIG=/etc/cairn/cairn.conf {cairn} init",
        cairn = bin("cairn")
    ));

    // --- OnFailure=: a failing unit is mailed with its journal lines --------------------
    std::fs::write(
        root.join("etc/systemd/system/hbfail.service"),
        format!(
            "[Unit]\nDescription=cairn test: a unit that fails\nOnFailure=cairn-alert@%n.service\n\
             [Service]\nType=oneshot\n\
             ExecStart=/bin/sh -c 'echo \"{tag} first line\"; echo \"{tag} second line\" >&2; exit 3'\n"
        ),
    )
    .unwrap();
    c.sh_ok("systemctl daemon-reload");
    let o = c.systemctl(&["start", "hbfail.service"]);
    assert!(!o.status.success(), "the test unit fails");
    let invocation = c
        .sh_ok("systemctl show -P InvocationID hbfail.service")
        .trim()
        .to_string();
    let m = wait_for_mail(&c, "hbfail.service FAILED");
    assert!(
        m.subject()
            .contains("hbfail.service failed (exit-code, exited, status 3)"),
        "{}",
        m.subject()
    );
    let body = m.body();
    assert!(body.contains("Result:      exit-code"), "{body}");
    assert!(
        body.contains(&format!("Invocation:  {invocation}")),
        "{body}"
    );
    assert!(body.contains("journal lines of hbfail.service"), "{body}");
    assert!(body.contains(&format!("{tag} first line")), "{body}");
    assert!(body.contains(&format!("{tag} second line")), "{body}");
    // systemd's own line about the failure is among them (UNIT= from PID 1).
    assert!(
        body.contains("Failed with result 'exit-code'") || body.contains("Main process exited"),
        "{body}"
    );
    c.wait_for_unit_state("cairn-alert@hbfail.service.service", "inactive", WAIT)
        .unwrap();
    assert_eq!(
        c.sh_ok("systemctl show -P Result cairn-alert@hbfail.service.service")
            .trim(),
        "success"
    );

    // --- the daemon on the system bus -----------------------------------------------------
    // A drill that last passed two days ago: stale at the daemon's first check.
    let old = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    std::fs::write(
        root.join("var/lib/cairn/status/drill.json"),
        format!(
            "{{\"stage\":\"drill\",\"run_id\":\"d0\",\"host\":\"h\",\"pid\":1,\"version\":\"0\",\
             \"started\":\"{old}\",\"finished\":\"{old}\",\"result\":\"success\",\"exit_code\":0,\
             \"summary\":\"drill {tag}\",\"last_success\":\"{old}\",\"first_started\":\"{old}\"}}"
        ),
    )
    .unwrap();
    c.sh_ok("chown cairn:cairn /var/lib/cairn/status/drill.json");
    let o = c.systemctl(&["start", "cairn-heartbeat.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        c.journal(&["-u", "cairn-heartbeat.service"])
    );
    c.wait_for_unit_state("cairn-heartbeat.service", "running", WAIT)
        .unwrap();
    let hb_journal = || c.journal(&["-u", "cairn-heartbeat.service", "-o", "cat"]);
    let deadline = Instant::now() + WAIT;
    while !(hb_journal().contains("listening for StageFinished signals on the system bus")
        && hb_journal().contains("the restore drill has not passed for 2d"))
    {
        assert!(Instant::now() < deadline, "{}", hb_journal());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A real snapshot, as a unit of user cairn: its signal and status file reach the daemon.
    let o = c.exec(&[
        "systemd-run",
        "--wait",
        "--collect",
        "--unit=cairn-hbtest-snapshot",
        "-p",
        "User=cairn",
        "-p",
        "Group=cairn",
        "-p",
        "StateDirectory=cairn",
        "-p",
        "StateDirectoryMode=0750",
        "-p",
        "CacheDirectory=cairn",
        "--setenv=CAIRN_CONFIG=/etc/cairn/cairn.conf",
        &bin("cairn-snapshot"),
    ]);
    assert!(
        o.status.success(),
        "snapshot: {}\n{}",
        text(&o),
        c.journal(&["-n", "40"])
    );
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("var/lib/cairn/status/snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["result"], "success", "{status:#}");
    let run = status["run_id"].as_str().unwrap().to_string();
    let ping = sink
        .wait_for_path(&format!("/ping/{tag}"), WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", hb_journal()));
    assert!(
        ping.text()
            .contains(&format!("snapshot success (run {run}, exit 0)")),
        "{}",
        ping.text()
    );
    let deadline = Instant::now() + WAIT;
    let signal = format!("StageFinished signal: snapshot success (run {run})");
    while !hb_journal().contains(&signal) {
        assert!(
            Instant::now() < deadline,
            "no {signal:?} in\n{}",
            hb_journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics =
        std::fs::read_to_string(root.join("var/lib/prometheus/node-exporter/cairn.prom")).unwrap();
    let m = cairn_tests::promparse::parse(&metrics).unwrap();
    assert_eq!(
        m.value(
            "cairn_stage_result",
            &[("stage", "snapshot"), ("result", "success")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(m.value("cairn_drill_stale", &[]), Some(1.0), "{metrics}");

    // The sandbox: the stages' state is read-only to the daemon, its own directory is not.
    let pid = c
        .sh_ok("systemctl show -P MainPID cairn-heartbeat.service")
        .trim()
        .to_string();
    let inside = |path: &str| {
        c.exec(&[
            "nsenter",
            "-t",
            &pid,
            "-m",
            "--",
            "setpriv",
            "--reuid=cairn",
            "--regid=cairn",
            "--init-groups",
            "sh",
            "-c",
            &format!("touch {path} && rm -f {path}"),
        ])
    };
    let o = inside("/var/lib/cairn/status/forged.json");
    assert!(
        !o.status.success(),
        "status dir writable in the sandbox: {}",
        text(&o)
    );
    assert!(text(&o).contains("Read-only file system"), "{}", text(&o));
    let o = inside("/var/lib/cairn/heartbeat/probe");
    assert!(o.status.success(), "own state not writable: {}", text(&o));
    let o = inside("/srv/repo/cairn/probe");
    assert!(
        !o.status.success(),
        "the repository is read-only to the heartbeat: {}",
        text(&o)
    );

    c.shutdown().unwrap();
}
