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

/// A snapshot object as stored: its name, its record, and whether it is protected.
///
/// `protected` is a member of the stored JSON beside the record's own (docs/FORMAT.md,
/// section 10), written only when true; it is kept out of [`Snapshot`] so that code which
/// builds records (the archiver) need not know about it. Protection is changed only by
/// writing the record again ([`super::Repository::set_protected`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub id: String,
    pub snapshot: Snapshot,
    pub protected: bool,
}

/// What is serialized: the record's members, then `protected` when true.
#[derive(Serialize)]
pub(crate) struct StoredRecord<'a> {
    #[serde(flatten)]
    pub snapshot: &'a Snapshot,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

/// The members of a stored record that are not part of [`Snapshot`].
#[derive(Deserialize)]
pub(crate) struct StoredFlags {
    #[serde(default)]
    pub protected: bool,
}

impl Snapshot {
    /// Whether `other` is this record written again: equal in every member, except that
    /// `figures.duration_secs` may differ in its last bits (a JSON round trip of a float
    /// need not be exact).
    pub fn same_record(&self, other: &Snapshot) -> bool {
        let (a, b) = (self.figures.duration_secs, other.figures.duration_secs);
        let close = a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        if !close {
            return false;
        }
        let mut o = other.clone();
        o.figures.duration_secs = a;
        *self == o
    }
}

/// Collapse copies of one record into one snapshot.
///
/// Protecting or unprotecting a snapshot writes the record again under a new name, then
/// removes the old object; a crash in between leaves two objects that differ only in
/// `protected`. They are one snapshot: the protected copy is the one that counts (so a
/// crash can never lose a protection; an interrupted unprotect must be run again), else
/// the one with the smallest name. `all` must be sorted by time, then name; the result is
/// too, with the copies left over as (copy name, name of the snapshot it duplicates).
pub fn collapse_copies(all: Vec<StoredSnapshot>) -> (Vec<StoredSnapshot>, Vec<(String, String)>) {
    let mut groups: Vec<Vec<StoredSnapshot>> = Vec::new();
    for s in all {
        // Copies have the same time, so only the groups of that time need a look.
        let found = groups
            .iter_mut()
            .rev()
            .take_while(|g| g[0].snapshot.time == s.snapshot.time)
            .find(|g| g[0].snapshot.same_record(&s.snapshot));
        match found {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    let mut kept = Vec::with_capacity(groups.len());
    let mut copies = Vec::new();
    for mut g in groups {
        let pick = g.iter().position(|s| s.protected).unwrap_or(0);
        let one = g.swap_remove(pick);
        copies.extend(g.into_iter().map(|c| (c.id, one.id.clone())));
        kept.push(one);
    }
    kept.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    copies.sort();
    (kept, copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: &str, tree: &str) -> Snapshot {
        Snapshot {
            version: 1,
            time: chrono::DateTime::parse_from_rfc3339(time)
                .unwrap()
                .with_timezone(&chrono::Utc),
            host: "web1".into(),
            user: "cairn".into(),
            paths: vec!["/etc".into()],
            tags: vec![],
            tree: tree.into(),
            parent: None,
            program: "cairn test".into(),
            complete: true,
            errors: vec![],
            figures: Figures {
                duration_secs: 1.2345678901234567,
                ..Figures::default()
            },
            inventory: Inventory::default(),
        }
    }

    fn stored(id: &str, s: &Snapshot, protected: bool) -> StoredSnapshot {
        StoredSnapshot {
            id: id.into(),
            snapshot: s.clone(),
            protected,
        }
    }

    #[test]
    fn protected_is_written_only_when_true_and_read_back() {
        let s = record("2026-11-20T03:00:00Z", "aa");
        let plain = serde_json::to_vec(&StoredRecord {
            snapshot: &s,
            protected: false,
        })
        .unwrap();
        assert_eq!(plain, serde_json::to_vec(&s).unwrap());
        let flags: StoredFlags = serde_json::from_slice(&plain).unwrap();
        assert!(!flags.protected);
        let plain = serde_json::to_vec(&StoredRecord {
            snapshot: &s,
            protected: true,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["protected"], true);
        assert_eq!(v["tree"], "aa");
        assert!(
            serde_json::from_slice::<StoredFlags>(&plain)
                .unwrap()
                .protected
        );
        // The record itself ignores the extra member.
        assert_eq!(serde_json::from_slice::<Snapshot>(&plain).unwrap(), s);
        assert!(serde_json::from_slice::<StoredFlags>(br#"{"protected": "yes"}"#).is_err());
    }

    #[test]
    fn same_record_tolerates_float_noise_only() {
        let a = record("2026-11-20T03:00:00Z", "aa");
        let mut b = a.clone();
        b.figures.duration_secs = f64::from_bits(a.figures.duration_secs.to_bits() + 1);
        assert!(a.same_record(&b));
        b.figures.duration_secs = 2.0;
        assert!(!a.same_record(&b));
        let mut c = a.clone();
        c.tags = vec!["x".into()];
        assert!(!a.same_record(&c));
    }

    #[test]
    fn copies_collapse_preferring_the_protected_one() {
        let a = record("2026-11-20T03:00:00Z", "aa");
        let b = record("2026-11-21T03:00:00Z", "bb");
        // Another snapshot at the same time as b, but a different record.
        let b2 = record("2026-11-21T03:00:00Z", "b2");
        let all = vec![
            stored("1", &a, false),
            stored("2", &a, false),
            stored("3", &b, false),
            stored("4", &b2, false),
            stored("5", &b, true),
        ];
        let (kept, copies) = collapse_copies(all);
        let ids: Vec<(&str, bool)> = kept.iter().map(|s| (s.id.as_str(), s.protected)).collect();
        assert_eq!(ids, [("1", false), ("4", false), ("5", true)]);
        assert_eq!(
            copies,
            [
                ("2".to_string(), "1".to_string()),
                ("3".to_string(), "5".to_string())
            ]
        );
        let (kept, copies) = collapse_copies(vec![stored("9", &a, true)]);
        assert_eq!(kept.len(), 1);
        assert!(copies.is_empty());
    }
}
