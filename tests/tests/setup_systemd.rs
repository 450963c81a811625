//! `cairn setup` on a booted systemd (container): `--install-mta` really installs
//! Debian's exim4 in local-only mode from the package archive (the container's root is a
//! throw-away overlay, so the host's packages are untouched).
//!
//! Needs root and systemd-nspawn; prints `SKIPPED:` without root. The MTA test also
//! needs the Debian archive (apt's lists as `.ci/run` left them, and the network to the
//! package registry).

use cairn_tests::container::Container;
use serde_json::Value;

fn ready() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (containers)");
        return false;
    }
    Container::available().expect("a booted systemd container (see .ci/run)");
    true
}

fn step(v: &Value, name: &str) -> (String, String) {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| {
            (
                s["result"].as_str().unwrap().to_string(),
                s["detail"].as_str().unwrap().to_string(),
            )
        })
        .unwrap_or_else(|| panic!("no {name} step: {v:#}"))
}

#[test]
fn install_mta_installs_a_local_only_exim4() {
    if !ready() {
        return;
    }
    let c = Container::builder()
        .host_network()
        .mask("postgresql.service")
        .mask("postgresql@15-main.service")
        .boot()
        .unwrap();
    let purge = c.sh(
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q exim4-daemon-light exim4-base \
         exim4-config bsd-mailx >/dev/null 2>&1; test ! -e /usr/sbin/sendmail",
    );
    assert!(
        purge.status.success(),
        "no MTA left in the container: {}",
        String::from_utf8_lossy(&purge.stderr)
    );
    std::fs::create_dir_all(c.root().join("etc/cairn")).unwrap();
    std::fs::write(
        c.root().join("etc/cairn/cairn.conf"),
        "[alert]\nmail_to = root\n",
    )
    .unwrap();
    // setup runs cairn-preflight from beside itself for its smoke test.
    let cairn = c.install_bins(&["cairn", "cairn-preflight"]).join("cairn");
    let cairn = cairn.to_str().unwrap();

    let o = c.exec(&[cairn, "setup", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (result, detail) = step(&v, "mta");
    assert_eq!(
        result, "failed",
        "without --install-mta nothing is installed"
    );
    assert!(detail.contains("--install-mta"), "{detail}");

    let o = c.exec(&[cairn, "setup", "--install-mta", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let (result, detail) = step(&v, "mta");
    assert_eq!(result, "done", "{detail}");
    let conf = c.sh("cat /etc/exim4/update-exim4.conf.conf");
    let conf = String::from_utf8_lossy(&conf.stdout);
    assert!(
        conf.contains("dc_eximconfig_configtype='local'"),
        "local delivery only: {conf}"
    );
    assert!(
        conf.contains("dc_local_interfaces='127.0.0.1 ; ::1'"),
        "listens on loopback only: {conf}"
    );
    // It routes mail for a local user to a local mailbox, and nothing elsewhere.
    let route = c.sh("exim4 -bt root@localhost");
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("transport = "), "{route}");
    let remote = c.sh("exim4 -bt someone@example.org");
    assert!(!remote.status.success(), "no route off this host");
    // A second run finds it in place.
    let o = c.exec(&[cairn, "setup", "--install-mta", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(step(&v, "mta").0, "already_done");
    c.shutdown().unwrap();
}
