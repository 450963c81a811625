//! `[remote]`: the S3-compatible bucket the repository is mirrored to.
//!
//! Design: one `url = s3://bucket/prefix` names the place; how to reach it (endpoint,
//! region, path-style addressing) is either written out or filled in by a `preset` for a
//! known provider, whose endpoint template takes the `region` (and, for R2, the
//! `account`). Explicit keys always win over a preset. Credentials come from one of three
//! places, checked here for exclusivity so that a host never silently uses a key it was
//! not meant to: `access_key_id` + `secret_access_key` (literal or `${ENV}`), or
//! `credentials = PATH` / `credentials = credential:NAME` (a small file, or a systemd
//! credential in `$CREDENTIALS_DIRECTORY`, holding both), or else the environment
//! (`AWS_ACCESS_KEY_ID` …) at run time. `delete_credentials` takes the same two file forms
//! and is the only key `cairn-upload --prune` deletes with.

use std::path::PathBuf;
use std::time::Duration;

use super::value::{parse_duration, parse_size};
use super::{ConfigError, KeySpec, Secret, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "remote",
    instances: false,
    keys: &[
        KeySpec::plain("url"),
        KeySpec::plain("preset"),
        KeySpec::plain("endpoint"),
        KeySpec::plain("region"),
        KeySpec::plain("account"),
        KeySpec::plain("path_style"),
        KeySpec::plain("access_key_id"),
        KeySpec::secret("secret_access_key"),
        KeySpec::plain("credentials"),
        KeySpec::plain("delete_credentials"),
        KeySpec::plain("bandwidth_limit"),
        KeySpec::plain("concurrency"),
        KeySpec::plain("part_size"),
        KeySpec::plain("checksum"),
        KeySpec::plain("retries"),
        KeySpec::plain("timeout"),
        KeySpec::plain("prune_grace"),
    ],
    example: "[remote]\nurl = s3://my-backups/db1\npreset = b2\nregion = eu-central-003\n\
              credentials = credential:cairn-s3\n",
};

/// Providers whose endpoint and addressing a preset fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Amazon S3.
    Aws,
    /// Cloudflare R2 (needs `account`).
    R2,
    /// Backblaze B2.
    B2,
    /// Wasabi.
    Wasabi,
    /// OVHcloud Object Storage.
    Ovh,
    /// Scaleway Object Storage.
    Scaleway,
    /// DigitalOcean Spaces.
    DigitalOcean,
    /// MinIO (self-hosted: `endpoint` required).
    Minio,
    /// Garage (self-hosted: `endpoint` required).
    Garage,
}

/// Every preset with its config word, for messages and the man page.
pub const PRESETS: &[(&str, Preset)] = &[
    ("aws", Preset::Aws),
    ("r2", Preset::R2),
    ("b2", Preset::B2),
    ("wasabi", Preset::Wasabi),
    ("ovh", Preset::Ovh),
    ("scaleway", Preset::Scaleway),
    ("digitalocean", Preset::DigitalOcean),
    ("minio", Preset::Minio),
    ("garage", Preset::Garage),
];

impl Preset {
    /// The config word.
    pub fn word(self) -> &'static str {
        PRESETS.iter().find(|(_, p)| *p == self).unwrap().0
    }

    /// The endpoint for `region` (and `account`); None: the operator must give one.
    fn endpoint(self, region: &str, account: Option<&str>) -> Option<String> {
        Some(match self {
            Preset::Aws => format!("https://s3.{region}.amazonaws.com"),
            Preset::R2 => format!("https://{}.r2.cloudflarestorage.com", account?),
            Preset::B2 => format!("https://s3.{region}.backblazeb2.com"),
            Preset::Wasabi => format!("https://s3.{region}.wasabisys.com"),
            Preset::Ovh => format!("https://s3.{region}.io.cloud.ovh.net"),
            Preset::Scaleway => format!("https://s3.{region}.scw.cloud"),
            Preset::DigitalOcean => format!("https://{region}.digitaloceanspaces.com"),
            Preset::Minio | Preset::Garage => return None,
        })
    }

    /// The region when none is configured, if the provider has a usual one.
    fn default_region(self) -> Option<&'static str> {
        match self {
            Preset::R2 => Some("auto"),
            Preset::Minio => Some("us-east-1"),
            Preset::Garage => Some("garage"),
            _ => None,
        }
    }

    /// The request checksum the provider is known to verify: CRC64-NVME where it is
    /// supported (cheap for both ends), SHA-256 elsewhere (every S3 implementation with
    /// additional checksums has it).
    fn checksum(self) -> UploadChecksum {
        match self {
            Preset::Aws | Preset::Minio | Preset::Garage => UploadChecksum::Crc64Nvme,
            _ => UploadChecksum::Sha256,
        }
    }

    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted.
    fn path_style(self) -> bool {
        matches!(self, Preset::Minio | Preset::Garage | Preset::R2)
    }
}

/// The checksum every upload request carries (`x-amz-checksum-…`), which the server
/// verifies against the body before it stores the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadChecksum {
    /// CRC-64/NVME (`checksum = crc64nvme`).
    Crc64Nvme,
    /// SHA-256 (`checksum = sha256`).
    Sha256,
}

/// Every checksum with its config word.
pub const CHECKSUMS: &[(&str, UploadChecksum)] = &[
    ("crc64nvme", UploadChecksum::Crc64Nvme),
    ("sha256", UploadChecksum::Sha256),
];

impl UploadChecksum {
    /// The config word.
    pub fn word(self) -> &'static str {
        CHECKSUMS.iter().find(|(_, c)| *c == self).unwrap().0
    }
}

/// Where the access keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `access_key_id` and `secret_access_key` in the config (perhaps `${ENV}`).
    Inline {
        /// The key id.
        access_key_id: String,
        /// The secret.
        secret_access_key: Secret,
    },
    /// A file holding `access_key_id = …` and `secret_access_key = …`.
    File(PathBuf),
    /// A systemd credential of that name (`$CREDENTIALS_DIRECTORY/NAME`), same format.
    Credential(String),
    /// The process environment at run time (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    Environment,
}

/// `[remote]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside it, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The preset, if one was named.
    pub preset: Option<Preset>,
    /// The endpoint URL (`https://…`, `http://` only for local servers); None: AWS's.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// The everyday (upload) credentials; [`Credentials::Environment`] when none are set.
    pub credentials: Credentials,
    /// The credentials `--prune` deletes with; None: `--prune` refuses to delete.
    pub delete_credentials: Option<Credentials>,
    /// Bytes per second, all transfers together; None: unlimited.
    pub bandwidth_limit: Option<u64>,
    /// Transfers in flight.
    pub concurrency: usize,
    /// Multipart part size (and the size from which an object goes multipart).
    pub part_size: u64,
    /// The request checksum the server verifies each body with.
    pub checksum: UploadChecksum,
    /// Retries of one request before it fails.
    pub retries: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// `--prune` deletes only objects at least this old in the bucket.
    pub prune_grace: Duration,
}

/// The default number of transfers in flight.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The default part size: above the default pack size (32 MiB), so that packs go up as
/// single PUTs and only unusually large objects as multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// The default retries per request.
pub const DEFAULT_RETRIES: usize = 8;
/// The default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default prune grace period.
pub const DEFAULT_PRUNE_GRACE: Duration = Duration::from_secs(7 * 86400);

pub(crate) fn parse(s: &Section<'_>) -> Result<RemoteConfig, ConfigError> {
    let url = s.scalar("url")?;
    let url = s.required("url", url, "url = s3://my-backups/db1")?;
    let (bucket, prefix) = parse_url(&url).map_err(|m| s.invalid("url", m))?;
    let preset = s.parsed("preset", |v| {
        PRESETS
            .iter()
            .find(|(w, _)| *w == v)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                format!(
                    "`{v}` is not a preset; write one of {}, or leave it out and set \
                     `endpoint`",
                    PRESETS
                        .iter()
                        .map(|(w, _)| *w)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    })?;
    let account = s.parsed("account", |v| {
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()) {
            Ok(v.to_string())
        } else {
            Err(format!("`{v}` is not an account id (letters and digits)"))
        }
    })?;
    let region = s.parsed("region", |v| {
        if !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            Ok(v.to_string())
        } else {
            Err(format!("`{v}` is not a region name, e.g. `eu-central-1`"))
        }
    })?;
    let region = match (region, preset.and_then(Preset::default_region)) {
        (Some(r), _) => r,
        (None, Some(d)) => d.to_string(),
        (None, None) if preset.is_some() => {
            return Err(s.invalid(
                "region",
                format!(
                    "preset {} needs the bucket's `region`, e.g. `region = eu-central-1`",
                    preset.unwrap().word()
                ),
            ))
        }
        (None, None) => "us-east-1".to_string(),
    };
    let endpoint = s.parsed("endpoint", endpoint_url)?;
    let endpoint = match (endpoint, preset) {
        (Some(e), _) => Some(e),
        (None, Some(p)) => match p.endpoint(&region, account.as_deref()) {
            Some(e) => Some(e),
            None if p == Preset::R2 => {
                return Err(s.invalid(
                    "account",
                    "preset r2 needs your Cloudflare `account` id (the hex id in the R2 \
                     dashboard's S3 API URL)"
                        .to_string(),
                ))
            }
            None => {
                return Err(s.invalid(
                    "endpoint",
                    format!(
                        "preset {} is self-hosted: set `endpoint = http(s)://host:port`",
                        p.word()
                    ),
                ))
            }
        },
        (None, None) => None,
    };
    let path_style = s.bool("path_style", preset.is_some_and(Preset::path_style))?;

    let inline_id = s.scalar("access_key_id")?;
    let inline_secret = s.secret("secret_access_key")?;
    let file = s.parsed("credentials", credentials_source)?;
    let credentials = match (inline_id, inline_secret, file) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(s.invalid(
                "credentials",
                "set either `credentials` or `access_key_id` + `secret_access_key`, not both"
                    .to_string(),
            ))
        }
        (Some(id), Some(secret), None) => Credentials::Inline {
            access_key_id: id,
            secret_access_key: secret,
        },
        (Some(_), None, None) => {
            return Err(s.invalid(
                "secret_access_key",
                "`access_key_id` is set but `secret_access_key` is not; add it (e.g. \
                 `secret_access_key = ${S3_SECRET}`)"
                    .to_string(),
            ))
        }
        (None, Some(_), None) => {
            return Err(s.invalid(
                "access_key_id",
                "`secret_access_key` is set but `access_key_id` is not; add it".to_string(),
            ))
        }
        (None, None, Some(c)) => c,
        (None, None, None) => Credentials::Environment,
    };
    let delete_credentials = s.parsed("delete_credentials", credentials_source)?;
    let bandwidth_limit = s.parsed("bandwidth_limit", |v| {
        let v = v.trim();
        let v = v.strip_suffix("/s").unwrap_or(v);
        parse_size(v).and_then(|n| {
            if n == 0 {
                Err("must be more than 0; leave it out for no limit".to_string())
            } else {
                Ok(n)
            }
        })
    })?;
    let concurrency = s
        .parsed("concurrency", |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| format!("`{v}` is not a number of transfers from 1 to 64"))
        })?
        .unwrap_or(DEFAULT_CONCURRENCY);
    let part_size = s
        .parsed("part_size", |v| {
            let n = parse_size(v)?;
            if (5 << 20..=5 << 30).contains(&n) {
                Ok(n)
            } else {
                Err("S3 parts are 5 MiB to 5 GiB; write e.g. `part_size = 16 MiB`".to_string())
            }
        })?
        .unwrap_or(DEFAULT_PART_SIZE);
    let checksum = s
        .parsed("checksum", |v| {
            CHECKSUMS
                .iter()
                .find(|(w, _)| *w == v)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    format!(
                        "`{v}` is not a checksum cairn sends; write `checksum = crc64nvme` or \
                         `checksum = sha256` (for providers without CRC-64/NVME)"
                    )
                })
        })?
        .unwrap_or_else(|| preset.map_or(UploadChecksum::Crc64Nvme, Preset::checksum));
    let retries = s
        .parsed("retries", |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| format!("`{v}` is not a number of retries from 0 to 100"))
        })?
        .unwrap_or(DEFAULT_RETRIES);
    let timeout = s
        .parsed("timeout", parse_duration)?
        .unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(s.invalid("timeout", "must be longer than 0s".to_string()));
    }
    let prune_grace = s
        .parsed("prune_grace", parse_duration)?
        .unwrap_or(DEFAULT_PRUNE_GRACE);
    Ok(RemoteConfig {
        bucket,
        prefix,
        preset,
        endpoint,
        region,
        path_style,
        credentials,
        delete_credentials,
        bandwidth_limit,
        concurrency,
        part_size,
        checksum,
        retries,
        timeout,
        prune_grace,
    })
}

/// `s3://bucket[/prefix]` → (bucket, prefix without surrounding slashes).
fn parse_url(v: &str) -> Result<(String, String), String> {
    let Some(rest) = v.strip_prefix("s3://") else {
        return Err(format!(
            "`{v}` is not an s3:// URL; write `url = s3://BUCKET/PREFIX`"
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !ok {
        return Err(format!(
            "`{bucket}` is not a bucket name (3 to 63 lowercase letters, digits, `-` and `.`)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(format!("`{prefix}` is not a usable key prefix"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

fn endpoint_url(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(v.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "`{v}` is not an endpoint URL; write e.g. `endpoint = https://s3.example.com`"
        )),
    }
}

fn credentials_source(v: &str) -> Result<Credentials, String> {
    if let Some(name) = v.strip_prefix("credential:") {
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Ok(Credentials::Credential(name.to_string()));
        }
        return Err(format!("`{name}` is not a credential name"));
    }
    super::value::absolute_path(v)
        .map(Credentials::File)
        .map_err(|_| {
            format!(
                "`{v}`: write an absolute path to a file holding `access_key_id = …` and \
                 `secret_access_key = …`, or `credential:NAME` for a systemd credential"
            )
        })
}
