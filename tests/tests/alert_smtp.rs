//! The alert mail's second way into the local MTA: when its sendmail cannot be run (a
//! sandboxed unit cannot run a set-user-ID program), cairn hands the mail to the same MTA
//! over SMTP on the loopback. A real exim4 daemon, started by the test on a free loopback
//! port, delivers it into the test mailbox.
//!
//! Needs root (the exim daemon) and exim4 (scripts/deps.sh); prints `SKIPPED:` without root.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{code, text, Env};

struct Exim(Child);

impl Drop for Exim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exim_on(port: u16) -> Exim {
    let child = Command::new(cairn_tests::mta::EXIM)
        .args(["-bdf", "-oX", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the exim4 daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "exim listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Exim(child)
}

#[test]
fn without_a_usable_sendmail_the_alert_goes_by_smtp_to_the_local_mta() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (an exim daemon)");
        return;
    }
    cairn_tests::mta::Mta::available().expect("the local MTA (scripts/deps.sh)");
    let mail = cairn_tests::mta::Mta::mailbox().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _exim = exim_on(port);
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let env = Env::new(&[&src]);
    let tag = cairn_tests::mta::token("smtp");
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.conf)
        .unwrap();
    write!(
        conf,
        "[alert]\nmail_to = {}\nsendmail = /nonexistent/{tag}/sendmail\nsmtp = 127.0.0.1:{port}\n",
        cairn_tests::mta::ADDRESS
    )
    .unwrap();
    drop(conf);
    // No snapshot yet: the drill cannot run, exit 3, and mails FAILED.
    let o = env.cmd("cairn-drill").output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    let needle = env.repo.display().to_string();
    let m = mail
        .wait_for(&needle, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(m.subject().contains("FAILED"), "{}", m.subject());

    // With the fallback off, the alert is undelivered, and says so.
    let c = std::fs::read_to_string(&env.conf)
        .unwrap()
        .replace(&format!("smtp = 127.0.0.1:{port}"), "smtp = no");
    std::fs::write(&env.conf, c).unwrap();
    let o = env.cmd("cairn-drill").output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no sendmail program"),
        "{}",
        text(&o)
    );
}
