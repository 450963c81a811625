//! A scratch cairn installation for end-to-end tests: a temp dir holding a key file, a
//! config, state/cache/runtime dirs and a repository, and helpers that run the built
//! binaries against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_tests::Bins;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub bins: Bins,
    pub conf: PathBuf,
    pub repo: PathBuf,
    pub key: PathBuf,
}

/// Small chunks so that multi-MiB files span many blobs and packs stay small.
pub const SMALL_CHUNKS: &str =
    "chunk_min = 16 KiB\nchunk_avg = 64 KiB\nchunk_max = 256 KiB\npack_size = 1 MiB\n";

impl Env {
    /// A fresh environment whose `[sources]` are `sources`; the repository is initialised.
    pub fn new(sources: &[&Path]) -> Env {
        Self::with_repo_extra(sources, SMALL_CHUNKS)
    }

    pub fn with_repo_extra(sources: &[&Path], extra: &str) -> Env {
        let dir = cairn_tests::fixture::tempdir().expect("tempdir");
        let e = Env {
            bins: Bins::locate(),
            conf: dir.path().join("cairn.conf"),
            repo: dir.path().join("repo"),
            key: dir.path().join("repo.key"),
            dir,
        };
        let paths: Vec<String> = sources
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        std::fs::write(
            &e.conf,
            format!(
                "[repository]\npath = {}\nkey_file = {}\n{extra}\n[sources]\npaths = {}\n",
                e.repo.display(),
                e.key.display(),
                paths.join(" ")
            ),
        )
        .unwrap();
        ok(&e.cairn(&["key", "generate", e.key.to_str().unwrap()]));
        ok(&e.cairn(&["init"]));
        e
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = self.bins.cmd(bin);
        c.env("CAIRN_CONFIG", &self.conf)
            .env("STATE_DIRECTORY", self.path("state"))
            .env("CACHE_DIRECTORY", self.path("cache"))
            .env("RUNTIME_DIRECTORY", self.path("run"))
            .env("CAIRN_NO_DBUS", "1")
            .env_remove("CAIRN_PASSPHRASE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID");
        c
    }

    pub fn cairn(&self, args: &[&str]) -> Output {
        self.cmd("cairn").args(args).output().expect("run cairn")
    }

    pub fn snapshot(&self) -> Output {
        self.cmd("cairn-snapshot")
            .output()
            .expect("run cairn-snapshot")
    }

    /// Snapshot ids, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let out = self.cairn(&["snapshots", "--json"]);
        ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn status(&self, stage: &str) -> serde_json::Value {
        let p = self
            .path("state")
            .join("status")
            .join(format!("{stage}.json"));
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Assert success and return the output.
pub fn ok(o: &Output) -> &Output {
    assert!(o.status.success(), "command failed:\n{}", text(o));
    o
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file below `dir` (recursively), for "nothing written outside" assertions.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
