//! A real PostgreSQL server for the dump tests: a throw-away cluster made with Debian's
//! `initdb` in a temporary directory, owned by the `postgres` system user, listening only
//! on a Unix socket in that directory (no TCP port, so tests never collide), with trust
//! authentication for local connections. Stopped (`pg_ctl stop -m immediate`) and
//! removed on drop.
//!
//! Needs root (to run the server as `postgres`) and the `postgresql` package (`.ci/run`
//! installs it); [`available`] says what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// The directory of the newest installed PostgreSQL's server binaries
/// (`/usr/lib/postgresql/N/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Why a server cannot be started here, if it cannot.
pub fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (the server runs as the postgres user)".into());
    }
    if bin_dir().is_none() {
        return Err("no PostgreSQL server (install the postgresql package)".into());
    }
    if nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .is_none()
    {
        return Err("no postgres user (install the postgresql package)".into());
    }
    Ok(())
}

/// A running throw-away cluster.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--reset-env",
    ])
    .arg(program)
    .current_dir("/");
    c
}

fn checked(what: &str, o: std::io::Result<Output>) -> Result<Output> {
    let o = o.with_context(|| format!("run {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(o)
}

impl PgServer {
    /// initdb, then start the server and wait until it accepts connections.
    pub fn start() -> Result<PgServer> {
        available().map_err(anyhow::Error::msg)?;
        let bin = bin_dir().unwrap();
        // Under /var/tmp: the postgres user must reach it (a test's /tmp tempdir may sit
        // below a 0700 directory), and socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir_in("/var/tmp")?;
        let pg = nix::unistd::User::from_name("postgres")?.unwrap();
        std::os::unix::fs::chown(dir.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))?;
        let data = dir.path().join("data");
        checked(
            "initdb",
            as_postgres(&bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&data)
                .output(),
        )?;
        let s = PgServer { dir, bin };
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off",
            s.socket_dir().display()
        );
        checked(
            "pg_ctl start",
            as_postgres(&s.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-o", &opts, "-l"])
                .arg(s.dir.path().join("server.log"))
                .arg("start")
                .stdout(Stdio::null())
                .output(),
        )?;
        Ok(s)
    }

    /// The directory holding the server's socket: `host` for clients.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A client program (`psql`, `pgbench`, `pg_restore`, `createdb`) with the
    /// connection set in its environment (`PGHOST`, `PGUSER=postgres`).
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGHOST", self.socket_dir())
            .env("PGUSER", "postgres")
            .env_remove("PGPASSWORD")
            .env_remove("PGDATABASE");
        c
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1 -d db -c sql`: the output, trimmed.
    pub fn query(&self, db: &str, sql: &str) -> Result<String> {
        let o = checked(
            "psql",
            self.client("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    db,
                    "-c",
                    sql,
                ])
                .output(),
        )?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// The server log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-w", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
