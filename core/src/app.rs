//! The `cairn` command for people: init, keys, snapshots, ls, diff, cat, restore, check,
//! unlock.
//!
//! Each command is a function taking parsed arguments and returning an exit code with the
//! meaning DESIGN.md fixes (0 ok, 1 usage/config/wrong key, 2 environment: repository
//! missing or locked, key missing; 3 operation failed, e.g. files not restored; 4 check
//! found damage). Errors are one line on stderr that says what to do; with `--json`,
//! results are JSON on stdout.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Config;
use crate::repo::keyslot::{generate_key_file, KeySource};
use crate::repo::{InitParams, RepoError, Repository};
use crate::restore::{Overwrite, RestoreEvents, RestoreOptions};
use crate::stage::{msg, Priority};
use crate::tree::{Kind, Node};
use crate::util::show;
use crate::walk::{self, Selection, Visitor};

/// Options every command takes.
pub struct Global {
    pub config: Option<PathBuf>,
    pub json: bool,
    /// `--remote`: read the `[remote]` bucket instead of the local repository.
    pub remote: bool,
}

/// A failure: exit code and one line for the operator.
pub struct Fail(pub i32, pub String);

impl From<RepoError> for Fail {
    fn from(e: RepoError) -> Fail {
        Fail(e.exit_code(), e.to_string())
    }
}

impl From<crate::config::ConfigError> for Fail {
    fn from(e: crate::config::ConfigError) -> Fail {
        Fail(1, e.to_string())
    }
}

pub type Res = Result<i32, Fail>;

/// Parse the command line; `--help`/`--version` exit 0, any other parse error is a usage
/// error and exits 1 (clap's own default, 2, means "environment" in cairn).
pub fn parse_args<P: clap::Parser>() -> Result<P, std::process::ExitCode> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        std::process::ExitCode::from(if e.use_stderr() { 1 } else { 0 })
    })
}

/// Print the error and map to the exit code.
pub fn finish(r: Res) -> i32 {
    match r {
        Ok(c) => c,
        Err(Fail(code, m)) => {
            eprintln!("cairn: error: {m}");
            code
        }
    }
}

fn load(g: &Global) -> Result<Config, Fail> {
    Ok(Config::load(g.config.as_deref())?)
}

fn open(g: &Global) -> Result<Repository, Fail> {
    let cfg = load(g)?;
    if g.remote {
        return open_remote(&cfg);
    }
    let r = cfg.repository()?;
    let sources = crate::keys::sources_or_prompt(r, false).map_err(|e| Fail(2, e))?;
    Ok(Repository::open(&r.path, &sources)?)
}

/// The `[remote]` bucket as the repository (read-only), opened with `[repository]`'s key
/// sources: on a new host the config and the key are all that is needed.
fn open_remote(cfg: &Config) -> Result<Repository, Fail> {
    let r = cfg.repository()?;
    let backend = remote_backend(cfg)?;
    let sources = crate::keys::sources_or_prompt(r, false).map_err(|e| Fail(2, e))?;
    Ok(Repository::open_backend(
        std::sync::Arc::new(backend),
        &sources,
    )?)
}

fn remote_backend(cfg: &Config) -> Result<crate::backend::s3::S3Backend, Fail> {
    let remote = cfg.remote()?;
    let s3 = crate::upload::connect(remote).map_err(|m| Fail(2, m))?;
    Ok(crate::backend::s3::S3Backend::new(s3))
}

/// Whether a repository is the bucket (read through `--remote`).
fn is_remote(repo: &Repository) -> bool {
    repo.location().starts_with("s3://")
}

/// Write commands act on the local repository only: with `--remote` they refuse, rather
/// than quietly changing the local copy the operator did not mean.
fn local_only(g: &Global, command: &str) -> Result<(), Fail> {
    if g.remote {
        return Err(Fail(
            1,
            format!(
                "--remote applies to the read commands (snapshots, ls, diff, cat, restore, \
                 check, key list, status); `cairn {command}` changes the local repository only \
                 and the bucket changes only through cairn-upload; run it without --remote"
            ),
        ));
    }
    Ok(())
}

pub fn init(g: &Global) -> Res {
    local_only(g, "init")?;
    let cfg = load(g)?;
    let r = cfg.repository()?;
    if let Some(k) = &r.key_file {
        if !k.exists() {
            return Err(Fail(
                2,
                format!(
                    "key file {} does not exist: create it with `cairn key generate {}`",
                    k.display(),
                    k.display()
                ),
            ));
        }
    }
    let sources = crate::keys::sources_or_prompt(r, true).map_err(|e| Fail(2, e))?;
    let src = sources.first().ok_or_else(|| {
        Fail(1, "no key configured: set key_file (see `cairn key generate`) or a passphrase in [repository], or set CAIRN_PASSPHRASE".into())
    })?;
    let id = Repository::init(
        &r.path,
        src,
        &InitParams {
            chunk_min: r.chunk_min as u32,
            chunk_avg: r.chunk_avg as u32,
            chunk_max: r.chunk_max as u32,
        },
    )?;
    if g.json {
        println!(
            "{}",
            json!({"repository": r.path, "id": id, "key": src.describe()})
        );
    } else {
        println!(
            "created repository {} at {} (key slot for the {})",
            &id[..12],
            r.path.display(),
            src.describe()
        );
    }
    Ok(0)
}

pub fn key_generate(g: &Global, path: &Path) -> Res {
    local_only(g, "key generate")?;
    generate_key_file(path).map_err(|e| Fail(1, e))?;
    if g.json {
        println!("{}", json!({"key_file": path}));
    } else {
        println!(
            "wrote a new key to {} (mode 0600); keep a copy somewhere safe, off this machine",
            path.display()
        );
    }
    Ok(0)
}

pub enum NewKey {
    KeyFile(PathBuf),
    PassphraseFile(PathBuf),
    Prompt,
}

pub fn key_add(g: &Global, new: NewKey, label: Option<String>) -> Res {
    local_only(g, "key add")?;
    let repo = open(g)?;
    let src = match new {
        NewKey::KeyFile(p) => KeySource::KeyFile(p),
        NewKey::PassphraseFile(p) => {
            crate::keys::read_passphrase_file(&p).map_err(|e| Fail(1, e))?
        }
        NewKey::Prompt => {
            crate::keys::prompt_passphrase("New passphrase: ", true).map_err(|e| Fail(1, e))?
        }
    };
    let label = label.unwrap_or_else(|| src.describe());
    let name = repo.add_slot(&src, &label)?;
    if g.json {
        println!("{}", json!({"slot": name, "label": label}));
    } else {
        println!("added key slot {} ({label})", &name[..12]);
    }
    Ok(0)
}

pub fn key_list(g: &Global) -> Res {
    let repo = open(g)?;
    let slots = repo.slots()?;
    if g.json {
        let v: Vec<_> = slots
            .iter()
            .map(|(n, s)| json!({"id": n, "kind": s.kind, "label": s.label, "host": s.host, "created": s.created, "current": *n == repo.slot}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else {
        println!(
            "{:<14} {:<11} {:<26} {:<16} LABEL",
            "ID", "KIND", "CREATED", "HOST"
        );
        for (n, s) in &slots {
            let kind = serde_json::to_value(s.kind)
                .unwrap()
                .as_str()
                .unwrap_or("")
                .to_string();
            let mark = if *n == repo.slot { "*" } else { " " };
            println!(
                "{}{:<13} {:<11} {:<26} {:<16} {}",
                mark,
                &n[..12],
                kind,
                &s.created[..s.created.len().min(25)],
                s.host,
                s.label
            );
        }
    }
    Ok(0)
}

pub fn key_remove(g: &Global, id: &str) -> Res {
    local_only(g, "key remove")?;
    let repo = open(g)?;
    let name = repo.remove_slot(id)?;
    if g.json {
        println!("{}", json!({"removed": name}));
    } else {
        println!("removed key slot {}", &name[..12]);
    }
    Ok(0)
}

pub fn snapshots(g: &Global) -> Res {
    let repo = open(g)?;
    // Copies of one record left by an interrupted protect/unprotect are shown once.
    let (all, copies) = repo.snapshot_list()?;
    if g.json {
        let v: Vec<_> = all
            .iter()
            .map(|s| {
                let mut record = serde_json::to_value(&s.snapshot).unwrap();
                record["protected"] = json!(s.protected);
                json!({"id": s.id, "snapshot": record})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:<16}  {:>10}  {:>10}  {:<10}  {:<9}  PATHS",
        "ID", "TIME (UTC)", "HOST", "SIZE", "ADDED", "STATE", "PROTECTED"
    );
    for st in &all {
        let (id, s) = (&st.id, &st.snapshot);
        println!(
            "{:<12}  {:<20}  {:<16}  {:>10}  {:>10}  {:<10}  {:<9}  {}",
            &id[..12],
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            crate::util::human_bytes(s.figures.bytes_total),
            crate::util::human_bytes(s.figures.bytes_added),
            if s.complete { "complete" } else { "INCOMPLETE" },
            if st.protected { "yes" } else { "no" },
            s.paths.join(" ")
        );
    }
    println!("{} snapshots", all.len());
    if !copies.is_empty() {
        eprintln!(
            "note: {} snapshot objects are extra copies left by an interrupted protect or unprotect; `cairn forget` removes them",
            copies.len()
        );
    }
    Ok(0)
}

fn mode_string(n: &Node) -> String {
    let mut s = String::new();
    s.push(n.kind.letter());
    let m = n.mode;
    for (i, (r, w, x)) in [(0o400, 0o200, 0o100), (0o40, 0o20, 0o10), (0o4, 0o2, 0o1)]
        .iter()
        .enumerate()
    {
        s.push(if m & r != 0 { 'r' } else { '-' });
        s.push(if m & w != 0 { 'w' } else { '-' });
        let special = [0o4000, 0o2000, 0o1000][i];
        let sc = if i == 2 { ('t', 'T') } else { ('s', 'S') };
        s.push(match (m & x != 0, m & special != 0) {
            (true, true) => sc.0,
            (false, true) => sc.1,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn owner(name: &[u8], id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        show(name)
    }
}

pub fn node_json(path: &[u8], n: &Node) -> serde_json::Value {
    let mut v = json!({
        "path": show(path),
        "type": match n.kind { Kind::File(_) => "file", Kind::Dir{..} => "dir", Kind::Symlink{..} => "symlink", Kind::Fifo => "fifo", Kind::CharDev{..} => "chardev", Kind::BlockDev{..} => "blockdev" },
        "mode": format!("{:04o}", n.mode),
        "uid": n.uid, "gid": n.gid, "user": show(&n.user), "group": show(&n.group),
        "mtime": crate::util::decimal_time(n.mtime, n.mtime_nsec),
    });
    match &n.kind {
        Kind::File(f) => {
            v["size"] = json!(f.size);
            v["blake3"] = json!(hex::encode(f.hash));
            if !f.extents.is_empty() {
                v["sparse"] = json!(true);
            }
        }
        Kind::Symlink { target } => v["target"] = json!(show(target)),
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            v["device"] = json!([major, minor])
        }
        _ => {}
    }
    v
}

fn node_line(path: &[u8], n: &Node) -> String {
    let size = match &n.kind {
        Kind::File(f) => f.size.to_string(),
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            format!("{major},{minor}")
        }
        _ => "0".into(),
    };
    let t = chrono::DateTime::from_timestamp(n.mtime, n.mtime_nsec)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let mut line = format!(
        "{} {:<8} {:<8} {:>12} {} {}",
        mode_string(n),
        owner(&n.user, n.uid),
        owner(&n.group, n.gid),
        size,
        t,
        show(path)
    );
    if let Kind::Symlink { target } = &n.kind {
        line.push_str(" -> ");
        line.push_str(&show(target));
    }
    line
}

struct Lister {
    json: bool,
    /// Only PATH and what is below it is listed (not the directories leading to it).
    prefix: Vec<u8>,
    items: Vec<serde_json::Value>,
    errors: u64,
}

impl Visitor for Lister {
    fn enter_dir(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        self.entry(path, node)
    }
    fn leave_dir(&mut self, _: &[u8], _: &Node) -> Result<(), RepoError> {
        Ok(())
    }
    fn entry(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        let below = path == self.prefix.as_slice()
            || (path.starts_with(&self.prefix)
                && (self.prefix.ends_with(b"/") || path.get(self.prefix.len()) == Some(&b'/')));
        if !below {
            return Ok(());
        }
        if self.json {
            self.items.push(node_json(path, node));
        } else {
            println!("{}", node_line(path, node));
        }
        Ok(())
    }
    fn tree_error(&mut self, path: &[u8], error: &RepoError) -> Result<(), RepoError> {
        self.errors += 1;
        eprintln!("cairn: error: {}: {error}", show(path));
        Ok(())
    }
}

/// Selection for an optional PATH argument: the path and everything below it.
fn path_selection(path: Option<&str>) -> Result<Selection, Fail> {
    match path {
        None | Some("/") => Ok(Selection::all()),
        Some(p) => {
            let p = format!("/{}", p.trim_matches('/'));
            let esc = globset::escape(&p);
            Ok(Selection::new(&[esc], &[])?)
        }
    }
}

pub fn ls(g: &Global, snapshot: &str, path: Option<&str>) -> Res {
    let repo = open(g)?;
    let (_, snap) = repo.resolve_snapshot(snapshot)?;
    let root = walk::root_id(&snap.tree)?;
    let sel = path_selection(path)?;
    let prefix = match path {
        None => b"/".to_vec(),
        Some(p) => format!("/{}", p.trim_matches('/')).into_bytes(),
    };
    let mut l = Lister {
        json: g.json,
        prefix,
        items: vec![],
        errors: 0,
    };
    walk::walk(&repo, &root, &sel, &mut l)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&l.items).unwrap());
    }
    Ok(if l.errors > 0 { 3 } else { 0 })
}

pub fn cat(_g: &Global, snapshot: &str, path: &str) -> Res {
    let repo = open(_g)?;
    let (_, snap) = repo.resolve_snapshot(snapshot)?;
    let root = walk::root_id(&snap.tree)?;
    let node = walk::lookup(&repo, &root, path.as_bytes())?
        .ok_or_else(|| Fail(1, "cat needs a file path, not /".into()))?;
    let Kind::File(f) = &node.kind else {
        return Err(Fail(
            1,
            format!("{path} is not a regular file in the snapshot"),
        ));
    };
    let mut stream = crate::restore::FileStream::new(&repo, f);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match std::io::copy(&mut stream, &mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Fail(3, format!("{path}: {e}")))
        }
        Err(e) => return Err(Fail(3, format!("cannot write {path} to stdout: {e}"))),
    }
    out.flush()
        .map_err(|e| Fail(3, format!("cannot write to stdout: {e}")))?;
    Ok(0)
}

#[derive(Clone, Copy)]
enum Change {
    Added,
    Removed,
    Modified,
}

fn diff_trees(
    repo: &Repository,
    a: Option<&[u8; 32]>,
    b: Option<&[u8; 32]>,
    path: &[u8],
    out: &mut Vec<(Change, Vec<u8>)>,
) -> Result<(), RepoError> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(a) => walk::load_tree(repo, a)?,
        None => vec![],
    };
    let tb = match b {
        Some(b) => walk::load_tree(repo, b)?,
        None => vec![],
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let ord = match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let sub = |n: &Node| match &n.kind {
            Kind::Dir { subtree } => Some(*subtree),
            _ => None,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let p = walk::join(path, &ta[i].name);
                out.push((Change::Removed, p.clone()));
                if let Some(s) = sub(&ta[i]) {
                    diff_trees(repo, Some(&s), None, &p, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let p = walk::join(path, &tb[j].name);
                out.push((Change::Added, p.clone()));
                if let Some(s) = sub(&tb[j]) {
                    diff_trees(repo, None, Some(&s), &p, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&ta[i], &tb[j]);
                let p = walk::join(path, &x.name);
                match (sub(x), sub(y)) {
                    (Some(sx), Some(sy)) => {
                        if (x.mode, x.uid, x.gid, &x.xattrs) != (y.mode, y.uid, y.gid, &y.xattrs) {
                            out.push((Change::Modified, p.clone()));
                        }
                        diff_trees(repo, Some(&sx), Some(&sy), &p, out)?;
                    }
                    _ => {
                        let same = match (&x.kind, &y.kind) {
                            (Kind::File(f), Kind::File(g)) => {
                                f.hash == g.hash && f.size == g.size && f.extents == g.extents
                            }
                            (k1, k2) => k1 == k2,
                        } && (x.mode, x.uid, x.gid, x.mtime, x.mtime_nsec, &x.xattrs)
                            == (y.mode, y.uid, y.gid, y.mtime, y.mtime_nsec, &y.xattrs);
                        if !same {
                            out.push((Change::Modified, p));
                        }
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

pub fn diff(g: &Global, a: &str, b: &str) -> Res {
    let repo = open(g)?;
    let (ia, sa) = repo.resolve_snapshot(a)?;
    let (ib, sb) = repo.resolve_snapshot(b)?;
    let mut out = Vec::new();
    diff_trees(
        &repo,
        Some(&walk::root_id(&sa.tree)?),
        Some(&walk::root_id(&sb.tree)?),
        b"/",
        &mut out,
    )?;
    out.sort_by(|x, y| x.1.cmp(&y.1));
    let letter = |c: Change| match c {
        Change::Added => "+",
        Change::Removed => "-",
        Change::Modified => "M",
    };
    if g.json {
        let v: Vec<_> = out
            .iter()
            .map(|(c, p)| json!({"change": letter(*c), "path": show(p)}))
            .collect();
        println!("{}", json!({"from": ia, "to": ib, "changes": v}));
    } else {
        for (c, p) in &out {
            println!("{} {}", letter(*c), show(p));
        }
        let count = |k: &str| out.iter().filter(|(c, _)| letter(*c) == k).count();
        eprintln!(
            "{} added, {} removed, {} modified",
            count("+"),
            count("-"),
            count("M")
        );
    }
    Ok(0)
}

pub struct RestoreArgs {
    pub snapshot: String,
    pub target: Option<PathBuf>,
    pub tar: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub dry_run: bool,
    pub overwrite: Overwrite,
}

struct RestoreLog {
    verbose: bool,
}

impl RestoreEvents for RestoreLog {
    fn failed(&self, path: &str, error: &str) {
        crate::stage::log_event(
            &msg::RESTORE_FILE_FAILED,
            Priority::Err,
            &format!("{path}: not restored: {error}"),
            &[("CAIRN_PATH", path)],
        );
    }
    fn skipped(&self, path: &str, why: &str) {
        if self.verbose || why != "unchanged" {
            eprintln!("skipped {path}: {why}");
        }
    }
    fn restored(&self, path: &str, node: &Node) {
        if self.verbose {
            println!("{}", node_line(path.as_bytes(), node));
        }
    }
}

/// A shared lock; stale locks removed on the way are logged. None for the bucket: it is
/// read-only to every command, and only `cairn-upload --prune` deletes there, only
/// objects older than its grace period, so no reader needs to hold it off.
fn take_lock(repo: &Repository, what: &str) -> Result<Option<crate::repo::lock::RepoLock>, Fail> {
    if is_remote(repo) {
        return Ok(None);
    }
    let a = repo.lock(false, what)?;
    for s in &a.removed_stale {
        crate::stage::log_event(&msg::LOCK_STALE_REMOVED, Priority::Notice, s, &[]);
    }
    Ok(Some(a.lock))
}

/// `SNAPSHOT` or `SNAPSHOT:PATH`: the root tree to work on (PATH's subtree when given).
fn resolve_root(repo: &Repository, spec: &str) -> Result<(String, [u8; 32]), Fail> {
    let (snap_spec, sub) = match spec.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (spec, None),
    };
    let (id, snap) = repo.resolve_snapshot(snap_spec)?;
    let root = walk::root_id(&snap.tree)?;
    match sub {
        None | Some("") | Some("/") => Ok((id, root)),
        Some(p) => match walk::lookup(repo, &root, p.as_bytes())? {
            Some(Node {
                kind: Kind::Dir { subtree },
                ..
            }) => Ok((id, subtree)),
            _ => Err(Fail(
                1,
                format!("{p} is not a directory in snapshot {}", &id[..12]),
            )),
        },
    }
}

pub fn restore(g: &Global, a: &RestoreArgs) -> Res {
    let repo = open(g)?;
    let (id, root) = resolve_root(&repo, &a.snapshot)?;
    let sel = Selection::new(&a.include, &a.exclude)?;
    let _lock = take_lock(&repo, "cairn restore")?;
    if let Some(t) = &a.tar {
        if a.dry_run {
            return Err(Fail(1, "--dry-run does not apply to --tar".into()));
        }
        let stats = if t == "-" {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Fail(1, "refusing to write a tar stream to a terminal: redirect stdout, or give --tar FILE".into()));
            }
            match crate::tarexport::export(
                &repo,
                &root,
                &sel,
                std::io::BufWriter::new(stdout.lock()),
            ) {
                Ok(s) => s,
                // The reader went away (`| head`): not an error of ours.
                Err(RepoError::Io { err, .. }) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(0)
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            let path = PathBuf::from(t);
            let mut tmp = path.clone().into_os_string();
            tmp.push(".partial");
            let tmp = PathBuf::from(tmp);
            let f = std::fs::File::create(&tmp)
                .map_err(|e| Fail(1, format!("cannot create {}: {e}", tmp.display())))?;
            let s = crate::tarexport::export(&repo, &root, &sel, std::io::BufWriter::new(f));
            match s {
                Ok(s) => {
                    std::fs::rename(&tmp, &path)
                        .map_err(|e| Fail(3, format!("cannot rename {}: {e}", tmp.display())))?;
                    s
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        };
        eprintln!(
            "wrote {} entries, {} from snapshot {}",
            stats.entries,
            crate::util::human_bytes(stats.bytes),
            &id[..12]
        );
        if stats.errors > 0 {
            return Err(Fail(
                3,
                format!(
                    "{} extended attributes have names a pax tar cannot carry and were left out",
                    stats.errors
                ),
            ));
        }
        return Ok(0);
    }
    let target = a
        .target
        .as_ref()
        .ok_or_else(|| Fail(1, "give --target DIR, or --tar - for a tar stream".into()))?;
    let opts = RestoreOptions {
        overwrite: a.overwrite,
        dry_run: a.dry_run,
        owners: rustix::process::geteuid().is_root(),
    };
    let ev = RestoreLog {
        verbose: a.dry_run && !g.json,
    };
    let stats = crate::restore::restore(&repo, &root, target, &sel, &opts, &ev)?;
    if g.json {
        println!(
            "{}",
            json!({"snapshot": id, "target": target, "dry_run": a.dry_run, "stats": stats})
        );
    } else {
        eprintln!(
            "{} snapshot {}: {} files ({}), {} dirs, {} other; {} skipped, {} failed",
            if a.dry_run {
                "would restore"
            } else {
                "restored"
            },
            &id[..12],
            stats.files,
            crate::util::human_bytes(stats.bytes),
            stats.dirs,
            stats.other,
            stats.skipped,
            stats.failed
        );
    }
    if stats.failed > 0 {
        return Err(Fail(
            3,
            format!(
                "{} entries were not restored (see the messages above)",
                stats.failed
            ),
        ));
    }
    if !a.dry_run {
        crate::stage::log_event(
            &msg::RESTORE_DONE,
            Priority::Info,
            &format!(
                "restored snapshot {} to {}: {} files",
                &id[..12],
                target.display(),
                stats.files
            ),
            &[("CAIRN_SNAPSHOT", &id)],
        );
    }
    Ok(0)
}

struct CheckProgress;
impl crate::check::CheckEvents for CheckProgress {
    fn progress(&self, what: &str) {
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K{what}");
        }
    }
}

pub fn check(g: &Global, read_data: bool) -> Res {
    let mut names_only = false;
    let r = if g.remote {
        // The bucket: first what needs no key (every object's bytes against its SHA-256
        // name), then, when a key is configured, everything else.
        let cfg = load(g)?;
        let backend = std::sync::Arc::new(remote_backend(&cfg)?);
        let mut names = crate::check::check_names(&*backend, &CheckProgress)?;
        let sources = crate::keys::sources(cfg.repository()?).map_err(|e| Fail(2, e))?;
        if sources.is_empty() {
            names_only = true;
            names.warnings.push(
                "no key configured: only the objects' names were verified (add a key source \
                 to [repository] to check everything)"
                    .to_string(),
            );
            names
        } else {
            let repo = Repository::open_backend(backend, &sources)?;
            let mut full = crate::check::check(&repo, read_data, &CheckProgress)?;
            full.errors.splice(0..0, names.errors);
            full.bytes_read += names.bytes_read;
            full
        }
    } else {
        let repo = open(g)?;
        let _lock = take_lock(&repo, "cairn check")?;
        crate::check::check(&repo, read_data, &CheckProgress)?
    };
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
    } else {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        println!(
            "{} snapshots, {} trees, {} packs{}: {}",
            r.snapshots,
            r.trees,
            r.packs,
            if names_only {
                format!(
                    ", every object's name verified ({})",
                    crate::util::human_bytes(r.bytes_read)
                )
            } else if read_data {
                format!(
                    ", {} blobs read ({})",
                    r.blobs,
                    crate::util::human_bytes(r.bytes_read)
                )
            } else {
                String::new()
            },
            if r.errors.is_empty() {
                "no errors".to_string()
            } else {
                format!("{} ERRORS", r.errors.len())
            }
        );
    }
    if !r.errors.is_empty() {
        crate::stage::log_event(
            &msg::CHECK_FAILED,
            Priority::Err,
            &format!(
                "check found {} errors; first: {}",
                r.errors.len(),
                r.errors[0]
            ),
            &[],
        );
        return Ok(4);
    }
    Ok(0)
}

pub fn unlock(g: &Global, all: bool) -> Res {
    local_only(g, "unlock")?;
    let cfg = load(g)?;
    let r = cfg.repository()?;
    let backend = crate::backend::LocalBackend::new(&r.path);
    let removed = crate::repo::lock::unlock(&backend, all).map_err(|e| {
        Fail(
            3,
            format!("cannot remove locks in {}: {e}", r.path.display()),
        )
    })?;
    if g.json {
        println!("{}", json!({"removed": removed}));
    } else if removed.is_empty() {
        println!("no {}locks to remove", if all { "" } else { "stale " });
    } else {
        for l in removed {
            println!("{l}");
        }
    }
    Ok(0)
}

fn open_with(cfg: &Config) -> Result<Repository, Fail> {
    let r = cfg.repository()?;
    let sources = crate::keys::sources_or_prompt(r, false).map_err(|e| Fail(2, e))?;
    Ok(Repository::open(&r.path, &sources)?)
}

/// An exclusive lock, for commands that remove objects; stale locks removed are logged.
fn take_exclusive_lock(repo: &Repository, what: &str) -> Result<crate::repo::lock::RepoLock, Fail> {
    let a = repo.lock(true, what)?;
    for s in &a.removed_stale {
        crate::stage::log_event(&msg::LOCK_STALE_REMOVED, Priority::Notice, s, &[]);
    }
    Ok(a.lock)
}

/// `cairn forget`: apply `[retention]`, removing the snapshots it does not keep.
pub fn forget(g: &Global, dry_run: bool) -> Res {
    local_only(g, "forget")?;
    let cfg = load(g)?;
    let policy = cfg.retention()?.clone();
    let repo = open_with(&cfg)?;
    let _lock = if dry_run {
        None
    } else {
        Some(take_exclusive_lock(&repo, "cairn forget")?)
    };
    let report = crate::retention::forget(&repo, &policy, chrono::Utc::now(), dry_run)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else {
        print_forget(&report);
    }
    if let Some(first) = report.errors.first() {
        return Err(Fail(
            3,
            format!(
                "{} snapshot objects could not be removed; first: {first}",
                report.errors.len()
            ),
        ));
    }
    Ok(0)
}

fn print_forget(r: &crate::retention::ForgetReport) {
    println!("policy: {}", r.policy);
    // One table per host and source paths, the groups the policy judges separately.
    let mut groups: Vec<(&str, &[String])> = Vec::new();
    for s in &r.snapshots {
        let key = (s.host.as_str(), s.paths.as_slice());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (host, paths) in groups {
        println!();
        println!("host {host}, paths {}:", paths.join(" "));
        println!(
            "{:<12}  {:<19}  {:<16}  {:<6}  REASONS",
            "ID", "TIME (UTC)", "HOST", "ACTION"
        );
        for s in r
            .snapshots
            .iter()
            .filter(|s| s.host == host && s.paths == paths)
        {
            println!(
                "{:<12}  {:<19}  {:<16}  {:<6}  {}",
                &s.id[..12],
                s.time.format("%Y-%m-%d %H:%M:%S"),
                s.host,
                s.decision,
                s.reasons.join(", ")
            );
        }
    }
    for c in &r.copies {
        println!(
            "{} {}: an extra copy of snapshot {} left by an interrupted protect or unprotect",
            if r.dry_run {
                "would remove"
            } else if c.removed {
                "removed"
            } else {
                "could not remove"
            },
            &c.id[..12],
            &c.copy_of[..12]
        );
    }
    println!();
    if r.dry_run {
        println!(
            "{} snapshots: {} kept, {} would be removed (dry run: nothing was removed)",
            r.snapshots.len(),
            r.kept,
            r.dropped
        );
    } else {
        println!(
            "{} snapshots: {} kept, {} removed",
            r.snapshots.len(),
            r.kept,
            r.removed
        );
    }
}

/// `cairn protect` / `cairn unprotect`: mark a snapshot so that forget never drops it, or
/// remove the mark. The snapshot is written again, so its id changes.
pub fn protect(g: &Global, spec: &str, protected: bool) -> Res {
    local_only(g, if protected { "protect" } else { "unprotect" })?;
    let repo = open(g)?;
    let verb = if protected { "protect" } else { "unprotect" };
    let _lock = take_lock(&repo, &format!("cairn {verb}"))?;
    let (id, _) = repo.resolve_snapshot(spec)?;
    let c = repo.set_protected(&id, protected)?;
    if g.json {
        println!(
            "{}",
            json!({"snapshot": c.id, "previous": c.previous, "protected": protected, "changed": c.changed, "removed": c.removed})
        );
    } else if c.changed {
        println!(
            "snapshot {} is now {}; its new id is {}",
            &c.previous[..12],
            if protected {
                "protected"
            } else {
                "unprotected"
            },
            c.id
        );
    } else {
        println!(
            "snapshot {} is already {}",
            c.id,
            if protected {
                "protected"
            } else {
                "unprotected"
            }
        );
    }
    Ok(0)
}

struct PruneProgress;
impl crate::prune::PruneEvents for PruneProgress {
    fn progress(&self, what: &str) {
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K{what}");
        }
    }
}

pub fn prune(g: &Global, dry_run: bool, max_repack: Option<&str>) -> Res {
    local_only(g, "prune")?;
    let cfg = load(g)?;
    let rcfg = cfg.repository()?;
    let max_repack = match max_repack {
        Some(s) => Some(
            crate::config::parse_size(s)
                .map_err(|e| Fail(1, format!("--max-repack {s:?}: {e}")))?,
        ),
        None => None,
    };
    let sources = crate::keys::sources_or_prompt(rcfg, false).map_err(|e| Fail(2, e))?;
    let repo = Repository::open(&rcfg.path, &sources)?;
    // Exclusive: no backup may add blobs that this prune would consider unused.
    let lock = repo.lock(true, "cairn prune")?;
    for s in &lock.removed_stale {
        crate::stage::log_event(&msg::LOCK_STALE_REMOVED, Priority::Notice, s, &[]);
    }
    let opts = crate::prune::PruneOptions {
        dry_run,
        max_repack,
        pack_size: rcfg.pack_size as usize,
    };
    let r = crate::prune::prune(&repo, &opts, &PruneProgress)?;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
    } else {
        println!(
            "{}{} snapshots, {} packs: {} deleted, {} repacked into {}, {} unindexed deleted; {} freed, {} copied",
            if dry_run { "dry run: would prune — " } else { "" },
            r.snapshots,
            r.packs_total,
            r.packs_deleted,
            r.packs_repacked,
            r.packs_written,
            r.packs_unindexed_deleted,
            crate::util::human_bytes(r.bytes_freed),
            crate::util::human_bytes(r.bytes_repacked)
        );
    }
    Ok(0)
}

/// `cairn remote test`.
pub fn remote_test(g: &Global) -> Res {
    let cfg = load(g)?;
    let steps = crate::upload::remote_test(cfg.remote()?);
    let ok = steps.iter().all(|s| s.ok);
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "steps": steps})).unwrap()
        );
    } else {
        for s in &steps {
            println!(
                "{:<12} {:<7} {}",
                s.step,
                if s.ok { "ok" } else { "FAILED" },
                s.detail
            );
        }
    }
    Ok(if ok { 0 } else { 2 })
}

/// `cairn status`.
pub fn status(g: &Global) -> Res {
    let cfg = load(g)?;
    Ok(crate::overview::run(&cfg, g.json))
}
