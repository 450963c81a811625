//! The README's PostgreSQL recipe on a real systemd (booted container): the cluster
//! `postgresql@15-main` runs as the distribution starts it, the `cairn` user gets a
//! read-only database role (`pg_read_all_data`), and `cairn-snapshot.service` — user
//! cairn, no network, a read-only system — dumps the database over the local socket by
//! peer authentication. The dump restores with `pg_restore`.
//!
//! Needs root, systemd-nspawn, loop devices and the postgresql package; prints
//! `SKIPPED:` without root.

use cairn_tests::output_text as text;
use std::time::Duration;

use cairn_tests::container::Container;
use cairn_tests::disk::{self, Disk, Fs};
use serde_json::Value;

#[test]
fn the_snapshot_unit_dumps_postgresql_as_cairn_through_peer_authentication() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (containers, loop devices)");
        return;
    }
    Container::available().expect("a booted systemd container (see .ci/run)");
    disk::available(&[Fs::Ext4]).expect("mkfs.ext4");
    cairn_tests::pg::available().expect("PostgreSQL (see .ci/run)");
    let dir = cairn_tests::fixture::tempdir().unwrap();
    let (d, uuid) = Disk::small_ext4(dir.path(), "pg").unwrap();
    let c = Container::builder()
        .block_device(d.device())
        .boot()
        .unwrap();
    let bindir = c.install_bins(&["cairn", "cairn-preflight", "cairn-snapshot"]);
    c.install_units(&bindir);
    let cairn = bindir.join("cairn");
    let cairn = cairn.to_str().unwrap();
    c.wait_for_unit_state(
        "postgresql@15-main.service",
        "active",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", c.journal(&["-u", "postgresql@15-main"])));
    let psql = |db: &str, sql: &str| {
        let o = c.exec(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        assert!(o.status.success(), "psql {sql}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    psql("postgres", "CREATE DATABASE app");
    psql(
        "app",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 5000) g",
    );
    // The recipe: a login role named like the system user, allowed to read everything.
    psql("postgres", "CREATE ROLE cairn LOGIN");
    psql("postgres", "GRANT pg_read_all_data TO cairn");

    std::fs::create_dir_all(c.root().join("etc/cairn")).unwrap();
    std::fs::write(
        c.root().join("etc/cairn/cairn.conf"),
        format!(
            "[repository]\npath = /srv/backup/cairn\nkey_file = /etc/cairn/repo.key\n\
             [sources]\npaths = /etc/cairn\n\
             [database.pg]\nkind = postgresql\ndatabases = app\n\
             [preflight]\nmount = /srv/backup\nuuid = {uuid}\n"
        ),
    )
    .unwrap();
    let o = c.exec(&[cairn, "setup", "--json"]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(o.status.code(), Some(0), "{v:#}");

    let o = c.systemctl(&["start", "cairn-snapshot.service"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        c.journal(&["-u", "cairn-snapshot.service"])
    );
    let log = c.journal(&["-u", "cairn-snapshot.service", "-o", "cat"]);
    assert!(
        log.contains("stored the dump /.cairn/databases/pg/app.pgdump"),
        "{log}"
    );
    // Restore it the way cairn-snapshot(8) shows.
    let o = c.sh(&format!(
        "{cairn} cat latest /.cairn/databases/pg/app.pgdump > /var/tmp/app.pgdump && \
         chmod 0644 /var/tmp/app.pgdump && \
         runuser -u postgres -- createdb restored && \
         runuser -u postgres -- pg_restore --no-owner --exit-on-error -d restored /var/tmp/app.pgdump"
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(psql("restored", "SELECT count(*) FROM orders"), "5000");
    assert_eq!(
        psql(
            "restored",
            "SELECT md5(string_agg(note, ',' ORDER BY id)) FROM orders"
        ),
        psql(
            "app",
            "SELECT md5(string_agg(note, ',' ORDER BY id)) FROM orders"
        ),
        "the restored rows are the rows"
    );
    c.shutdown().unwrap();
    drop(d);
}
