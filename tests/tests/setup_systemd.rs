//! `cairn setup` on a booted systemd (container): with the project's units installed,
//! setup writes their drop-ins and enables and starts the timers, and the units it set up
//! then run the backup by themselves (preflight mounts the disk from inside its sandbox,
//! the snapshot reads a root-only file as user cairn). `--install-mta` really installs
//! Debian's exim4 in local-only mode from the package archive (the container's root is a
//! throw-away overlay, so the host's packages are untouched).
//!
//! Needs root and systemd-nspawn; prints `SKIPPED:` without root. The MTA test also
//! needs the Debian archive (apt's lists as `.ci/run` left them, and the network to the
//! package registry).

use cairn_tests::output_text as text;
use std::time::Duration;

use cairn_tests::container::Container;
use cairn_tests::disk::{self, Disk, Fs};
use serde_json::Value;

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
    if !cairn_tests::container::ready() {
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

#[test]
fn setup_enables_the_timers_and_the_units_it_set_up_run_a_backup() {
    if !cairn_tests::container::ready() {
        return;
    }
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let (d, uuid) = Disk::small_ext4(dir.path(), "tm").unwrap();
    let c = Container::builder()
        .block_device(d.device())
        .mask("postgresql.service")
        .mask("postgresql@15-main.service")
        .boot()
        .unwrap();
    let bindir = c.install_bins(&["cairn", "cairn-preflight", "cairn-snapshot"]);
    let units = c.install_units(&bindir);
    for u in [
        "cairn-preflight.service",
        "cairn-snapshot.service",
        "cairn-backup.timer",
        "cairn-prune.service",
        "cairn-prune.timer",
        "cairn-drill.service",
        "cairn-drill.timer",
    ] {
        assert!(units.iter().any(|n| n == u), "{u} is shipped: {units:?}");
    }
    // Every shipped unit is one systemd accepts as written (no unknown setting, no
    // missing program).
    let paths: Vec<String> = units
        .iter()
        .map(|u| format!("/usr/local/lib/systemd/system/{u}"))
        .collect();
    let mut verify = vec!["systemd-analyze", "verify"];
    verify.extend(paths.iter().map(String::as_str));
    let o = c.exec(&verify);
    assert!(o.status.success(), "systemd-analyze verify: {}", text(&o));
    assert!(
        !text(&o).contains("Unknown"),
        "systemd-analyze verify: {}",
        text(&o)
    );
    let cairn = bindir.join("cairn");
    let cairn = cairn.to_str().unwrap();
    let root = c.root();
    // A source only root may read: the snapshot, running as cairn, reads it through
    // CAP_DAC_READ_SEARCH alone.
    std::fs::create_dir_all(root.join("srv/data")).unwrap();
    std::fs::write(root.join("srv/data/root-only.txt"), "for root's eyes\n").unwrap();
    assert!(c
        .sh("chmod 0600 /srv/data/root-only.txt && chmod 0700 /srv/data")
        .status
        .success());
    std::fs::create_dir_all(root.join("etc/cairn")).unwrap();
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!(
            "[repository]\npath = /srv/backup/cairn\nkey_credential = cairn.key\n\
             [sources]\npaths = /srv/data\n\
             [retention]\nkeep_last = 2\n\
             [preflight]\nmount = /srv/backup\nuuid = {uuid}\n\
             [heartbeat]\nmax_age = 2d\n\
             [alert]\nmail_to = root\n"
        ),
    )
    .unwrap();

    let o = c.exec(&[cairn, "setup", "--json"]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    let (result, detail) = step(&v, "units");
    assert_eq!(result, "done", "{detail}");
    let (result, detail) = step(&v, "timers");
    assert_eq!(result, "done", "{detail}");
    assert!(detail.contains("cairn-backup.timer") && detail.contains("cairn-prune.timer"));
    assert!(detail.contains("cairn-drill.timer"), "{detail}");
    assert!(detail.contains("cairn-heartbeat.service"), "{detail}");
    for t in [
        "cairn-backup.timer",
        "cairn-prune.timer",
        "cairn-drill.timer",
        "cairn-heartbeat.service",
    ] {
        assert_eq!(
            text(&c.systemctl(&["is-enabled", t])).trim(),
            "enabled",
            "{t}"
        );
        assert_eq!(
            text(&c.systemctl(&["is-active", t])).trim(),
            "active",
            "{t}"
        );
        if t.ends_with(".timer") {
            let next = text(&c.systemctl(&["show", t, "-P", "NextElapseUSecRealtime"]));
            assert!(!next.trim().is_empty(), "{t} has a next run: {next:?}");
        }
    }
    // The drop-in carries what only the config knows.
    let dropin = std::fs::read_to_string(
        root.join("etc/systemd/system/cairn-snapshot.service.d/cairn-setup.conf"),
    )
    .unwrap();
    assert!(
        dropin.contains("ReadWritePaths=/srv/backup/cairn"),
        "{dropin}"
    );
    assert!(dropin.contains("cairn.key:/etc/credstore"), "{dropin}");
    let shown = text(&c.systemctl(&["show", "cairn-snapshot.service", "-P", "ReadWritePaths"]));
    assert!(
        shown.contains("/srv/backup/cairn"),
        "systemd read the drop-in: {shown}"
    );

    // Again: everything is in place, nothing changes.
    let o = c.exec(&[cairn, "setup", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    assert_eq!(step(&v, "units").0, "already_done");
    assert_eq!(
        step(&v, "timers").0,
        "already_done",
        "{v:#}\n{}",
        c.journal(&["-u", "cairn-heartbeat.service"])
    );
    // A unit that does not stay up after its start is a failed step, not "done".
    let broken = root.join("etc/systemd/system/cairn-heartbeat.service.d/zz-broken.conf");
    std::fs::write(&broken, "[Service]\nExecStartPre=/bin/false\n").unwrap();
    assert!(c
        .systemctl(&["stop", "cairn-heartbeat.service"])
        .status
        .success());
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    let o = c.exec(&[cairn, "setup", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(o.status.code(), Some(0), "{v:#}");
    let (result, detail) = step(&v, "timers");
    assert_eq!(result, "failed", "{v:#}");
    assert!(
        detail.contains("cairn-heartbeat.service is") && detail.contains("journalctl -u"),
        "{detail}"
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    assert!(c
        .systemctl(&["reset-failed", "cairn-heartbeat.service"])
        .status
        .success());
    let o = c.exec(&[cairn, "setup", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // What the timer would start, with the disk unmounted: preflight (sandboxed) has
    // systemd mount it, then the snapshot runs as cairn.
    let mount_unit = text(&c.exec(&["systemd-escape", "--path", "--suffix=mount", "/srv/backup"]));
    assert!(c.systemctl(&["stop", mount_unit.trim()]).status.success());
    assert!(!c
        .exec(&["mountpoint", "-q", "/srv/backup"])
        .status
        .success());
    let o = c.systemctl(&["start", "cairn-snapshot.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        c.journal(&[
            "-u",
            "cairn-preflight.service",
            "-u",
            "cairn-snapshot.service"
        ])
    );
    assert!(c
        .exec(&["mountpoint", "-q", "/srv/backup"])
        .status
        .success());
    let status: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/cairn/status/snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["result"], "success", "{status:#}");
    let pre: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/cairn/status/preflight.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pre["result"], "success", "{pre:#}");
    // The successful snapshot started the upload (OnSuccess=), which has no [remote] here
    // and so nothing to do: it succeeds, as user cairn in its own sandbox.
    c.wait_for_unit_state("cairn-upload.service", "inactive", Duration::from_secs(30))
        .unwrap();
    let up_path = root.join("var/lib/cairn/status/upload.json");
    let t = std::time::Instant::now();
    while !up_path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the upload ran: {}",
            c.journal(&["-u", "cairn-upload.service"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up: Value = serde_json::from_str(&std::fs::read_to_string(&up_path).unwrap()).unwrap();
    assert_eq!(up["result"], "success", "{up:#}");
    assert!(
        up["summary"]
            .as_str()
            .unwrap()
            .contains("nothing to upload"),
        "{up:#}"
    );
    let ran_as = c.journal(&[
        "-o",
        "json",
        "_SYSTEMD_UNIT=cairn-snapshot.service",
        "SYSLOG_IDENTIFIER=cairn-snapshot",
        &format!("MESSAGE_ID={}", cairn::stage::msg::STAGE_SUCCEEDED.id),
    ]);
    let entry: Value = serde_json::from_str(ran_as.lines().last().unwrap_or("{}")).unwrap();
    let uid = text(&c.exec(&["id", "-u", "cairn"]));
    assert_eq!(
        entry["_UID"].as_str(),
        Some(uid.trim()),
        "ran as cairn: {entry}"
    );
    // The root-only file is in the snapshot: read it back with the unit's credential.
    let credential = if root.join("etc/credstore.encrypted/cairn.key").exists() {
        "LoadCredentialEncrypted=cairn.key:/etc/credstore.encrypted/cairn.key"
    } else {
        "LoadCredential=cairn.key:/etc/credstore/cairn.key"
    };
    assert!(
        dropin.contains(credential.split(':').next().unwrap()),
        "{dropin}"
    );
    let o = c.exec(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "-p",
        credential,
        cairn,
        "cat",
        "latest",
        "/srv/data/root-only.txt",
    ]);
    assert_eq!(text(&o), "for root's eyes\n", "{o:?}");

    // The weekly prune runs through its units too.
    let o = c.systemctl(&["start", "cairn-prune.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        c.journal(&["-u", "cairn-prune.service"])
    );
    // So does the drill, in its sandbox, with the key from its drop-in.
    let o = c.systemctl(&["start", "cairn-drill.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        c.journal(&["-u", "cairn-drill.service"])
    );
    let drill: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/cairn/status/drill.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(drill["result"], "success", "{drill:#}");
    assert_eq!(
        drill["figures"]["figures"]["owners_verified"], true,
        "{drill:#}"
    );
    assert!(drill["figures"]["figures"]["files"].as_u64().unwrap() >= 1);
    // And `cairn status` shows it all, with the timers' next runs from systemd.
    let o = c.exec(&[cairn, "status", "--json"]);
    let st: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let timers = st["timers"].as_array().unwrap();
    assert_eq!(timers.len(), 3, "{st:#}");
    assert!(timers.iter().all(|t| t["next"].is_string()), "{st:#}");
    let stage = |n: &str| {
        st["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n}: {st:#}"))
    };
    for n in ["preflight", "snapshot", "drill"] {
        assert_eq!(stage(n)["light"], "green", "{st:#}");
    }
    assert_eq!(st["repository"]["snapshots"], 1, "{st:#}");
    c.shutdown().unwrap();
    drop(d);
}
