//! Database sources, dumped online into the snapshot by `cairn-snapshot` and restored
//! with the databases' own tools, against real servers: PostgreSQL (a throw-away cluster,
//! `cairn_tests::pg`) written by pgbench during the dump, MariaDB (`cairn_tests::mariadb`)
//! written by a client during the dump, and a SQLite WAL database written by another
//! process. Each restored copy must be one consistent state: pgbench's four balances sum
//! to the same total, and the MariaDB and SQLite counters match their rows. A dump that
//! fails midway must not be in the snapshot at all.
//!
//! PostgreSQL and MariaDB need root (their servers run as their own users); those tests
//! print `SKIPPED:` without it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{code, ok, text, Env};
use serde_json::Value;

fn env_with(extra_sections: &str) -> (tempfile::TempDir, Env) {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("files");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plain.txt"), "a file beside the dumps\n").unwrap();
    let env = Env::new(&[&src]);
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.conf)
        .unwrap();
    conf.write_all(extra_sections.as_bytes()).unwrap();
    (d, env)
}

/// `cairn cat latest PATH` into a file.
fn cat_to(env: &Env, path: &str, out: &std::path::Path) {
    let o = env.cairn(&["cat", "latest", path]);
    ok(&o);
    std::fs::write(out, &o.stdout).unwrap();
}

fn ls(env: &Env, path: &str) -> Vec<String> {
    let o = env.cairn(&["ls", "latest", path, "--json"]);
    if !o.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect()
}

fn journal_says(o: &std::process::Output, what: &str) -> bool {
    String::from_utf8_lossy(&o.stderr).contains(what)
}

#[test]
fn postgresql_dumped_while_pgbench_writes_restores_consistent() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (the server runs as its own user)");
        return;
    }
    cairn_tests::pg::available().expect("the database server (scripts/deps.sh test)");
    let pg = cairn_tests::pg::PgServer::start().unwrap();
    ok(&pg.client("createdb").arg("bench").output().unwrap());
    ok(&pg
        .client("pgbench")
        .args(["-i", "-q", "-s", "4", "bench"])
        .output()
        .unwrap());
    let (_d, env) = env_with(&format!(
        "[database.pg]\nkind = postgresql\nhost = {}\nuser = postgres\ndatabases = bench\n",
        pg.socket_dir().display()
    ));
    // Writers for the whole of the dump.
    let mut bench = pg
        .client("pgbench")
        .args(["-n", "-c", "2", "-T", "120", "bench"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = Instant::now();
    let history = |db: &str| -> i64 {
        pg.query(db, "SELECT count(*) FROM pgbench_history")
            .unwrap()
            .parse()
            .unwrap()
    };
    while history("bench") < 50 {
        assert!(before.elapsed() < Duration::from_secs(30), "pgbench writes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = env.snapshot();
    let written_after = history("bench");
    let _ = bench.kill();
    let _ = bench.wait();
    ok(&o);
    assert!(
        journal_says(&o, "stored the dump /.cairn/databases/pg/bench.pgdump"),
        "{}",
        text(&o)
    );
    let status = env.status("snapshot");
    assert_eq!(status["result"], "success", "{status:#}");

    let dump = env.path("bench.pgdump");
    cat_to(&env, "/.cairn/databases/pg/bench.pgdump", &dump);
    assert!(
        std::fs::read(&dump).unwrap().starts_with(b"PGDMP"),
        "custom format"
    );
    ok(&pg.client("createdb").arg("restored").output().unwrap());
    ok(&pg
        .client("pg_restore")
        .args(["--no-owner", "--exit-on-error", "-d", "restored"])
        .arg(&dump)
        .output()
        .unwrap());
    // One consistent point: every pgbench transaction adds the same delta to one
    // account, teller and branch and logs it in the history, so the four sums agree.
    let sums = pg
        .query(
            "restored",
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
             (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || \
             (SELECT sum(bbalance) FROM pgbench_branches) || ' ' || \
             (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
        )
        .unwrap();
    let v: Vec<&str> = sums.split(' ').collect();
    assert_eq!(v.len(), 4, "{sums}");
    assert!(v.iter().all(|x| *x == v[0]), "balances agree: {sums}");
    let restored = history("restored");
    assert!(
        restored >= 50,
        "the writes before the dump are in it: {restored}"
    );
    assert!(
        restored < written_after,
        "pgbench kept writing during the dump ({restored} < {written_after})"
    );
    assert_eq!(
        pg.query("restored", "SELECT count(*) FROM pgbench_accounts")
            .unwrap(),
        "400000"
    );
    // The plain files of [sources] are in the same snapshot.
    let listed = ls(&env, "/");
    assert!(
        listed.iter().any(|p| p.ends_with("/plain.txt")),
        "{listed:?}"
    );
}

#[test]
fn a_failing_or_truncated_dump_is_not_in_the_snapshot_and_the_run_exits_3() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (the server runs as its own user)");
        return;
    }
    cairn_tests::pg::available().expect("the database server (scripts/deps.sh test)");
    let pg = cairn_tests::pg::PgServer::start().unwrap();
    ok(&pg.client("createdb").arg("app").output().unwrap());
    pg.query(
        "app",
        "CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 200000) g",
    )
    .unwrap();
    // A pg_dump that dies halfway: the real one, cut off after 64 KiB and killed.
    let d = cairn_tests::fixture::tempdir().unwrap();
    let wrapper = d.path().join("pg_dump-dies");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{}/pg_dump \"$@\" | head -c 65536\nkill -9 $$\n",
            cairn_tests::pg::bin_dir().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let host = pg.socket_dir();
    let (_d2, env) = env_with(&format!(
        "[database.good]\nkind = postgresql\nhost = {h}\nuser = postgres\ndatabases = app\n\
         format = plain\n\
         [database.missing]\nkind = postgresql\nhost = {h}\nuser = postgres\ndatabases = nope\n\
         [database.killed]\nkind = postgresql\nhost = {h}\nuser = postgres\ndatabases = app\n\
         command = {w}\n",
        h = host.display(),
        w = wrapper.display()
    ));
    let o = env.snapshot();
    assert_eq!(code(&o), 3, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/.cairn/databases/missing/nope.pgdump"),
        "{err}"
    );
    assert!(
        err.contains("\"nope\" does not exist"),
        "pg_dump's own words: {err}"
    );
    assert!(err.contains("/.cairn/databases/killed/app.pgdump"), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    // A snapshot was recorded, marked incomplete, with only the whole dump in it.
    let status = env.status("snapshot");
    assert_eq!(status["exit_code"], 3, "{status:#}");
    let o = env.cairn(&["snapshots", "--json"]);
    ok(&o);
    let snaps: Value = serde_json::from_slice(&o.stdout).unwrap();
    let last = snaps.as_array().unwrap().last().unwrap();
    assert_eq!(last["snapshot"]["complete"], false, "{last:#}");
    let listed = ls(&env, "/.cairn/databases");
    assert!(
        listed.iter().any(|p| p == "/.cairn/databases/good/app.sql"),
        "{listed:?}"
    );
    assert!(
        !listed
            .iter()
            .any(|p| p.contains("/killed/") || p.contains("/missing/")),
        "no truncated or failed dump is in the snapshot: {listed:?}"
    );
    let sql = env.cairn(&["cat", "latest", "/.cairn/databases/good/app.sql"]);
    ok(&sql);
    assert!(String::from_utf8_lossy(&sql.stdout).contains("PostgreSQL database dump complete"));
}

#[test]
fn mariadb_dumped_while_written_restores_consistent() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (the server runs as its own user)");
        return;
    }
    cairn_tests::mariadb::available().expect("the database server (scripts/deps.sh test)");
    let db = cairn_tests::mariadb::MariaDb::start().unwrap();
    db.query(
        "CREATE DATABASE shop; USE shop; \
         CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, pad CHAR(200)) ENGINE=InnoDB; \
         CREATE TABLE counter (n INT NOT NULL) ENGINE=InnoDB; INSERT INTO counter VALUES (0); \
         INSERT INTO orders (pad) SELECT REPEAT('x', 200) FROM seq_1_to_100000; \
         UPDATE counter SET n = (SELECT count(*) FROM orders);",
    )
    .unwrap();
    // cairn-snapshot(8)'s account for an unprivileged dumper, here for `nobody` (the
    // dump runs as that user through run_as).
    db.query(
        "CREATE USER nobody@localhost IDENTIFIED VIA unix_socket; \
         GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO nobody@localhost;",
    )
    .unwrap();
    let (_d, env) = env_with(&format!(
        "[database.my]\nkind = mysql\nhost = {s}\nuser = root\ndatabases = shop\n\
         [database.unprivileged]\nkind = mysql\nhost = {s}\nuser = nobody\nrun_as = nobody\n\
         databases = shop\n",
        s = db.socket().display()
    ));
    // A writer: one transaction after another, each adding an order and counting it.
    let mut writer = db
        .client()
        .arg("shop")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for _ in 0..200_000 {
            if stdin
                .write_all(
                    b"BEGIN; INSERT INTO orders (pad) VALUES (REPEAT('y', 200)); \
                      UPDATE counter SET n = n + 1; COMMIT;\n",
                )
                .is_err()
            {
                break;
            }
        }
    });
    let count = || -> i64 {
        db.query("SELECT count(*) FROM shop.orders")
            .unwrap()
            .parse()
            .unwrap()
    };
    let start = Instant::now();
    while count() < 100_100 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the writer writes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = env.snapshot();
    let after = count();
    let _ = writer.kill();
    let _ = writer.wait();
    let _ = feeder.join();
    ok(&o);
    let dump = env.cairn(&["cat", "latest", "/.cairn/databases/my/shop.sql"]);
    ok(&dump);
    // Restore under another name: the dump creates and selects `shop`, so rewrite that.
    let sql = String::from_utf8_lossy(&dump.stdout).replace("`shop`", "`restored`");
    let mut restore = db.client().stdin(Stdio::piped()).spawn().unwrap();
    restore
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    assert!(restore.wait().unwrap().success());
    let rows: i64 = db
        .query("SELECT count(*) FROM restored.orders")
        .unwrap()
        .parse()
        .unwrap();
    let n: i64 = db
        .query("SELECT n FROM restored.counter")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        rows, n,
        "one consistent point: every order counted, none more"
    );
    assert!(rows > 100_000, "writes before the dump are in it: {rows}");
    assert!(
        rows < after,
        "the writer kept writing during the dump ({rows} < {after})"
    );
    // The unprivileged account's dump is whole too (its own consistent point).
    let other = env.cairn(&["cat", "latest", "/.cairn/databases/unprivileged/shop.sql"]);
    ok(&other);
    let other = String::from_utf8_lossy(&other.stdout);
    assert!(
        other.contains("CREATE TABLE `orders`"),
        "{}",
        &other[..other.len().min(2000)]
    );
    assert!(other.contains("-- Dump completed on"), "a whole dump");
}

#[test]
fn a_sqlite_wal_database_written_during_the_backup_restores_intact() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let dbfile = d.path().join("app.db");
    // The writer, another process: WAL mode, one transaction after another, each adding
    // a row and counting it, until told to stop.
    let stop = d.path().join("stop");
    let script = format!(
        r#"
import sqlite3, os, sys
c = sqlite3.connect({db:?}, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, pad BLOB)")
c.execute("CREATE TABLE IF NOT EXISTS counter (n INTEGER)")
c.execute("INSERT INTO counter SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter)")
c.execute("BEGIN")
for i in range(20000):
    c.execute("INSERT INTO items (pad) VALUES (randomblob(300))")
c.execute("UPDATE counter SET n = n + 20000")
c.execute("COMMIT")
print("ready", flush=True)
while not os.path.exists({stop:?}):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO items (pad) VALUES (randomblob(300))")
    c.execute("UPDATE counter SET n = n + 1")
    c.execute("COMMIT")
"#,
        db = dbfile.display().to_string(),
        stop = stop.display().to_string()
    );
    let mut writer = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let (_d2, env) = env_with(&format!(
        "[database.lite]\nkind = sqlite\npath = {}\n",
        dbfile.display()
    ));
    let o = env.snapshot();
    std::fs::write(&stop, "").unwrap();
    assert!(writer.wait().unwrap().success(), "the writer never failed");
    ok(&o);
    let restored = d.path().join("restored.db");
    cat_to(&env, "/.cairn/databases/lite/app.db", &restored);
    let check = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             print(c.execute('PRAGMA integrity_check').fetchone()[0])\n\
             print(c.execute('PRAGMA journal_mode').fetchone()[0])\n\
             print(c.execute('SELECT count(*) FROM items').fetchone()[0])\n\
             print(c.execute('SELECT n FROM counter').fetchone()[0])\n",
        ])
        .arg(&restored)
        .output()
        .unwrap();
    ok(&check);
    let out = String::from_utf8_lossy(&check.stdout);
    let v: Vec<&str> = out.lines().collect();
    assert_eq!(v[0], "ok", "integrity_check: {out}");
    assert_eq!(v[1], "delete", "a standalone file, no -wal needed: {out}");
    assert_eq!(v[2], v[3], "rows and counter from one point in time: {out}");
    assert!(v[2].parse::<i64>().unwrap() >= 20000, "{out}");
    assert!(
        !std::fs::read_dir(env.path("cache/dump")).is_ok_and(|mut d| d.next().is_some()),
        "the temporary copy is gone"
    );
}
