//! Database dumps for `[database.NAME]`: the dump tool's output, streamed into the
//! snapshot.
//!
//! Design: a [`Dump`] is planned from the config (program, arguments, environment, user)
//! and opened as a [`DumpStream`], a `Read` of the tool's stdout that the archiver feeds
//! straight to the chunker, so a dump never lands on local disk. Its stderr is drained by
//! a thread (so the tool never blocks on a full pipe) and its tail kept for the error. A
//! dump counts only if the tool then exits 0: [`DumpStream::finish`] waits for it and
//! turns a non-zero exit or a signal into an error, and the archiver then leaves the file
//! out of the snapshot — a truncated dump is never stored as if it were whole. Passwords
//! reach the tools only through their environment (`PGPASSWORD`, `MYSQL_PWD`), never
//! through argv, and never appear in [`Dump::describe`] or an error.
//!
//! SQLite is the exception to streaming: its online backup API copies the database, in
//! one read transaction (`step(-1)`), into a private temporary file (mode 0600, in a 0700
//! directory under the cache directory), which is then stored and removed. That is what
//! makes a WAL database being written during the backup come out consistent.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use crate::config::{DatabaseConfig, DatabaseKind, PgFormat, Secret};

/// How much of a tool's stderr is kept for the error message.
const STDERR_TAIL: usize = 8 * 1024;

/// The directory in every snapshot that holds the dumps: `/.cairn/databases/NAME/FILE`.
pub const VIRTUAL_DIR: [&str; 2] = [".cairn", "databases"];

/// Errors of a dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The dump could not be set up (program or user missing, not root for `run_as`).
    #[error("[database.{section}]: {message}")]
    Setup {
        /// The section's name.
        section: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The tool could not be started.
    #[error("[database.{section}]: cannot run {program}: {error}")]
    Spawn {
        /// The section's name.
        section: String,
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The tool failed; the dump is incomplete.
    #[error("{program} {how}{}", stderr_part(.stderr))]
    Failed {
        /// The section's name.
        section: String,
        /// The file in the snapshot.
        file: String,
        /// The program.
        program: String,
        /// `exited with status 1`, `was killed by signal 9`.
        how: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// SQLite's backup failed.
    #[error("[database.{section}] {}: {message}", .path.display())]
    Sqlite {
        /// The section's name.
        section: String,
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn stderr_part(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

/// One dump: a file in the snapshot and how to produce it.
#[derive(Debug)]
pub struct Dump {
    /// The section's name: the directory under [`VIRTUAL_DIR`].
    pub section: String,
    /// The file name in that directory.
    pub file: String,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Command {
        program: PathBuf,
        args: Vec<OsString>,
        /// Variables set for the tool; secrets by name only in [`Dump::describe`].
        env: Vec<(&'static str, Secret)>,
        run_as: Option<RunAs>,
    },
    Sqlite {
        path: PathBuf,
    },
}

#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// The dumps one `[database.NAME]` section asks for, in order. Checks what can be
/// checked before anything runs: the program exists, the `run_as` user exists and can
/// be switched to.
pub fn plan(db: &DatabaseConfig) -> Result<Vec<Dump>, DumpError> {
    let setup = |message: String| DumpError::Setup {
        section: db.name.clone(),
        message,
    };
    if db.kind == DatabaseKind::Sqlite {
        let path = db
            .path
            .clone()
            .ok_or_else(|| setup("no `path` for kind = sqlite".into()))?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database.sqlite".into());
        return Ok(vec![Dump {
            section: db.name.clone(),
            file,
            source: Source::Sqlite { path },
        }]);
    }
    let run_as = match &db.run_as {
        None => None,
        Some(name) => Some(run_as(name).map_err(setup)?),
    };
    let mut dumps = Vec::new();
    let mut push = |file: String, program: PathBuf, args: Vec<OsString>| {
        let mut env = Vec::new();
        if let Some(p) = &db.password {
            let var = match db.kind {
                DatabaseKind::Mysql => "MYSQL_PWD",
                _ => "PGPASSWORD",
            };
            env.push((var, p.clone()));
        }
        dumps.push(Dump {
            section: db.name.clone(),
            file,
            source: Source::Command {
                program,
                args,
                env,
                run_as: run_as.clone(),
            },
        });
    };
    match db.kind {
        DatabaseKind::Postgresql => {
            let mut common: Vec<OsString> = vec!["--no-password".into()];
            if let Some(h) = &db.host {
                common.push(format!("--host={h}").into());
            }
            if let Some(p) = db.port {
                common.push(format!("--port={p}").into());
            }
            if let Some(u) = &db.user {
                common.push(format!("--username={u}").into());
            }
            if db.databases.is_empty() {
                let program =
                    find_program(db.command.as_deref(), &["pg_dumpall"]).map_err(setup)?;
                push("all.sql".into(), program, common);
            } else {
                let program = find_program(db.command.as_deref(), &["pg_dump"]).map_err(setup)?;
                for name in &db.databases {
                    let mut args = common.clone();
                    let file = match db.format {
                        PgFormat::Custom => {
                            // Uncompressed: cairn compresses, and deduplicates better
                            // what pg_dump did not scramble.
                            args.push("--format=custom".into());
                            args.push("--compress=0".into());
                            format!("{name}.pgdump")
                        }
                        PgFormat::Plain => {
                            args.push("--format=plain".into());
                            format!("{name}.sql")
                        }
                    };
                    // As a connection string, so that no database name can be taken
                    // for an option or for a connection string of its own.
                    args.push(format!("--dbname=dbname={}", conninfo_quote(name)).into());
                    push(file, program.clone(), args);
                }
            }
        }
        DatabaseKind::Mysql => {
            let program = find_program(db.command.as_deref(), &["mariadb-dump", "mysqldump"])
                .map_err(setup)?;
            let mut common: Vec<OsString> = Vec::new();
            if let Some(f) = &db.option_file {
                // Must be the first option.
                let mut a = OsString::from("--defaults-extra-file=");
                a.push(f);
                common.push(a);
            }
            // One consistent view of InnoDB tables without locking them; everything a
            // restore needs; binary columns safe in the text dump.
            for a in [
                "--single-transaction",
                "--routines",
                "--events",
                "--triggers",
                "--hex-blob",
                "--quick",
            ] {
                common.push(a.into());
            }
            match &db.host {
                // A path is the server's Unix socket.
                Some(h) if h.starts_with('/') => common.push(format!("--socket={h}").into()),
                Some(h) => common.push(format!("--host={h}").into()),
                None => {}
            }
            if let Some(p) = db.port {
                common.push(format!("--port={p}").into());
            }
            if let Some(u) = &db.user {
                common.push(format!("--user={u}").into());
            }
            if db.databases.is_empty() {
                let mut args = common;
                args.push("--all-databases".into());
                push("all.sql".into(), program, args);
            } else {
                for name in &db.databases {
                    let mut args = common.clone();
                    // With --databases the dump creates and selects the database itself.
                    // (Names cannot start with `-`: the config refuses them.)
                    args.push("--databases".into());
                    args.push(name.into());
                    push(format!("{name}.sql"), program.clone(), args);
                }
            }
        }
        DatabaseKind::Sqlite => unreachable!("handled above"),
    }
    Ok(dumps)
}

/// A value in a libpq connection string: single-quoted, `\` and `'` escaped.
fn conninfo_quote(v: &str) -> String {
    let mut out = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn run_as(name: &str) -> Result<RunAs, String> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look up run_as user `{name}`: {e}"))?
        .ok_or_else(|| format!("run_as = {name}: no such user on this host"))?;
    let me = rustix::process::geteuid().as_raw();
    if me != 0 && me != user.uid.as_raw() {
        return Err(format!(
            "run_as = {name} needs cairn-snapshot to run as root (it runs as uid {me}); \
             under cairn-snapshot.service give the cairn user a database role instead \
             (see cairn-snapshot(8)), or remove run_as"
        ));
    }
    Ok(RunAs {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    })
}

/// `command` if set (it must exist), else the first of `names` found in `$PATH`.
fn find_program(command: Option<&Path>, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(c) = command {
        return if c.is_file() {
            Ok(c.to_path_buf())
        } else {
            Err(format!("command = {}: no such program", c.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "{} not found in $PATH; install the database's client tools (e.g. {}) or set \
         `command`",
        names.join(" or "),
        match names[0] {
            "mariadb-dump" => "mariadb-client",
            _ => "postgresql-client",
        }
    ))
}

impl Dump {
    /// The path in the snapshot, `/.cairn/databases/NAME/FILE`.
    pub fn snapshot_path(&self) -> String {
        format!(
            "/{}/{}/{}/{}",
            VIRTUAL_DIR[0], VIRTUAL_DIR[1], self.section, self.file
        )
    }

    /// What runs, for the log: the command line (never a password: those are in the
    /// environment, shown by name only), or the SQLite file.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Command {
                program,
                args,
                env,
                run_as,
            } => {
                let mut s = program.display().to_string();
                for a in args {
                    s.push(' ');
                    s.push_str(&a.to_string_lossy());
                }
                for (var, _) in env {
                    s.push_str(&format!(" ({var} set)"));
                }
                if let Some(u) = run_as {
                    s.push_str(&format!(" as {}", u.name));
                }
                s
            }
            Source::Sqlite { path } => {
                format!("SQLite online backup of {}", path.display())
            }
        }
    }

    /// Start the dump. `scratch` is where SQLite's copy is made (the cache directory).
    pub fn open(&self, scratch: &Path) -> Result<DumpStream, DumpError> {
        match &self.source {
            Source::Command {
                program,
                args,
                env,
                run_as,
            } => {
                let mut cmd = Command::new(program);
                cmd.args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .current_dir("/");
                for (var, value) in env {
                    cmd.env(var, value.expose());
                }
                if let Some(u) = run_as {
                    // Root dropping to the user: std clears the supplementary groups.
                    cmd.uid(u.uid)
                        .gid(u.gid)
                        .env("HOME", &u.home)
                        .env("USER", &u.name)
                        .env("LOGNAME", &u.name);
                }
                let mut child = cmd.spawn().map_err(|error| DumpError::Spawn {
                    section: self.section.clone(),
                    program: program.display().to_string(),
                    error,
                })?;
                let stdout = child.stdout.take().expect("piped stdout");
                let mut stderr = child.stderr.take().expect("piped stderr");
                let drain = std::thread::spawn(move || {
                    let mut tail = VecDeque::with_capacity(STDERR_TAIL);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stderr.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        for b in &buf[..n] {
                            if tail.len() == STDERR_TAIL {
                                tail.pop_front();
                            }
                            tail.push_back(*b);
                        }
                    }
                    String::from_utf8_lossy(&Vec::from(tail)).into_owned()
                });
                Ok(DumpStream {
                    section: self.section.clone(),
                    file: self.file.clone(),
                    inner: Inner::Child {
                        child,
                        stdout,
                        drain: Some(drain),
                        program: program.display().to_string(),
                    },
                })
            }
            Source::Sqlite { path } => {
                let err = |message: String| DumpError::Sqlite {
                    section: self.section.clone(),
                    path: path.clone(),
                    message,
                };
                std::fs::create_dir_all(scratch)
                    .map_err(|e| err(format!("cannot create {}: {e}", scratch.display())))?;
                let dir = tempfile::Builder::new()
                    .prefix(".cairn-sqlite-")
                    .tempdir_in(scratch)
                    .map_err(|e| {
                        err(format!(
                            "cannot make a temporary directory in {}: {e}",
                            scratch.display()
                        ))
                    })?;
                let copy = dir.path().join("copy.sqlite");
                sqlite_backup(path, &copy).map_err(err)?;
                let file = File::open(&copy)
                    .map_err(|e| err(format!("cannot read the copy {}: {e}", copy.display())))?;
                Ok(DumpStream {
                    section: self.section.clone(),
                    file: self.file.clone(),
                    inner: Inner::File { file, _dir: dir },
                })
            }
        }
    }
}

/// Copy `src` into a new database at `dst` with SQLite's online backup API, all pages in
/// one step: one read transaction, so the copy is one consistent state of the database
/// even while other processes write to it (WAL or rollback journal).
fn sqlite_backup(src: &Path, dst: &Path) -> Result<(), String> {
    use rusqlite::{Connection, OpenFlags};
    if !src.is_file() {
        return Err("no such database file".to_string());
    }
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open it: {e}"))?;
    // Writers hold the lock only briefly; wait for them rather than fail.
    source
        .busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut dest = Connection::open(dst).map_err(|e| format!("cannot create the copy: {e}"))?;
    let mut attempts = 0;
    loop {
        let backup = rusqlite::backup::Backup::new(&source, &mut dest)
            .map_err(|e| format!("cannot start the backup: {e}"))?;
        match backup.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => break,
            Ok(rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked)
                if attempts < 100 =>
            {
                attempts += 1;
                drop(backup);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(other) => return Err(format!("the backup did not finish: {other:?}")),
            Err(e) => return Err(format!("the backup failed: {e}")),
        }
    }
    // The copy is a standalone file in rollback-journal mode.
    dest.pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| format!("cannot finish the copy: {e}"))?;
    let ok: String = dest
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| format!("cannot check the copy: {e}"))?;
    if ok != "ok" {
        return Err(format!("the copy fails SQLite's quick_check: {ok}"));
    }
    dest.close()
        .map_err(|(_, e)| format!("cannot close the copy: {e}"))
}

/// A running dump: read it to the end, then [`DumpStream::finish`].
pub struct DumpStream {
    section: String,
    file: String,
    inner: Inner,
}

enum Inner {
    Child {
        child: Child,
        stdout: ChildStdout,
        drain: Option<JoinHandle<String>>,
        program: String,
    },
    File {
        file: File,
        _dir: tempfile::TempDir,
    },
}

impl Read for DumpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Child { stdout, .. } => stdout.read(buf),
            Inner::File { file, .. } => file.read(buf),
        }
    }
}

impl DumpStream {
    /// Wait for the tool; `Ok(warnings)` (its stderr, often empty) only if it exited 0.
    pub fn finish(mut self) -> Result<String, DumpError> {
        match &mut self.inner {
            Inner::File { .. } => Ok(String::new()),
            Inner::Child {
                child,
                drain,
                program,
                ..
            } => {
                let status = child.wait();
                let stderr = drain.take().and_then(|d| d.join().ok()).unwrap_or_default();
                let how = match status {
                    Ok(s) if s.success() => return Ok(stderr),
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(c), _) => format!("exited with status {c}"),
                        (_, Some(sig)) => format!("was killed by signal {sig}"),
                        _ => format!("ended with {s}"),
                    },
                    Err(e) => format!("could not be waited for: {e}"),
                };
                Err(DumpError::Failed {
                    section: self.section.clone(),
                    file: self.file.clone(),
                    program: program.clone(),
                    how,
                    stderr,
                })
            }
        }
    }

    /// Stop the dump early (the backup failed): kill the tool and reap it.
    pub fn abort(mut self) {
        if let Inner::Child { child, drain, .. } = &mut self.inner {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(d) = drain.take() {
                let _ = d.join();
            }
        }
    }
}

impl Drop for DumpStream {
    fn drop(&mut self) {
        // Never leave a dump tool running behind us (finish/abort already reaped it).
        if let Inner::Child { child, .. } = &mut self.inner {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn dbs(text: &str) -> Vec<DatabaseConfig> {
        Config::parse_str(text, Path::new("/t.conf"))
            .unwrap()
            .databases
    }

    fn fake_tool(dir: &Path, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn postgresql_plans_one_dump_per_database_and_keeps_the_password_out_of_argv() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(dir.path(), "pg_dump", "exit 0");
        let d = &dbs(&format!(
            "[database.pg]\nkind = postgresql\ndatabases = app \"it's\"\nuser = backup\n\
             password = hunter2\nport = 5433\ncommand = {}\n",
            tool.display()
        ))[0];
        let plan = plan(d).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].snapshot_path(), "/.cairn/databases/pg/app.pgdump");
        let shown = plan[1].describe();
        assert!(shown.contains("--format=custom --compress=0"), "{shown}");
        assert!(shown.contains("--port=5433 --username=backup"), "{shown}");
        assert!(shown.contains(r"--dbname=dbname='it\'s'"), "{shown}");
        assert!(shown.contains("(PGPASSWORD set)"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let Source::Command { args, .. } = &plan[0].source else {
            panic!()
        };
        assert!(args
            .iter()
            .all(|a| !a.to_string_lossy().contains("hunter2")));
    }

    #[test]
    fn no_database_list_means_one_dump_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(dir.path(), "pg_dumpall", "exit 0");
        let d = &dbs(&format!(
            "[database.all]\nkind = postgresql\ncommand = {}\n",
            tool.display()
        ))[0];
        let p = plan(d).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].file, "all.sql");
        let tool = fake_tool(dir.path(), "mysqldump", "exit 0");
        let d = &dbs(&format!(
            "[database.my]\nkind = mysql\noption_file = /etc/cairn/my.cnf\ncommand = {}\n",
            tool.display()
        ))[0];
        let p = plan(d).unwrap();
        let shown = p[0].describe();
        assert!(
            shown
                .contains("mysqldump --defaults-extra-file=/etc/cairn/my.cnf --single-transaction"),
            "the option file comes first: {shown}"
        );
        assert!(shown.ends_with("--all-databases"), "{shown}");
    }

    #[test]
    fn a_missing_tool_or_user_is_a_setup_error_that_says_what_to_do() {
        let d = &dbs("[database.x]\nkind = postgresql\ncommand = /nonexistent/pg_dump\n")[0];
        let e = plan(d).unwrap_err().to_string();
        assert!(
            e.contains("[database.x]") && e.contains("no such program"),
            "{e}"
        );
        let d = &dbs("[database.x]\nkind = postgresql\nrun_as = no-such-user-cairn\n")[0];
        let e = plan(d).unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
    }

    /// The one dump of `[database.pg] databases = app` whose `command` is a shell
    /// script named `name` running `script`, opened.
    fn open_app_dump(dir: &Path, name: &str, script: &str) -> DumpStream {
        let tool = fake_tool(dir, name, script);
        let d = &dbs(&format!(
            "[database.pg]\nkind = postgresql\ndatabases = app\ncommand = {}\n",
            tool.display()
        ))[0];
        plan(d).unwrap()[0].open(dir).unwrap()
    }

    #[test]
    fn a_tool_that_fails_midway_is_an_error_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_app_dump(
            dir.path(),
            "pg_dump",
            "echo 'partial output'; echo 'pg_dump: error: connection lost' >&2; exit 1",
        );
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "partial output\n");
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("exited with status 1"), "{e}");
        assert!(e.contains("connection lost"), "{e}");

        let mut s = open_app_dump(dir.path(), "ok_dump", "printf 'whole'; echo 'note' >&2");
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "whole");
        assert_eq!(s.finish().unwrap().trim(), "note");
    }

    #[test]
    fn a_killed_tool_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open_app_dump(dir.path(), "pg_dump", "echo start; kill -9 $$");
        std::io::copy(&mut s, &mut std::io::sink()).unwrap();
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("killed by signal 9"), "{e}");
    }

    #[test]
    fn sqlite_is_copied_consistently_into_a_private_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        let d = &dbs(&format!(
            "[database.lite]\nkind = sqlite\npath = {}\n",
            db.display()
        ))[0];
        let p = plan(d).unwrap();
        assert_eq!(p[0].snapshot_path(), "/.cairn/databases/lite/app.db");
        let scratch = dir.path().join("scratch");
        let mut s = p[0].open(&scratch).unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).unwrap();
        s.finish().unwrap();
        assert!(
            std::fs::read_dir(&scratch).unwrap().next().is_none(),
            "the temporary copy is gone"
        );
        let restored = dir.path().join("restored.db");
        std::fs::write(&restored, &bytes).unwrap();
        let r = rusqlite::Connection::open(&restored).unwrap();
        let n: i64 = r
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6, "the rows still in the WAL are in the copy");
        let missing = &dbs("[database.l]\nkind = sqlite\npath = /nonexistent.db\n")[0];
        let e = plan(missing).unwrap()[0]
            .open(&scratch)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no such database file"), "{e}");
    }
}
