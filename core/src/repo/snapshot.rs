//! Snapshot records: what was backed up, when, from where, and the figures of the run.
//!
//! A snapshot is sealed JSON under `snapshots/<sha256 of the sealed bytes>`. JSON because
//! it is small and read by people and scripts (`cairn snapshots --json` shows the same
//! fields); it points at the root tree and carries the run's figures and the system
//! inventory, so a restore on bare metal knows what the machine was.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub files_failed: u64,
    pub files_changed_during_read: u64,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub bytes_added: u64,
    pub bytes_added_stored: u64,
    pub blobs_added: u64,
    pub duration_secs: f64,
}

/// Facts about the machine the snapshot was taken on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Inventory {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    #[serde(default)]
    pub machine_id: String,
}

impl Inventory {
    pub fn collect() -> Inventory {
        let u = rustix::system::uname();
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_default();
        Inventory {
            hostname: crate::util::hostname(),
            os,
            kernel: u.release().to_string_lossy().into_owned(),
            arch: u.machine().to_string_lossy().into_owned(),
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub user: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree id, hex.
    pub tree: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub program: String,
    /// False when some files could not be read; `errors` lists them.
    pub complete: bool,
    #[serde(default)]
    pub errors: Vec<String>,
    pub figures: Figures,
    pub inventory: Inventory,
}

/// Most errors a snapshot record keeps (the journal has them all).
pub const MAX_RECORDED_ERRORS: usize = 1000;
/// Largest snapshot record accepted.
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
