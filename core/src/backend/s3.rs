//! The S3 backend: the repository's objects in an S3-compatible bucket, through
//! `object_store`.
//!
//! Design: the bucket holds exactly the local layout under `[remote]`'s prefix
//! (`PREFIX/config`, `PREFIX/keys/ID`, `PREFIX/data/XX/ID`, …), so mirroring is copying
//! objects by name and every read command can open the bucket with the same repository
//! code ([`crate::repo::Repository::open_backend`]). `object_store` is async; this backend
//! owns a small tokio runtime and blocks on it, since the repository engine is
//! synchronous. Request-level retries (5xx, 429/SlowDown, timeouts, resets; exponential
//! backoff with jitter) are `object_store`'s, bounded by `[remote] retries` and `timeout`.
//! Uploads ask the server to verify a checksum of every request body (`[remote] checksum`:
//! CRC-64/NVME, or SHA-256 for providers without it). Through this
//! backend the bucket is read-only: objects reach it only through `cairn-upload`, which
//! uses [`S3Remote`] directly.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{Backend, Kind};
use crate::config::{Credentials, RemoteConfig, Secret, UploadChecksum};

/// Errors of the S3 backend's setup.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The credentials could not be read.
    #[error("{0}")]
    Credentials(String),
    /// object_store refused the configuration.
    #[error("cannot set up the S3 client for {location}: {message}")]
    Client {
        /// `s3://bucket/prefix`.
        location: String,
        /// Why.
        message: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the S3 client's runtime: {0}")]
    Runtime(io::Error),
}

/// An access key pair.
#[derive(Clone)]
pub struct AccessKey {
    /// The key id (not secret, shown in messages).
    pub id: String,
    /// The secret.
    pub secret: Secret,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}, <secret>)", self.id)
    }
}

/// Resolve a credentials source to a key pair. [`Credentials::Environment`] reads
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and nothing else of `AWS_*`), and is an
/// error when they are not set — never a silent fall back to instance metadata.
pub fn resolve_credentials(c: &Credentials) -> Result<Option<AccessKey>, S3Error> {
    let (text, what) = match c {
        Credentials::Inline {
            access_key_id,
            secret_access_key,
        } => {
            return Ok(Some(AccessKey {
                id: access_key_id.clone(),
                secret: secret_access_key.clone(),
            }))
        }
        Credentials::Environment => {
            let id = std::env::var("AWS_ACCESS_KEY_ID")
                .ok()
                .filter(|v| !v.is_empty());
            let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
                .ok()
                .filter(|v| !v.is_empty());
            return match (id, secret) {
                (Some(id), Some(secret)) => Ok(Some(AccessKey {
                    id,
                    secret: Secret::new(secret),
                })),
                _ => Err(S3Error::Credentials(
                    "no credentials for the bucket: set [remote] credentials (a file or \
                     credential:NAME), or access_key_id and secret_access_key, or \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
                        .into(),
                )),
            };
        }
        Credentials::File(p) => {
            let what = format!("the credentials file {}", p.display());
            let text = std::fs::read_to_string(p).map_err(|e| {
                S3Error::Credentials(format!("cannot read {what} ({}): {e}", p.display()))
            })?;
            (text, what)
        }
        Credentials::Credential(name) => {
            let (bytes, origin) = crate::credential::read(name).map_err(|e| {
                S3Error::Credentials(format!("credentials = credential:{name}: {e}"))
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                S3Error::Credentials(format!("{origin} is not text (access_key_id = …)"))
            })?;
            (text, origin)
        }
    };
    parse_key_file(&text)
        .map(Some)
        .map_err(|m| S3Error::Credentials(format!("{what}: {m}")))
}

/// `access_key_id = …` and `secret_access_key = …` lines (`#` comments; the AWS names
/// `aws_access_key_id` / `aws_secret_access_key` are accepted too). Messages never show
/// a value.
pub fn parse_key_file(text: &str) -> Result<AccessKey, String> {
    let mut id = None;
    let mut secret = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "access_key_id" | "aws_access_key_id" => id = Some(v),
            "secret_access_key" | "aws_secret_access_key" => secret = Some(v),
            other => return Err(format!("line {}: unknown key `{other}`", n + 1)),
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(AccessKey {
            id,
            secret: Secret::new(secret),
        }),
        _ => Err("needs both `access_key_id = …` and `secret_access_key = …`".to_string()),
    }
}

/// A connection to the bucket: the store, the prefix, a runtime to drive it.
pub struct S3Remote {
    /// The store (object_store's S3 client).
    pub store: Arc<AmazonS3>,
    prefix: String,
    location: String,
    endpoint: String,
    /// The runtime the blocking calls run on.
    pub rt: Arc<tokio::runtime::Runtime>,
}

impl S3Remote {
    /// Connect with `key` (None: the environment's) as `[remote]` says. Nothing is sent
    /// yet; the first request shows whether the bucket and key are right.
    pub fn connect(cfg: &RemoteConfig, key: Option<&AccessKey>) -> Result<S3Remote, S3Error> {
        let location = location_of(cfg);
        // Not from_env(): only what [remote] says, no stray AWS_* variable of the host.
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_checksum_algorithm(match cfg.checksum {
                UploadChecksum::Crc64Nvme => Checksum::CRC64NVME,
                UploadChecksum::Sha256 => Checksum::SHA256,
            })
            // The body's integrity is the signed x-amz-checksum-… header, which the server
            // verifies; signing the payload as well would hash every byte with SHA-256
            // once more, at both ends.
            .with_unsigned_payload(true)
            // One DELETE per object: each refusal (Object Lock) is the answer for that
            // object, not an entry buried in a bulk reply; some providers lack bulk delete.
            .with_disable_bulk_delete(true)
            .with_retry(RetryConfig {
                max_retries: cfg.retries,
                retry_timeout: cfg.timeout * (cfg.retries as u32 + 1),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(cfg.timeout)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_allow_http(
                        cfg.endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = key {
            b = b
                .with_access_key_id(&k.id)
                .with_secret_access_key(k.secret.expose());
        }
        let store = b.build().map_err(|e| S3Error::Client {
            location: location.clone(),
            message: e.to_string(),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cairn-s3")
            .build()
            .map_err(S3Error::Runtime)?;
        Ok(S3Remote {
            store: Arc::new(store),
            prefix: cfg.prefix.clone(),
            location,
            endpoint: cfg
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region)),
            rt: Arc::new(rt),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The key of an object: `PREFIX/DIR/NAME` (`data/XX/NAME` for packs).
    pub fn key(&self, kind: Option<Kind>, name: &str) -> ObjPath {
        let rel = match kind {
            None => name.to_string(),
            Some(Kind::Data) => format!("data/{}/{name}", &name[..2.min(name.len())]),
            Some(k) => format!("{}/{name}", k.dir()),
        };
        self.join(&rel)
    }

    /// `PREFIX/rel`.
    pub fn join(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The directory prefix of a kind, for listing.
    pub fn dir(&self, kind: Kind) -> ObjPath {
        self.join(kind.dir())
    }

    /// Every object of a kind: (name, size, last modified).
    pub async fn list_kind(
        &self,
        kind: Kind,
    ) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>, object_store::Error> {
        let prefix = self.dir(kind);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                super::valid_name(&name).then_some((name, m.size, m.last_modified))
            })
            .collect())
    }

    /// Explain a failed request in one line, with what to do.
    pub fn explain(&self, e: &object_store::Error) -> String {
        explain(e, &self.location, &self.endpoint)
    }
}

/// `s3://bucket/prefix` of a config.
pub fn location_of(cfg: &RemoteConfig) -> String {
    if cfg.prefix.is_empty() {
        format!("s3://{}", cfg.bucket)
    } else {
        format!("s3://{}/{}", cfg.bucket, cfg.prefix)
    }
}

/// The whole error chain as one string (object_store nests the HTTP status and the S3
/// error code deep inside).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The innermost error of the chain ("Connection refused (os error 111)"), or the
/// last part of the message when the chain is flat.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let t = cur.to_string();
    let t = t.rsplit(": ").next().unwrap_or(&t).trim().to_string();
    short(&t)
}

/// One line for a failed request: what the bucket said, and the fix.
pub fn explain(e: &object_store::Error, location: &str, endpoint: &str) -> String {
    let full = chain(e);
    let has = |w: &str| full.contains(w);
    // AWS says InvalidAccessKeyId / SignatureDoesNotMatch; Garage an AccessDenied whose
    // message is "No such key" or "Invalid signature"; others 401.
    let bad_key = has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("No such key")
        || has("Invalid signature")
        || has("InvalidSignature")
        || has("401 Unauthorized")
        || matches!(e, object_store::Error::Unauthenticated { .. });
    if bad_key {
        format!(
            "{location}: the bucket refused the credentials (wrong access key id or secret); \
             check [remote] credentials, or test them with `cairn remote test`"
        )
    } else if has("BadDigest")
        || has("InvalidDigest")
        || has("ChecksumMismatch")
        || has("XAmzContentChecksumMismatch")
    {
        format!(
            "{location}: the server received a body that does not match its checksum \
             (corrupted on the way); nothing was stored under that name"
        )
    } else if (has("checksum") || has("crc64nvme") || has("Checksum"))
        && (has("InvalidArgument") || has("InvalidRequest") || has("NotImplemented"))
    {
        format!(
            "{location}: the server at {endpoint} does not accept the request checksum \
             cairn sends; set `checksum = sha256` in [remote] ({})",
            short(&full)
        )
    } else if has("NoSuchBucket") {
        format!(
            "{location}: the bucket does not exist at {endpoint}; create it, or correct \
             [remote] url (and endpoint/region)"
        )
    } else if has("AccessDenied") || matches!(e, object_store::Error::PermissionDenied { .. }) {
        format!(
            "{location}: access denied: the key may not do this here (bucket policy, key \
             restricted to other buckets or to reading, or Object Lock); check the key's \
             permissions"
        )
    } else if has("error sending request")
        || has("Connection refused")
        || has("dns error")
        || has("tcp connect")
        || has("timed out")
        || has("connection closed")
    {
        format!(
            "cannot reach {endpoint} for {location} ({}); check [remote] endpoint and the \
             network (retries ran out)",
            root_cause(e)
        )
    } else {
        format!("{location}: {}", short(&full))
    }
}

/// An error text cut to something a log line can hold.
fn short(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// The bucket as a repository backend (read-only; see the module doc).
pub struct S3Backend {
    remote: S3Remote,
}

impl S3Backend {
    /// A backend on `remote`.
    pub fn new(remote: S3Remote) -> S3Backend {
        S3Backend { remote }
    }

    /// The connection underneath.
    pub fn remote(&self) -> &S3Remote {
        &self.remote
    }

    fn io_err(&self, e: object_store::Error) -> io::Error {
        let kind = match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.remote.explain(&e))
    }

    fn read_only(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is read-only here: objects reach the bucket only through cairn-upload",
                self.remote.location
            ),
        )
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.remote.location.clone()
    }

    fn read(&self, kind: Option<Kind>, name: &str) -> io::Result<Vec<u8>> {
        super::check_name(name)?;
        let key = self.remote.key(kind, name);
        let store = self.remote.store.clone();
        self.remote
            .rt
            .block_on(async move { store.get(&key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.io_err(e))
    }

    fn read_at(&self, kind: Kind, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        super::check_name(name)?;
        let key = self.remote.key(Some(kind), name);
        let store = self.remote.store.clone();
        let b = self
            .remote
            .rt
            .block_on(async move { store.get_range(&key, offset..offset + len as u64).await })
            .map_err(|e| self.io_err(e))?;
        if b.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: the bucket returned {} of {len} bytes", b.len()),
            ));
        }
        Ok(b.to_vec())
    }

    fn size(&self, kind: Kind, name: &str) -> io::Result<u64> {
        super::check_name(name)?;
        let key = self.remote.key(Some(kind), name);
        let store = self.remote.store.clone();
        self.remote
            .rt
            .block_on(async move { store.head(&key).await })
            .map(|m| m.size)
            .map_err(|e| self.io_err(e))
    }

    fn write(&self, _kind: Option<Kind>, _name: &str, _data: &[u8]) -> io::Result<()> {
        Err(self.read_only())
    }

    fn exists(&self, kind: Option<Kind>, name: &str) -> io::Result<bool> {
        super::check_name(name)?;
        let key = self.remote.key(kind, name);
        let store = self.remote.store.clone();
        match self
            .remote
            .rt
            .block_on(async move { store.head(&key).await })
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io_err(e)),
        }
    }

    fn remove(&self, _kind: Kind, _name: &str) -> io::Result<()> {
        Err(self.read_only())
    }

    fn list(&self, kind: Kind) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .remote
            .rt
            .block_on(self.remote.list_kind(kind))
            .map_err(|e| self.io_err(e))?
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        names.sort();
        Ok(names)
    }

    fn leftovers(&self) -> io::Result<Vec<String>> {
        // S3 has no partial objects: a PUT or a completed multipart upload appears whole.
        Ok(Vec::new())
    }

    fn create_temp(&self, _kind: Kind) -> io::Result<(std::fs::File, PathBuf)> {
        Err(self.read_only())
    }

    fn commit_temp(&self, _kind: Kind, _tmp: &Path, _name: &str) -> io::Result<()> {
        Err(self.read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_hold_both_keys_and_never_echo_a_value() {
        let k = parse_key_file(
            "# cairn upload key\naccess_key_id = GK1234\nsecret_access_key = \"s3cr3t\"\n",
        )
        .unwrap();
        assert_eq!(k.id, "GK1234");
        assert_eq!(k.secret.expose(), "s3cr3t");
        assert!(!format!("{k:?}").contains("s3cr3t"));
        let aws = parse_key_file("[default]\naws_access_key_id=A\naws_secret_access_key=B\n");
        assert_eq!(aws.unwrap().id, "A");
        let e = parse_key_file("access_key_id = A\n").unwrap_err();
        assert!(e.contains("secret_access_key"), "{e}");
        let e = parse_key_file("access_key_id = A\npassword = hunter2\n").unwrap_err();
        assert!(
            e.contains("unknown key `password`") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
