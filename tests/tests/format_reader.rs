//! docs/FORMAT.md is complete: an independent reader written from it alone
//! (`tests/format/reader.py`, Python, sharing no code with cairn) lists, verifies and
//! extracts a repository made by the real binaries, and what it extracts is the source
//! tree, byte for byte.
//!
//! The source tree holds a multi-MiB file cut into many chunks (small chunk sizes in the
//! config), a compressible file, an empty file, a sparse file, symlinks, a fifo, a hard
//! link, a non-UTF-8 name and nested and empty directories. The reader re-chunks every
//! file (`--check-chunking`), so the chunker's specification is checked too. Finally a
//! copy of the repository with one flipped byte in a pack must make `verify` and
//! `extract` fail.
//!
//! Needs `python3` with the PyPI packages `cryptography`, `blake3` and `zstandard`
//! (`pip install cryptography blake3 zstandard`); the test fails, naming them, when they
//! are missing. The binaries are found next to the test executable's `deps/` directory
//! or in `$CAIRN_BIN_DIR`; build them first with `cargo build --workspace`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PIP_HINT: &str = "pip install cryptography blake3 zstandard";

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable has a directory");
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the binaries first with `cargo build --workspace`, \
         or set CAIRN_BIN_DIR to the directory that holds them",
        p.display()
    );
    p
}

fn python() -> String {
    std::env::var("CAIRN_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn reader_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format/reader.py")
}

fn require_python_modules() {
    let out = Command::new(python())
        .args(["-c", "import cryptography, blake3, zstandard"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; the format reader needs Python 3 with: {PIP_HINT}",
                python()
            )
        });
    assert!(
        out.status.success(),
        "{} lacks the modules the format reader needs; install them with: {PIP_HINT}\n{}",
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{}", describe(what, &out));
    out
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Env {
    base: PathBuf,
    config: PathBuf,
}

impl Env {
    fn cairn(&self, bin: &str) -> Command {
        let mut c = Command::new(binary(bin));
        for d in ["state", "cache", "runtime"] {
            fs::create_dir_all(self.base.join(d)).unwrap();
        }
        c.env("CAIRN_CONFIG", &self.config)
            .env("STATE_DIRECTORY", self.base.join("state"))
            .env("CACHE_DIRECTORY", self.base.join("cache"))
            .env("RUNTIME_DIRECTORY", self.base.join("runtime"))
            .env("CAIRN_NO_DBUS", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("CAIRN_PASSPHRASE")
            .env_remove("JOURNAL_STREAM");
        c
    }
}

fn reader(repo: &Path, key: &Path, args: &[&OsStr]) -> Command {
    let mut c = Command::new(python());
    c.arg(reader_script()).arg(repo).arg(key).args(args);
    c
}

/// The source tree; returns the paths (relative to `src`) of two hard-linked files.
fn build_source(src: &Path) -> (PathBuf, PathBuf) {
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir(src.join("empty-dir")).unwrap();
    // Many chunks: 5 MiB of noise with 64 KiB / 256 KiB / 1 MiB chunks.
    fs::write(src.join("big.bin"), noise(5 << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    // Compressible (zstd-compressed blobs), and a file with the big one's content shifted.
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .collect();
    fs::write(src.join("a/text.txt"), &text).unwrap();
    let mut shifted = b"inserted".to_vec();
    shifted.extend_from_slice(&noise(3 << 20, 0x9e37_79b9_7f4a_7c15));
    fs::write(src.join("a/b/shifted.bin"), shifted).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("small.txt"), b"hello, format\n").unwrap();
    fs::write(src.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    // Non-UTF-8 names.
    fs::write(
        src.join(OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name\n",
    )
    .unwrap();
    fs::create_dir(src.join(OsStr::from_bytes(b"dir-\xff"))).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"dir-\xff/inner")), b"x").unwrap();
    // Sparse: 8 MiB with two data regions, the rest holes.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("sparse.img")).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&noise(100_000, 7), 2 << 20).unwrap();
        f.write_all_at(b"tail", (8 << 20) - 10).unwrap();
    }
    // Symlinks (one dangling), a fifo, a hard link, unusual modes.
    std::os::unix::fs::symlink("small.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at all", src.join("a/dangling")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::hard_link(src.join("small.txt"), src.join("a/hard-link")).unwrap();
    fs::set_permissions(src.join("a/text.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    (PathBuf::from("small.txt"), PathBuf::from("a/hard-link"))
}

/// Compare `a` (source) and `b` (extracted) recursively; returns the differences.
fn compare(a: &Path, b: &Path, diffs: &mut Vec<String>) {
    let (ma, mb) = match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(ma), Ok(mb)) => (ma, mb),
        (_, Err(e)) => {
            diffs.push(format!("{}: missing from the extraction: {e}", b.display()));
            return;
        }
        (Err(e), _) => panic!("{}: {e}", a.display()),
    };
    let (ta, tb) = (ma.file_type(), mb.file_type());
    let kind = |t: fs::FileType| {
        if t.is_dir() {
            "directory"
        } else if t.is_file() {
            "file"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_fifo() {
            "fifo"
        } else {
            "other"
        }
    };
    if kind(ta) != kind(tb) {
        diffs.push(format!(
            "{}: {} in the source, {} extracted",
            b.display(),
            kind(ta),
            kind(tb)
        ));
        return;
    }
    if !ta.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        diffs.push(format!(
            "{}: mode {:o} != {:o}",
            b.display(),
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        ));
    }
    if !ta.is_dir() && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        diffs.push(format!("{}: mtime differs", b.display()));
    }
    if ta.is_file() {
        if fs::read(a).unwrap() != fs::read(b).unwrap() {
            diffs.push(format!("{}: content differs", b.display()));
        }
    } else if ta.is_symlink() {
        if fs::read_link(a).unwrap() != fs::read_link(b).unwrap() {
            diffs.push(format!("{}: symlink target differs", b.display()));
        }
    } else if ta.is_dir() {
        let names = |d: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            diffs.push(format!("{}: entries differ: {na:?} vs {nb:?}", b.display()));
        }
        for n in na.iter().filter(|n| nb.contains(n)) {
            compare(&a.join(n), &b.join(n), diffs);
        }
    }
}

/// Flip one byte in the middle of the largest pack.
fn damage_largest_pack(repo: &Path) {
    let mut packs: Vec<(u64, PathBuf)> = Vec::new();
    for sub in fs::read_dir(repo.join("data")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap();
            packs.push((p.metadata().unwrap().len(), p.path()));
        }
    }
    let (len, path) = packs.into_iter().max().expect("the repository has packs");
    let mut bytes = fs::read(&path).unwrap();
    bytes[(len / 3) as usize] ^= 0x20;
    fs::write(&path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn independent_reader_extracts_a_repository_from_the_spec_alone() {
    require_python_modules();
    assert!(
        reader_script().is_file(),
        "{} is missing",
        reader_script().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let src = base.join("src");
    let repo = base.join("repo");
    let key = base.join("key");
    let config = base.join("cairn.conf");
    let (link_a, link_b) = build_source(&src);
    fs::write(
        &config,
        format!(
            "[repository]\npath = {}\nkey_file = {}\nchunk_min = 64 KiB\nchunk_avg = 256 KiB\n\
             chunk_max = 1 MiB\npack_size = 1 MiB\n\n[sources]\npaths = {}\n",
            repo.display(),
            key.display(),
            src.display()
        ),
    )
    .unwrap();
    let env = Env {
        base: base.clone(),
        config,
    };

    run_ok(
        "cairn key generate",
        env.cairn("cairn").arg("key").arg("generate").arg(&key),
    );
    run_ok("cairn init", env.cairn("cairn").arg("init"));
    run_ok("cairn-snapshot", &mut env.cairn("cairn-snapshot"));

    // list: one snapshot, of the source path.
    let out = run_ok(
        "reader.py list",
        &mut reader(&repo, &key, &["list".as_ref()]),
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reader.py list printed no JSON ({e}): {}",
            describe("list", &out)
        )
    });
    let snaps = list.as_array().expect("a JSON array of snapshots");
    assert_eq!(snaps.len(), 1, "one snapshot expected: {list}");
    let id = snaps[0]["id"].as_str().expect("snapshot id").to_string();
    assert_eq!(id.len(), 64, "snapshot id: {id}");
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([src.display().to_string()]),
        "snapshot paths"
    );

    // extract, re-chunking every file, and compare with the source.
    let outdir = base.join("out");
    run_ok(
        "reader.py extract",
        &mut reader(
            &repo,
            &key,
            &[
                "extract".as_ref(),
                id.as_ref(),
                outdir.as_os_str(),
                "--check-chunking".as_ref(),
            ],
        ),
    );
    let extracted = outdir.join(src.strip_prefix("/").unwrap());
    let mut diffs = Vec::new();
    compare(&src, &extracted, &mut diffs);
    assert!(
        diffs.is_empty(),
        "the extraction differs from the source:\n{}",
        diffs.join("\n")
    );
    let ino = |p: &Path| fs::metadata(extracted.join(p)).unwrap().ino();
    assert_eq!(
        ino(&link_a),
        ino(&link_b),
        "the hard-link group was not restored as one inode"
    );

    // verify: every pack's name and every blob.
    let out = run_ok(
        "reader.py verify",
        &mut reader(&repo, &key, &["verify".as_ref()]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{}", describe("verify", &out));
    assert!(
        v["packs"].as_u64().unwrap() >= 2,
        "several packs expected: {v}"
    );

    // One flipped byte in a pack: verify and extract must both fail.
    let damaged = base.join("damaged");
    copy_dir(&repo, &damaged);
    damage_largest_pack(&damaged);
    let out = reader(&damaged, &key, &["verify".as_ref()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        describe("verify of a damaged repository must fail", &out)
    );
    let out = reader(
        &damaged,
        &key,
        &[
            "extract".as_ref(),
            id.as_ref(),
            base.join("out2").as_os_str(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        describe("extract from a damaged repository must fail", &out)
    );
}
