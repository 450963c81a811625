//! A real S3 server for the upload tests: Garage (the S3-compatible object store from
//! crates.io, `scripts/deps.sh test` installs it with `cargo install`), one node on
//! loopback ports in a temporary directory, with its layout applied, ready for buckets
//! and keys made with its own CLI. Killed and removed on drop.
//!
//! [`available`] says why not when the binary is missing.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The garage binary: `$CAIRN_GARAGE`, else `garage` in `$PATH`, else `~/.cargo/bin`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("garage"))
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage")))
        .find(|p| p.is_file())
}

/// Why a server cannot be started here, if it cannot.
pub fn available() -> Result<(), String> {
    match binary() {
        Some(_) => Ok(()),
        None => Err("no garage binary (scripts/deps.sh test installs it)".into()),
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An access key made on the server.
#[derive(Debug, Clone)]
pub struct Key {
    /// `GK…`.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl Key {
    /// The file `[remote] credentials = PATH` reads.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        std::fs::write(
            path,
            format!(
                "access_key_id = {}\nsecret_access_key = {}\n",
                self.id, self.secret
            ),
        )?;
        Ok(())
    }
}

/// A running single-node Garage.
pub struct Garage {
    dir: tempfile::TempDir,
    child: Child,
    s3_port: u16,
    /// The process whose network namespace the server listens in, if not ours.
    netns: Option<i32>,
}

impl Garage {
    /// Write its config, start it, wait for it, apply a one-node layout.
    pub fn start() -> Result<Garage> {
        Self::start_in(None)
    }

    /// The same, listening on the loopback of process `pid`'s network namespace (a test
    /// container's: its units reach the server at [`Self::endpoint`]); its files stay in
    /// a temporary directory of the test's filesystem.
    pub fn start_in_netns(pid: i32) -> Result<Garage> {
        Self::start_in(Some(pid))
    }

    fn program(netns: Option<i32>) -> Command {
        let bin = binary().expect("checked by start");
        match netns {
            None => Command::new(bin),
            Some(pid) => crate::netns::command(pid, bin),
        }
    }

    fn start_in(netns: Option<i32>) -> Result<Garage> {
        let bin = binary().ok_or_else(|| anyhow::anyhow!("no garage binary"))?;
        let dir = tempfile::Builder::new().prefix("cairn-garage-").tempdir()?;
        let (s3, rpc, admin) = (free_port()?, free_port()?, free_port()?);
        let secret: [u8; 32] = rand_bytes();
        let config = format!(
            "metadata_dir = \"{p}/meta\"\ndata_dir = \"{p}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            p = dir.path().display(),
            secret = hex::encode(secret),
        );
        std::fs::write(dir.path().join("garage.toml"), config)?;
        let log = std::fs::File::create(dir.path().join("garage.log"))?;
        let child = Self::program(netns)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut g = Garage {
            dir,
            child,
            s3_port: s3,
            netns,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // `node id` answers from the key file before the server listens; `status` needs
        // the RPC server up.
        let id = loop {
            if let (Ok(o), Ok(_)) = (g.cli(&["node", "id", "-q"]), g.cli(&["status"])) {
                break o;
            }
            if let Ok(Some(st)) = g.child.try_wait() {
                bail!("garage exited ({st}): {}", g.log());
            }
            if Instant::now() > deadline {
                bail!("garage did not answer within 60 s: {}", g.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let node = id.trim().split('@').next().unwrap_or_default().to_string();
        let mut tries = 0;
        while let Err(e) = g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]) {
            tries += 1;
            if tries >= 50 {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        g.cli(&["layout", "apply", "--version", "1"])?;
        Ok(g)
    }

    /// Run the garage CLI against this server; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let o = Self::program(self.netns)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .output()?;
        if !o.status.success() {
            bail!(
                "garage {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 API's address (for a proxy in front of it).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.s3_port))
    }

    /// Create a bucket.
    pub fn bucket(&self, name: &str) -> Result<()> {
        self.cli(&["bucket", "create", name]).map(|_| ())
    }

    /// Create a key allowed `perms` (`--read`, `--write`, `--owner`) on `bucket`.
    pub fn key(&self, name: &str, bucket: &str, perms: &[&str]) -> Result<Key> {
        let out = self.cli(&["key", "create", name])?;
        let field = |label: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("no {label} in `garage key create`: {out}"))
        };
        let key = Key {
            id: field("Key ID:")?,
            secret: field("Secret key:")?,
        };
        let mut args = vec!["bucket", "allow"];
        args.extend_from_slice(perms);
        args.extend_from_slice(&[bucket, "--key", &key.id]);
        self.cli(&args)?;
        Ok(key)
    }

    /// Stop the server's process (SIGSTOP): connections are accepted by the kernel but
    /// never answered, as with a link that died; [`Self::resume`] undoes it.
    pub fn pause(&self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::STOP,
        );
    }

    /// Let a paused server run again (SIGCONT).
    pub fn resume(&self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::CONT,
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("/dev/urandom");
    b
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
