//! `cairn-upload`: mirror the local repository to the `[remote]` bucket, append-only.
//!
//! Design: upload works on the repository's files, never its key — every object but
//! `config` is named by the SHA-256 of its bytes, so the files are checked against their
//! names before they leave and nothing needs decrypting. It compares names (and sizes)
//! with a listing of the bucket and sends only what the bucket lacks, phase by phase in
//! the repository's write order — data packs, then index, then snapshots, then key slots
//! and `config` — each phase finished before the next begins, so the bucket never holds a
//! snapshot whose data is missing. Every request body carries an `x-amz-checksum-sha256`
//! the server verifies, and every reply's ETag is compared with the MD5 computed here
//! (single PUT: MD5 of the body; multipart: MD5 of the parts' MD5s, `-N`). A PUT and a
//! completed multipart upload appear whole or not at all, so no partial object is ever
//! visible under a final name; a multipart upload is recorded in the state directory
//! before its first part goes out and aborted by the next run if this one dies. Requests
//! are retried by `object_store` (backoff with jitter on 5xx, 429/SlowDown, timeouts,
//! resets); a whole object is retried a few more times around that. Deleting is only
//! `--prune`'s, only with `delete_credentials`, only for objects the local repository has
//! dropped and that are older than `prune_grace`, in the reverse order (snapshots first),
//! and a refused delete (Object Lock) is skipped and retried by a later run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backend::s3::{resolve_credentials, S3Remote};
use crate::backend::{Backend, Kind, LocalBackend};
use crate::config::{Config, RemoteConfig};
use crate::stage::{msg, Dirs, Exit, Outcome, Priority, Progress, Run};

/// Command-line arguments of `cairn-upload`.
pub struct UploadArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--dry-run`: list what would be uploaded (and pruned); send nothing.
    pub dry_run: bool,
    /// `--prune`: after uploading, delete what the local repository dropped.
    pub prune: bool,
}

/// The upload phases, in order. `None` is the top-level `config`.
const PHASES: &[Option<Kind>] = &[
    Some(Kind::Data),
    Some(Kind::Index),
    Some(Kind::Snapshots),
    Some(Kind::Keys),
    None,
];

/// A bucket listing of one kind: (name, size, last modified).
type Listing = Vec<(String, u64, chrono::DateTime<chrono::Utc>)>;

/// What one phase uploads: its kind and the (name, size) of each object.
type Phase = (Option<Kind>, Vec<(String, u64)>);

/// How many times a whole object is tried (each try has object_store's own retries).
const OBJECT_ATTEMPTS: u32 = 3;

/// The state file of multipart uploads in flight.
const MULTIPART_STATE: &str = "upload-multipart.json";

/// What one run did, for the status file, the D-Bus signal and `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    /// Objects uploaded, per kind.
    pub uploaded: HashMap<String, u64>,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Objects already in the bucket.
    pub present: u64,
    /// Objects the bucket has and the local repository does not (kept: append-only).
    pub remote_only: u64,
    /// `--prune`: objects deleted from the bucket.
    pub pruned: u64,
    /// `--prune`: objects younger than the grace period, kept for now.
    pub prune_kept_young: u64,
    /// `--prune`: deletes the bucket refused (Object Lock); retried by a later run.
    pub prune_refused: u64,
    /// Stale multipart uploads of an earlier run that were aborted.
    pub aborted_multipart: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Bytes per second over the transfer.
    pub throughput: f64,
}

/// A failure of the run.
struct Fail {
    exit: Exit,
    message: String,
}

fn fail(exit: Exit, message: impl Into<String>) -> Fail {
    Fail {
        exit,
        message: message.into(),
    }
}

/// Run `cairn-upload`; returns the exit code.
pub fn run(args: &UploadArgs) -> i32 {
    let stage = match Run::start("upload", args.dry_run) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return finish_fail(stage, None, fail(Exit::Usage, e.to_string()), args),
    };
    // cairn-snapshot.service starts this unit after every successful backup
    // (OnSuccess=); a host without a bucket simply has nothing to mirror.
    if cfg.remote.is_none() {
        let summary = "no [remote] section: nothing to upload".to_string();
        stage.info(&summary);
        if args.json {
            println!(
                "{}",
                json!({"result": "success", "exit_code": 0, "summary": summary, "dry_run": args.dry_run})
            );
        }
        return stage.finish(Outcome::success(summary));
    }
    let started = Instant::now();
    let mut figures = Figures::default();
    let result = mirror(&cfg, &stage, args, &mut figures);
    figures.seconds = started.elapsed().as_secs_f64();
    if figures.seconds > 0.0 {
        figures.throughput = figures.bytes as f64 / figures.seconds;
    }
    match result {
        Ok(()) => {
            let n: u64 = figures.uploaded.values().sum();
            let summary = format!(
                "{n} objects ({}) {} in {:.1} s ({}/s), {} already there",
                crate::util::human_bytes(figures.bytes),
                if args.dry_run {
                    "to upload"
                } else {
                    "uploaded"
                },
                figures.seconds,
                crate::util::human_bytes(figures.throughput as u64),
                figures.present
            );
            if !args.dry_run {
                stage.event(
                    &msg::UPLOAD_DONE,
                    Priority::Notice,
                    &summary,
                    &[("CAIRN_OBJECTS", &n.to_string())],
                );
            }
            let fig = serde_json::to_value(&figures).unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "result": "success", "exit_code": 0, "summary": summary,
                        "dry_run": args.dry_run, "figures": fig,
                    }))
                    .unwrap_or_default()
                );
            }
            stage.finish(Outcome::success(summary).with_figures(json!({"figures": fig})))
        }
        Err(f) => finish_fail(stage, Some((&cfg, &figures)), f, args),
    }
}

fn finish_fail(stage: Run, ctx: Option<(&Config, &Figures)>, f: Fail, args: &UploadArgs) -> i32 {
    let fig = ctx
        .map(|(_, fg)| serde_json::to_value(fg).unwrap_or_default())
        .unwrap_or_default();
    if f.exit != Exit::Usage {
        // For journal filters and alert rules; at notice, since STAGE_FAILED below is
        // the error line.
        stage.event(&msg::UPLOAD_FAILED, Priority::Notice, &f.message, &[]);
    }
    let exit = f.exit;
    if let (Some((cfg, _)), false) = (ctx, args.dry_run) {
        if let Some(a) = &cfg.alert {
            let host = crate::util::hostname();
            let mail = crate::alert::Alert {
                stage: "upload".into(),
                verdict: "FAILED".into(),
                headline: "the off-site copy is behind".into(),
                body: format!(
                    "cairn-upload on {host} could not mirror the repository to the bucket, so \
                     the off-site copy lacks the latest backups. The next run retries what is \
                     missing.\n\n{}\n",
                    f.message
                ),
                run_id: stage.stage().map(|s| s.run_id().to_string()),
            };
            // Undelivered is logged by alert::send; the exit code is the failure's.
            let _ = crate::alert::send(a, &mail);
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"result": "failure", "exit_code": exit.code(), "error": f.message, "figures": fig})
        );
    }
    // The stage's last line (STAGE_FAILED) carries the message to the operator.
    stage.finish(
        Outcome::failure(exit, "the off-site copy is behind", f.message)
            .with_figures(json!({"figures": fig})),
    )
}

/// Open the bucket with the everyday credentials of `[remote]`.
pub fn connect(r: &RemoteConfig) -> Result<S3Remote, String> {
    let key = resolve_credentials(&r.credentials).map_err(|e| e.to_string())?;
    S3Remote::connect(r, key.as_ref()).map_err(|e| e.to_string())
}

fn mirror(cfg: &Config, stage: &Run, args: &UploadArgs, fig: &mut Figures) -> Result<(), Fail> {
    let rcfg = cfg
        .repository()
        .map_err(|e| fail(Exit::Usage, e.to_string()))?;
    let remote_cfg = cfg.remote().map_err(|e| fail(Exit::Usage, e.to_string()))?;
    let delete_key =
        if args.prune {
            match &remote_cfg.delete_credentials {
                None => return Err(fail(
                    Exit::Usage,
                    "--prune deletes only with [remote] delete_credentials, which are not set; \
                     add `delete_credentials = /etc/cairn/s3-delete.cred` (a key allowed to \
                     delete), or run without --prune",
                )),
                Some(c) => Some(
                    resolve_credentials(c).map_err(|e| fail(Exit::Environment, e.to_string()))?,
                ),
            }
        } else {
            None
        };
    let local = LocalBackend::new(&rcfg.path);
    if !rcfg.path.join("config").is_file() {
        return Err(fail(
            Exit::Environment,
            format!(
                "no repository at {}: nothing to upload (run `cairn init`, or check [repository] \
                 path; is the backup disk mounted?)",
                rcfg.path.display()
            ),
        ));
    }
    let remote = connect(remote_cfg).map_err(|m| fail(Exit::Environment, m))?;
    // The delete connection is made here, outside the async block: its runtime must not
    // be dropped inside another.
    let deleter = match &delete_key {
        Some(key) => Some(
            S3Remote::connect(remote_cfg, key.as_ref())
                .map_err(|e| fail(Exit::Environment, e.to_string()))?,
        ),
        None => None,
    };
    let dirs = Dirs::from_env();
    // A shared lock keeps `cairn prune` (exclusive) from deleting packs while they are
    // listed and sent. The lock file is the only thing upload writes into the repository;
    // where its sandbox cannot, it goes on without and says so (listing snapshots before
    // data, below, keeps a concurrent backup from reaching the bucket out of order).
    let _lock = if args.dry_run {
        None
    } else {
        let backend = std::sync::Arc::new(LocalBackend::new(&rcfg.path));
        match crate::repo::lock::acquire(backend, false, "cairn-upload") {
            Ok(a) => Some(a.lock),
            Err(crate::repo::lock::LockError::Conflict(m)) => {
                return Err(fail(
                    Exit::Environment,
                    format!("{m}; the next run uploads"),
                ))
            }
            Err(crate::repo::lock::LockError::Io(e)) => {
                stage.warn(&format!(
                    "cannot take a shared lock on {} ({e}): a prune running now could race",
                    rcfg.path.display()
                ));
                None
            }
        }
    };
    stage.ready();
    stage.status(&format!("listing {}", remote.location()));

    let rt = remote.rt.clone();
    rt.block_on(async {
        // A multipart upload a killed run left open: abort it (it holds storage, and it
        // can never be completed by anyone but us).
        fig.aborted_multipart = abort_stale_multipart(&remote, &dirs, stage, args.dry_run).await;
        same_repository(&remote, &local, &rcfg.path).await?;
        let limiter = remote_cfg
            .bandwidth_limit
            .map(|b| Arc::new(TokenBucket::new(b, remote_cfg.part_size)));
        // Listings first: what is there, what is missing.
        let mut plan: Vec<Phase> = Vec::new();
        let mut remote_names: HashMap<Kind, Listing> = HashMap::new();
        let mut total = 0u64;
        // The local listing in reverse write order: a snapshot written meanwhile is
        // either not listed, or listed with its index and packs already on disk.
        let mut local_lists: HashMap<Option<Kind>, Vec<String>> = HashMap::new();
        for phase in PHASES.iter().rev() {
            let names = match phase {
                Some(k) => local.list(*k).map_err(|e| {
                    fail(
                        Exit::Environment,
                        format!("cannot list {}: {e}", rcfg.path.join(k.dir()).display()),
                    )
                })?,
                None => vec!["config".to_string()],
            };
            local_lists.insert(*phase, names);
        }
        for phase in PHASES {
            let local_names = local_lists.remove(phase).unwrap_or_default();
            let there: HashMap<String, u64> = match phase {
                Some(k) => {
                    let l = remote
                        .list_kind(*k)
                        .await
                        .map_err(|e| fail(Exit::Failed, remote.explain(&e)))?;
                    let m = l.iter().map(|(n, s, _)| (n.clone(), *s)).collect();
                    remote_names.insert(*k, l);
                    m
                }
                None => match remote.store.head(&remote.key(None, "config")).await {
                    Ok(m) => [("config".to_string(), m.size)].into(),
                    Err(object_store::Error::NotFound { .. }) => HashMap::new(),
                    Err(e) => return Err(fail(Exit::Failed, remote.explain(&e))),
                },
            };
            let local_set: HashSet<&String> = local_names.iter().collect();
            fig.remote_only += there.keys().filter(|n| !local_set.contains(n)).count() as u64;
            let mut todo = Vec::new();
            for name in &local_names {
                let size = std::fs::metadata(local_path(&rcfg.path, *phase, name))
                    .map(|m| m.len())
                    .map_err(|e| fail(Exit::Environment, format!("{name}: {e}")))?;
                match there.get(name) {
                    Some(s) if *s == size => fig.present += 1,
                    Some(s) => {
                        stage.warn(&format!(
                            "{}: {s} bytes in the bucket, {size} here: uploaded again",
                            remote.key(*phase, name)
                        ));
                        todo.push((name.clone(), size));
                    }
                    None => todo.push((name.clone(), size)),
                }
            }
            total += todo.iter().map(|(_, s)| s).sum::<u64>();
            plan.push((*phase, todo));
        }
        // When did the local repository drop each object the bucket still has? The grace
        // period of --prune counts from then, not from the upload.
        let dropped = if args.dry_run {
            read_dropped(&dirs)
        } else {
            update_dropped(&dirs, &local, &remote_names)
        };
        let count: usize = plan.iter().map(|(_, t)| t.len()).sum();
        stage.info(&format!(
            "{count} objects ({}) to upload to {}; {} already there",
            crate::util::human_bytes(total),
            remote.location(),
            fig.present
        ));
        let progress = match stage {
            Run::Real(s) => s.progress(Some(total), "uploading"),
            Run::DryRun => Progress::hidden(),
        };
        let sent = Arc::new(AtomicU64::new(0));
        for (phase, todo) in &plan {
            let label = phase.map_or("config", |k| k.dir());
            if todo.is_empty() {
                continue;
            }
            if args.dry_run {
                for (name, size) in todo {
                    stage.info(&format!(
                        "would upload {} ({size} bytes)",
                        remote.key(*phase, name)
                    ));
                }
                *fig.uploaded.entry(label.to_string()).or_default() += todo.len() as u64;
                fig.bytes += todo.iter().map(|(_, s)| s).sum::<u64>();
                continue;
            }
            stage.status(&format!("uploading {} {label} objects", todo.len()));
            let ctx = Ctx {
                remote: &remote,
                repo: &rcfg.path,
                dirs: &dirs,
                part_size: remote_cfg.part_size,
                limiter: limiter.clone(),
                progress: &progress,
                sent: sent.clone(),
                stage,
            };
            let results: Vec<Result<(), String>> = futures::stream::iter(todo.iter())
                .map(|(name, _)| ctx.upload_object(*phase, name))
                .buffer_unordered(remote_cfg.concurrency)
                .collect()
                .await;
            let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
            *fig.uploaded.entry(label.to_string()).or_default() += ok;
            fig.bytes = sent.load(Ordering::Relaxed);
            let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            if let Some(first) = errors.first() {
                progress.finish();
                return Err(fail(
                    Exit::Failed,
                    format!(
                        "{} of {} {label} objects could not be uploaded (later phases not \
                         started, so the bucket holds no snapshot without its data); first: \
                         {first}",
                        errors.len(),
                        todo.len(),
                    ),
                ));
            }
        }
        progress.finish();
        fig.bytes = if args.dry_run {
            fig.bytes
        } else {
            sent.load(Ordering::Relaxed)
        };
        if let Some(deleter) = &deleter {
            prune(
                remote_cfg,
                deleter,
                &dropped,
                &local,
                &remote_names,
                stage,
                args.dry_run,
                fig,
            )
            .await?;
        }
        Ok(())
    })
}

/// The bucket must hold this repository or none: a different `config` there means the
/// URL points at another repository, and mixing them would corrupt both.
async fn same_repository(
    remote: &S3Remote,
    _local: &LocalBackend,
    repo: &Path,
) -> Result<(), Fail> {
    let mine = std::fs::read(repo.join("config")).map_err(|e| {
        fail(
            Exit::Environment,
            format!("cannot read {}: {e}", repo.join("config").display()),
        )
    })?;
    match remote.store.get(&remote.key(None, "config")).await {
        Ok(r) => {
            let theirs = r
                .bytes()
                .await
                .map_err(|e| fail(Exit::Failed, remote.explain(&e)))?;
            if theirs.as_ref() != mine.as_slice() {
                return Err(fail(
                    Exit::Failed,
                    format!(
                        "{} already holds a different repository (its config differs from {}); \
                         point [remote] url at an empty prefix of its own",
                        remote.location(),
                        repo.join("config").display()
                    ),
                ));
            }
            Ok(())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(fail(Exit::Failed, remote.explain(&e))),
    }
}

fn local_path(repo: &Path, kind: Option<Kind>, name: &str) -> PathBuf {
    match kind {
        None => repo.join(name),
        Some(Kind::Data) => repo
            .join("data")
            .join(&name[..2.min(name.len())])
            .join(name),
        Some(k) => repo.join(k.dir()).join(name),
    }
}

struct Ctx<'a> {
    remote: &'a S3Remote,
    repo: &'a Path,
    dirs: &'a Dirs,
    part_size: u64,
    limiter: Option<Arc<TokenBucket>>,
    progress: &'a Progress,
    sent: Arc<AtomicU64>,
    stage: &'a Run,
}

impl Ctx<'_> {
    /// Upload one object, retrying the whole of it a few times.
    async fn upload_object(&self, kind: Option<Kind>, name: &str) -> Result<(), String> {
        let path = local_path(self.repo, kind, name);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Hash on the blocking pool, not on the runtime's two workers, which meanwhile keep
        // the other objects' requests moving: the SHA-256 name check, and the MD5 the
        // bucket's ETag must equal (of the body, or of the parts' MD5s, `-N`).
        let part_size = self.part_size;
        let want = name.to_string();
        let (data, named_right, etag) = tokio::task::spawn_blocking(move || {
            // Every object but config is named by the SHA-256 of its bytes: a local file
            // that does not match is damaged and must not become the off-site copy.
            let named_right = kind.is_none() || hex::encode(crate::crypto::sha256(&data)) == want;
            let etag = expected_etag(&data, part_size);
            (data, named_right, etag)
        })
        .await
        .map_err(|e| format!("hashing {name}: {e}"))?;
        if !named_right {
            return Err(format!(
                "{} does not match its name (damaged on the backup disk?); not uploaded — run \
                 `cairn check`",
                path.display()
            ));
        }
        let data = Bytes::from(data);
        let key = self.remote.key(kind, name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = if data.len() as u64 > self.part_size {
                self.multipart(&key, &data, &etag).await
            } else {
                self.single(&key, &data, &etag).await
            };
            match r {
                Ok(()) => {
                    self.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if attempt >= OBJECT_ATTEMPTS || e.permanent => {
                    return Err(format!("{key}: {}", e.message))
                }
                Err(e) => {
                    self.stage.warn(&format!(
                        "{key}: {} (try {attempt} of {OBJECT_ATTEMPTS}; trying again)",
                        e.message
                    ));
                    tokio::time::sleep(jitter(Duration::from_secs(1 << attempt))).await;
                }
            }
        }
    }

    async fn throttle(&self, n: u64) {
        if let Some(l) = &self.limiter {
            l.take(n).await;
        }
    }

    async fn single(
        &self,
        key: &object_store::path::Path,
        data: &Bytes,
        etag: &str,
    ) -> Result<(), UpErr> {
        self.throttle(data.len() as u64).await;
        let r = self
            .remote
            .store
            .put(key, PutPayload::from_bytes(data.clone()))
            .await
            .map_err(|e| UpErr::of(self.remote, &e))?;
        self.progress.inc(data.len() as u64);
        check_etag(r.e_tag.as_deref(), etag, "")
    }

    async fn multipart(
        &self,
        key: &object_store::path::Path,
        data: &Bytes,
        etag: &str,
    ) -> Result<(), UpErr> {
        let store = &self.remote.store;
        let id = store
            .create_multipart(key)
            .await
            .map_err(|e| UpErr::of(self.remote, &e))?;
        record_multipart(self.dirs, key.as_ref(), &id, true);
        let mut parts: Vec<PartId> = Vec::new();
        let mut result = Ok(());
        for (i, chunk) in data.chunks(self.part_size as usize).enumerate() {
            self.throttle(chunk.len() as u64).await;
            let part = data.slice_ref(chunk);
            match store
                .put_part(key, &id, i, PutPayload::from_bytes(part))
                .await
            {
                Ok(p) => {
                    self.progress.inc(chunk.len() as u64);
                    parts.push(p);
                }
                Err(e) => {
                    result = Err(UpErr::of(self.remote, &e));
                    break;
                }
            }
        }
        if result.is_ok() {
            match store.complete_multipart(key, &id, parts.clone()).await {
                Ok(r) => {
                    record_multipart(self.dirs, key.as_ref(), &id, false);
                    return check_etag(r.e_tag.as_deref(), etag, "multipart ");
                }
                Err(e) => result = Err(UpErr::of(self.remote, &e)),
            }
        }
        // Do not leave the parts behind.
        let _ = store.abort_multipart(key, &id).await;
        record_multipart(self.dirs, key.as_ref(), &id, false);
        result
    }
}

/// A failed object upload.
struct UpErr {
    message: String,
    /// Retrying cannot help (credentials, permissions, a missing bucket).
    permanent: bool,
}

impl UpErr {
    fn of(remote: &S3Remote, e: &object_store::Error) -> UpErr {
        let message = remote.explain(e);
        let permanent = message.contains("refused the credentials")
            || message.contains("does not exist")
            || message.contains("access denied");
        UpErr { message, permanent }
    }
}

fn check_etag(got: Option<&str>, want: &str, what: &str) -> Result<(), UpErr> {
    let Some(got) = got else {
        return Ok(()); // No ETag: the request checksum is the server's verification.
    };
    let got = got.trim_matches('"').to_ascii_lowercase();
    // Servers that do not use MD5 ETags (SSE-KMS, some providers) give other shapes; only
    // an MD5-shaped ETag that differs is a mismatch.
    let md5_shaped = got.len() >= 32 && got[..32].bytes().all(|b| b.is_ascii_hexdigit());
    if md5_shaped && got != want {
        return Err(UpErr {
            message: format!("the bucket's {what}ETag {got} does not match the data sent ({want})"),
            permanent: false,
        });
    }
    Ok(())
}

/// The ETag an S3 server gives `data` uploaded with `part_size`: the MD5 of the body for a
/// single PUT; for multipart, the MD5 of the parts' MD5s and `-N`.
fn expected_etag(data: &[u8], part_size: u64) -> String {
    if data.len() as u64 <= part_size {
        return md5_hex(data);
    }
    let chunks = data.chunks(part_size as usize);
    let n = chunks.len();
    let md5s: Vec<u8> = chunks.flat_map(md5).collect();
    format!("{}-{n}", md5_hex(&md5s))
}

fn md5(data: &[u8]) -> [u8; 16] {
    let d = openssl::hash::hash(openssl::hash::MessageDigest::md5(), data).expect("md5");
    let mut out = [0u8; 16];
    out.copy_from_slice(&d);
    out
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5(data))
}

fn jitter(d: Duration) -> Duration {
    let r: [u8; 2] = crate::crypto::random_bytes();
    let f = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
    d.mul_f64(f)
}

/// A multipart upload in flight, as recorded in the state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct OpenUpload {
    key: String,
    id: String,
}

fn multipart_state(dirs: &Dirs) -> PathBuf {
    dirs.state.join(MULTIPART_STATE)
}

fn read_multipart(dirs: &Dirs) -> Vec<OpenUpload> {
    std::fs::read(multipart_state(dirs))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Add (`open`) or remove an upload id in the state file, atomically. Best effort: a
/// state directory that cannot be written only means a killed run's parts linger until
/// the bucket's lifecycle rule removes them.
fn record_multipart(dirs: &Dirs, key: &str, id: &str, open: bool) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut v = read_multipart(dirs);
    let entry = OpenUpload {
        key: key.to_string(),
        id: id.to_string(),
    };
    v.retain(|u| u != &entry);
    if open {
        v.push(entry);
    }
    let _ = std::fs::create_dir_all(&dirs.state);
    let _ = crate::atomic::write_atomic(
        &multipart_state(dirs),
        serde_json::to_string(&v).unwrap_or_default().as_bytes(),
        0o600,
    );
}

async fn abort_stale_multipart(remote: &S3Remote, dirs: &Dirs, stage: &Run, dry_run: bool) -> u64 {
    let stale = read_multipart(dirs);
    let mut n = 0;
    for u in stale {
        if dry_run {
            stage.info(&format!(
                "would abort the unfinished multipart upload of {}",
                u.key
            ));
            continue;
        }
        let key = object_store::path::Path::from(u.key.as_str());
        match remote.store.abort_multipart(&key, &u.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                stage.info(&format!(
                    "aborted the unfinished multipart upload of {} left by an interrupted run",
                    u.key
                ));
                n += 1;
                record_multipart(dirs, &u.key, &u.id, false);
            }
            Err(e) => stage.warn(&format!(
                "cannot abort the unfinished multipart upload of {}: {} (tried again next run)",
                u.key,
                remote.explain(&e)
            )),
        }
    }
    n
}

/// `--prune`: delete, with the delete credentials, what the bucket has and the local
/// repository dropped, if older than the grace period; snapshots first, data last.
#[allow(clippy::too_many_arguments)]
async fn prune(
    cfg: &RemoteConfig,
    deleter: &S3Remote,
    dropped: &HashMap<String, chrono::DateTime<chrono::Utc>>,
    local: &LocalBackend,
    remote_names: &HashMap<Kind, Listing>,
    stage: &Run,
    dry_run: bool,
    fig: &mut Figures,
) -> Result<(), Fail> {
    let now = chrono::Utc::now();
    let grace = chrono::Duration::from_std(cfg.prune_grace).unwrap_or(chrono::Duration::MAX);
    // Snapshots and index first; if any of them stays in the bucket this run (too young,
    // or refused), the packs stay too, since a snapshot kept there may still need them.
    let mut kept_upstream = false;
    for kind in [Kind::Snapshots, Kind::Index, Kind::Data, Kind::Keys] {
        let have: HashSet<String> = local
            .list(kind)
            .map_err(|e| fail(Exit::Environment, e.to_string()))?
            .into_iter()
            .collect();
        let before = (fig.prune_kept_young, fig.prune_refused);
        for (name, _, modified) in remote_names.get(&kind).into_iter().flatten() {
            if have.contains(name) {
                continue;
            }
            let since = dropped
                .get(&format!("{}/{name}", kind.dir()))
                .copied()
                .unwrap_or(now)
                .max(*modified);
            if now.signed_duration_since(since) < grace {
                fig.prune_kept_young += 1;
                continue;
            }
            if kind == Kind::Data && kept_upstream {
                fig.prune_kept_young += 1;
                continue;
            }
            let k = deleter.key(Some(kind), name);
            if dry_run {
                stage.info(&format!("would delete {k}"));
                fig.pruned += 1;
                continue;
            }
            match deleter.store.delete(&k).await {
                Ok(()) => fig.pruned += 1,
                Err(e) => {
                    let m = deleter.explain(&e);
                    if m.contains("access denied") {
                        // Object Lock (or a policy): leave it, a later run tries again.
                        fig.prune_refused += 1;
                        stage.info(&format!("{k}: the bucket refused to delete it ({m}); kept"));
                    } else {
                        return Err(fail(Exit::Failed, format!("cannot delete {k}: {m}")));
                    }
                }
            }
        }
        if matches!(kind, Kind::Snapshots | Kind::Index)
            && (fig.prune_kept_young, fig.prune_refused) != before
        {
            kept_upstream = true;
        }
    }
    stage.info(&format!(
        "prune: {} deleted, {} younger than {} kept, {} refused by the bucket",
        fig.pruned,
        fig.prune_kept_young,
        crate::util::human_duration(cfg.prune_grace),
        fig.prune_refused
    ));
    Ok(())
}

/// The record of objects the bucket has and the local repository dropped, each with when
/// that was first seen: `$STATE_DIRECTORY/upload-dropped.json`, `{"data/ID": time, …}`.
const DROPPED_STATE: &str = "upload-dropped.json";

fn read_dropped(dirs: &Dirs) -> HashMap<String, chrono::DateTime<chrono::Utc>> {
    std::fs::read(dirs.state.join(DROPPED_STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Add what the bucket has and the local repository does not (first seen now), forget
/// what is gone from the bucket or back locally, and save; returns the record.
fn update_dropped(
    dirs: &Dirs,
    local: &LocalBackend,
    remote: &HashMap<Kind, Listing>,
) -> HashMap<String, chrono::DateTime<chrono::Utc>> {
    let old = read_dropped(dirs);
    let now = chrono::Utc::now();
    let mut new = HashMap::new();
    for (kind, listing) in remote {
        let have: HashSet<String> = local.list(*kind).unwrap_or_default().into_iter().collect();
        for (name, _, _) in listing {
            if !have.contains(name) {
                let k = format!("{}/{name}", kind.dir());
                let t = old.get(&k).copied().unwrap_or(now);
                new.insert(k, t);
            }
        }
    }
    if new != old {
        let _ = std::fs::create_dir_all(&dirs.state);
        let _ = crate::atomic::write_atomic(
            &dirs.state.join(DROPPED_STATE),
            serde_json::to_string(&new).unwrap_or_default().as_bytes(),
            0o600,
        );
    }
    new
}

/// A token bucket shared by all transfers: `rate` bytes per second on average, bursts up
/// to `burst`. A transfer larger than the bucket takes it into debt and the next ones wait.
struct TokenBucket {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64) -> TokenBucket {
        let burst = (burst as f64).min(rate as f64).max(64.0 * 1024.0);
        TokenBucket {
            rate: rate as f64,
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now())),
        }
    }

    async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - n as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_etag_is_the_md5_or_the_md5_of_the_parts_md5s() {
        let data: Vec<u8> = (0..(12u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
        assert_eq!(expected_etag(&data, 64 << 20), md5_hex(&data));
        assert_eq!(expected_etag(&data, data.len() as u64), md5_hex(&data));
        let p = 5 << 20;
        let mut md5s = md5(&data[..p]).to_vec();
        md5s.extend(md5(&data[p..2 * p]));
        md5s.extend(md5(&data[2 * p..]));
        assert_eq!(
            expected_etag(&data, p as u64),
            format!("{}-3", md5_hex(&md5s))
        );
    }

    #[test]
    fn etags_are_compared_only_when_they_are_md5s() {
        let data = b"hello";
        let want = md5_hex(data);
        assert!(check_etag(Some(&format!("\"{want}\"")), &want, "").is_ok());
        assert!(check_etag(Some("\"00000000000000000000000000000000\""), &want, "").is_err());
        assert!(check_etag(Some("opaque-etag"), &want, "").is_ok());
        assert!(check_etag(None, &want, "").is_ok());
    }

    #[test]
    fn the_token_bucket_holds_the_average_rate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = TokenBucket::new(1 << 20, 1 << 20);
            let t = Instant::now();
            for _ in 0..3 {
                b.take(1 << 20).await;
            }
            // 3 MiB at 1 MiB/s with a 1 MiB burst: at least 2 s.
            let e = t.elapsed();
            assert!(e >= Duration::from_millis(1900), "{e:?}");
            assert!(e < Duration::from_secs(4), "{e:?}");
        });
    }

    #[test]
    fn multipart_records_survive_and_clear() {
        let d = tempfile::tempdir().unwrap();
        let dirs = Dirs::under(d.path());
        record_multipart(&dirs, "p/data/ab/ab12", "id-1", true);
        record_multipart(&dirs, "p/data/cd/cd34", "id-2", true);
        assert_eq!(read_multipart(&dirs).len(), 2);
        record_multipart(&dirs, "p/data/ab/ab12", "id-1", false);
        assert_eq!(
            read_multipart(&dirs),
            vec![OpenUpload {
                key: "p/data/cd/cd34".into(),
                id: "id-2".into()
            }]
        );
    }
}

/// One step of `cairn remote test`.
#[derive(Debug, Serialize)]
pub struct TestStep {
    /// `credentials`, `bucket`, `put`, `get`, `delete`.
    pub step: &'static str,
    /// Whether it worked.
    pub ok: bool,
    /// What happened, or what is wrong and what to do.
    pub detail: String,
}

/// `cairn remote test`: the credentials and the bucket, step by step — list the prefix
/// (the bucket exists and the key may read it), then put, get and delete a small probe
/// object. An upload key that may not delete is fine (append-only); the probe is then
/// deleted with `delete_credentials` if they are set. Returns the steps; all must be ok.
pub fn remote_test(cfg: &RemoteConfig) -> Vec<TestStep> {
    let mut steps = Vec::new();
    let mut add = |step, ok, detail: String| {
        steps.push(TestStep { step, ok, detail });
        ok
    };
    let remote = match connect(cfg) {
        Ok(r) => r,
        Err(e) => {
            add("credentials", false, e);
            return steps;
        }
    };
    add(
        "credentials",
        true,
        match &cfg.credentials {
            crate::config::Credentials::Environment => {
                "from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".to_string()
            }
            crate::config::Credentials::Inline { access_key_id, .. } => {
                format!("access key {access_key_id} from the configuration")
            }
            crate::config::Credentials::File(p) => format!("read from {}", p.display()),
            crate::config::Credentials::Credential(n) => format!("systemd credential {n}"),
        },
    );
    let rt = remote.rt.clone();
    let undeleted = rt.block_on(async {
        let prefix = remote.join("");
        let mut list = remote.store.list(Some(&prefix));
        let listed = match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
        };
        drop(list);
        let ok = match listed {
            Ok(()) => add(
                "bucket",
                true,
                format!("{} is there and may be listed at {}", remote.location(), remote.endpoint()),
            ),
            Err(e) => add("bucket", false, remote.explain(&e)),
        };
        if !ok {
            return None;
        }
        let id: [u8; 8] = crate::crypto::random_bytes();
        let key = remote.join(&format!("cairn-probe-{}", hex::encode(id)));
        let body: [u8; 32] = crate::crypto::random_bytes();
        let body = Bytes::copy_from_slice(&body);
        if let Err(e) = remote.store.put(&key, PutPayload::from_bytes(body.clone())).await {
            add("put", false, remote.explain(&e));
            return None;
        }
        add("put", true, format!("wrote {key}"));
        match remote.store.get(&key).await {
            Ok(r) => match r.bytes().await {
                Ok(b) if b == body => add("get", true, "read it back, byte for byte".into()),
                Ok(_) => add("get", false, format!("{key} came back with other bytes than were written: the endpoint or a proxy changes data")),
                Err(e) => add("get", false, remote.explain(&e)),
            },
            Err(e) => add("get", false, remote.explain(&e)),
        };
        match remote.store.delete(&key).await {
            Ok(()) => {
                add("delete", true, "deleted the probe (this key may delete: for an append-only setup give cairn-upload a key that cannot, and use delete_credentials for --prune)".into());
                None
            }
            Err(e) => Some((key, remote.explain(&e))),
        }
    });
    // The upload key may not delete: the probe goes with delete_credentials, through a
    // connection of its own (its runtime is made and dropped out here, never inside
    // another's async context).
    if let Some((key, why)) = undeleted {
        let with_delete = cfg.delete_credentials.as_ref().map(|c| {
            resolve_credentials(c)
                .map_err(|e| e.to_string())
                .and_then(|k| S3Remote::connect(cfg, k.as_ref()).map_err(|e| e.to_string()))
        });
        match with_delete {
            Some(Ok(d)) => match d.rt.block_on(d.store.delete(&key)) {
                Ok(()) => add("delete", true, format!("the upload key may not delete ({why}): append-only, as it should be; deleted the probe with delete_credentials")),
                Err(e2) => add("delete", false, format!("the upload key may not delete, and delete_credentials failed too: {}; remove {key} by hand", d.explain(&e2))),
            },
            Some(Err(m)) => add("delete", false, format!("the upload key may not delete; delete_credentials: {m}")),
            None => add("delete", true, format!("the upload key may not delete ({why}): append-only; the probe {key} stays (set delete_credentials to remove such objects)")),
        };
    }
    steps
}
