//! `cairn-preflight` under a real systemd (PID 1, booted in a container): the backup disk
//! is mounted by starting its `.mount` unit over D-Bus, the fstab change is followed by a
//! daemon reload, and the run is in the journal with its MESSAGE_IDs when preflight runs
//! as a unit.
//!
//! In a container systemd's fstab generator ignores device lines (see
//! `cairn_tests::container`), so the disk's mount unit is written as a unit file, as an
//! administrator may do on any host. Needs root, systemd-nspawn and loop devices; prints
//! `SKIPPED:` without root.

use std::path::Path;
use std::time::Duration;

use cairn_tests::container::Container;
use cairn_tests::disk::{self, Disk, Fs};
use serde_json::Value;

fn ready() -> bool {
    if !cairn_tests::container::ready() {
        return false;
    }
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    true
}

fn preflight_json(c: &Container, bin: &Path, conf: &str) -> (i32, Value, String) {
    let o = c.exec(&[bin.to_str().unwrap(), "--config", conf, "--json"]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stderr}"));
    (o.status.code().unwrap_or(-1), v, stderr)
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {v:#}"))
}

#[test]
fn under_systemd_the_disk_is_mounted_through_its_mount_unit() {
    if !ready() {
        return;
    }
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let (d, uuid) = Disk::small_ext4(dir.path(), "sd").unwrap();
    let c = Container::builder()
        .block_device(d.device())
        .boot()
        .unwrap();
    let bin = c.install_bins(&["cairn-preflight"]).join("cairn-preflight");
    let root = c.root();
    std::fs::create_dir_all(root.join("srv/backup")).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/srv-backup.mount"),
        format!(
            "[Unit]\nDescription=cairn test backup disk\n[Mount]\n\
             What=/dev/disk/by-uuid/{uuid}\nWhere=/srv/backup\nType=ext4\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc/cairn")).unwrap();
    std::fs::write(
        root.join("etc/cairn/cairn.conf"),
        format!("[preflight]\nmount = /srv/backup\nuuid = {uuid}\nensure_fstab = yes\n"),
    )
    .unwrap();
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    assert!(!c
        .systemctl(&["is-active", "srv-backup.mount"])
        .status
        .success());

    let (code, v, err) = preflight_json(&c, &bin, "/etc/cairn/cairn.conf");
    assert_eq!(code, 0, "{v:#}\n{err}");
    let mount = check(&v, "mount");
    assert_eq!(mount["verdict"], "repaired", "{v:#}");
    assert!(
        mount["detail"]
            .as_str()
            .unwrap()
            .contains("starting srv-backup.mount"),
        "mounted through systemd, not behind its back: {mount}"
    );
    c.wait_for_unit_state("srv-backup.mount", "active", Duration::from_secs(10))
        .unwrap();
    assert_eq!(check(&v, "identity")["verdict"], "ok");
    // The fstab line was added and systemd reloaded (no warning about the reload).
    assert_eq!(check(&v, "fstab")["verdict"], "repaired", "{v:#}");
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("UUID={uuid} /srv/backup ext4")),
        "{fstab}"
    );
    assert!(
        !v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ch| ch["detail"].as_str().unwrap_or("").contains("not reloaded")),
        "{v:#}"
    );

    // As a unit, under journald: structured entries with MESSAGE_IDs and the run id.
    assert!(c.systemctl(&["stop", "srv-backup.mount"]).status.success());
    let o = c.exec(&[
        "systemd-run",
        "--wait",
        "--unit=cairn-preflight-test",
        "-p",
        "Environment=CAIRN_NO_DBUS=1",
        bin.to_str().unwrap(),
        "--config",
        "/etc/cairn/cairn.conf",
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let repaired = c.journal(&[
        "-o",
        "json",
        &format!("MESSAGE_ID={}", cairn::stage::msg::MOUNT_REPAIRED.id),
        "SYSLOG_IDENTIFIER=cairn-preflight",
    ]);
    let entry: Value = serde_json::from_str(repaired.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(entry["CAIRN_STAGE"], "preflight", "{repaired}");
    assert_eq!(entry["CAIRN_CHECK"], "mount", "{repaired}");
    assert!(
        entry["CAIRN_RUN"].as_str().is_some_and(|r| r.len() == 32),
        "{entry}"
    );
    let done = c.journal(&[
        "-o",
        "cat",
        &format!("MESSAGE_ID={}", cairn::stage::msg::STAGE_SUCCEEDED.id),
        "SYSLOG_IDENTIFIER=cairn-preflight",
    ]);
    assert!(done.contains("preflight succeeded"), "{done}");
    c.shutdown().unwrap();
    drop(d);
}
