//! A real MariaDB server for the dump tests: a throw-away data directory made with
//! `mariadb-install-db` under `/var/tmp`, the server (`mariadbd`, as the `mysql` user)
//! listening only on a Unix socket there (`--skip-networking`), root authenticated by
//! the socket (the tests run as root). Shut down and removed on drop.
//!
//! Needs root and Debian's `mariadb-server` package (`.ci/run` installs it and disables
//! its own service, so booted test containers do not start one); [`available`] says
//! what is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Why a server cannot be started here, if it cannot.
pub fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (the server runs as the mysql user)".into());
    }
    for p in ["mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump"] {
        if program(p).is_none() {
            return Err(format!("no {p} (install mariadb-server)"));
        }
    }
    if nix::unistd::User::from_name("mysql")
        .ok()
        .flatten()
        .is_none()
    {
        return Err("no mysql user (install mariadb-server)".into());
    }
    Ok(())
}

/// A running throw-away server.
pub struct MariaDb {
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl MariaDb {
    /// Install a data directory, start the server, wait until it answers.
    pub fn start() -> Result<MariaDb> {
        available().map_err(anyhow::Error::msg)?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-mariadb-")
            .tempdir_in("/var/tmp")?;
        let mysql = nix::unistd::User::from_name("mysql")?.unwrap();
        std::os::unix::fs::chown(
            dir.path(),
            Some(mysql.uid.as_raw()),
            Some(mysql.gid.as_raw()),
        )?;
        // Other users reach the socket (tests dump as an unprivileged user too).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let data = dir.path().join("data");
        let o = Command::new(program("mariadb-install-db").unwrap())
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db")
            .output()
            .context("run mariadb-install-db")?;
        if !o.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut m = MariaDb { dir, server: None };
        let server = Command::new(program("mariadbd").unwrap())
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", m.socket().display()))
            .arg(format!("--pid-file={}", m.dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                m.dir.path().join("error.log").display()
            ))
            .args([
                "--skip-networking",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--skip-log-bin",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mariadbd")?;
        m.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if m.client()
                .args(["-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(m);
            }
            if let Some(Ok(Some(status))) = m.server.as_mut().map(|c| c.try_wait()) {
                bail!("mariadbd exited ({status}): {}", m.log());
            }
            if Instant::now() > deadline {
                bail!("mariadbd did not answer within 60 s: {}", m.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// `mariadb --no-defaults --socket=… --user=root` (socket authentication as root).
    pub fn client(&self) -> Command {
        let mut c = Command::new(program("mariadb").unwrap());
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root")
            .env_remove("MYSQL_PWD");
        c
    }

    /// Run SQL (batch mode, no column names): the output, trimmed.
    pub fn query(&self, sql: &str) -> Result<String> {
        let o: Output = self
            .client()
            .args(["--batch", "--skip-column-names", "-e", sql])
            .output()
            .context("run mariadb")?;
        if !o.status.success() {
            bail!("mariadb failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
