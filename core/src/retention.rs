//! Retention: which snapshots `[retention]` keeps ([`decide`], a pure function), and
//! [`forget`], which removes the others from a repository.
//!
//! Semantics (restic's, documented in cairn.conf(5)):
//!
//! - Snapshots are grouped by host and source paths; each group is judged on its own, so
//!   one host's snapshots never count against another's.
//! - A snapshot is kept if any rule keeps it, and always if it is protected.
//! - `keep_last N` keeps the newest N snapshots of the group.
//! - `keep_hourly`/`daily`/`weekly`/`monthly`/`yearly N` put each snapshot in a bucket by
//!   its time in UTC (`YYYY-MM-DD HH:00`, `YYYY-MM-DD`, ISO 8601 week `YYYY-Www`,
//!   `YYYY-MM`, `YYYY`) and keep the newest snapshot of each of the N newest buckets that
//!   hold a snapshot (so days without a backup do not use up `keep_daily`).
//! - `keep_within D` keeps every snapshot taken at most D before the newest snapshot of
//!   its group. A newest snapshot that claims a time after "now" (a clock that was wrong)
//!   does not move that anchor into the future: the anchor is then "now".
//! - `keep_tag` keeps every snapshot that has one of the tags.
//! - A count of 0, a `keep_within` of 0 and an empty `keep_tag` are the same as an unset
//!   rule; with no rule at all, every snapshot is kept (a policy never deletes everything
//!   by accident).
//! - Snapshots with the same time are ordered by id, the larger id counting as newer.
//!
//! Protected and tagged snapshots take part in every rule like any other: protection adds
//! a reason to keep, it does not shift the buckets.
//!
//! [`forget`] works on the repository's snapshot list with copies collapsed (see
//! [`crate::repo::snapshot::collapse_copies`]): a snapshot object left twice by an
//! interrupted `protect`/`unprotect` counts once, and its extra copies are removed.
//! Deleting snapshot objects is all forget does; the data they used is removed by prune.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::RetentionConfig;
use crate::repo::{RepoError, Repository};
use crate::stage::{msg, Priority};

/// The reason given for every snapshot when no rule is set.
pub const NO_RULES: &str = "no retention rule set: keeping everything";
/// The reason given for a dropped snapshot.
pub const NO_MATCH: &str = "matches no rule";

/// What the policy needs to know about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub protected: bool,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub keep: bool,
    /// Why it is kept (every rule that keeps it), or [`NO_MATCH`].
    pub reasons: Vec<String>,
}

/// Whether `policy` has any rule that keeps something (see the module docs).
pub fn has_rules(policy: &RetentionConfig) -> bool {
    counts(policy).iter().any(|(_, n)| n.unwrap_or(0) > 0)
        || policy.keep_within.is_some_and(|d| !d.is_zero())
        || !policy.keep_tag.is_empty()
}

/// The rules of `policy` in words, e.g. `keep_last 2, keep_daily 7, keep_within 2d`.
pub fn describe(policy: &RetentionConfig) -> String {
    let mut parts: Vec<String> = counts(policy)
        .iter()
        .filter_map(|(name, n)| n.filter(|&n| n > 0).map(|n| format!("{name} {n}")))
        .collect();
    if let Some(d) = policy.keep_within.filter(|d| !d.is_zero()) {
        parts.push(format!("keep_within {}", format_duration(d)));
    }
    if !policy.keep_tag.is_empty() {
        parts.push(format!("keep_tag {}", policy.keep_tag.join(" ")));
    }
    if parts.is_empty() {
        "no rules".to_string()
    } else {
        parts.join(", ")
    }
}

fn counts(policy: &RetentionConfig) -> [(&'static str, Option<u32>); 6] {
    [
        ("keep_last", policy.keep_last),
        ("keep_hourly", policy.keep_hourly),
        ("keep_daily", policy.keep_daily),
        ("keep_weekly", policy.keep_weekly),
        ("keep_monthly", policy.keep_monthly),
        ("keep_yearly", policy.keep_yearly),
    ]
}

/// A duration in the config's own syntax: `2w`, `1d 12h`, `90min`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut parts = Vec::new();
    for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("min", 60)] {
        if s >= len {
            parts.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

/// The time buckets of the periodic rules: (rule, its count, bucket label of a time).
type Bucket = fn(&DateTime<Utc>) -> String;

fn bucket_rules(policy: &RetentionConfig) -> [(&'static str, Option<u32>, Bucket); 5] {
    [
        ("keep_hourly", policy.keep_hourly, |t| {
            t.format("%Y-%m-%d %H:00").to_string()
        }),
        ("keep_daily", policy.keep_daily, |t| {
            t.format("%Y-%m-%d").to_string()
        }),
        ("keep_weekly", policy.keep_weekly, |t| {
            t.format("%G-W%V").to_string()
        }),
        ("keep_monthly", policy.keep_monthly, |t| {
            t.format("%Y-%m").to_string()
        }),
        ("keep_yearly", policy.keep_yearly, |t| {
            t.format("%Y").to_string()
        }),
    ]
}

/// Judge every snapshot under `policy` at time `now`; the result is in the order of
/// `snapshots` (which may be in any order).
pub fn decide(
    snapshots: &[Candidate],
    policy: &RetentionConfig,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut reasons: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            if s.protected {
                vec!["protected".to_string()]
            } else {
                vec![]
            }
        })
        .collect();
    if !has_rules(policy) {
        for r in &mut reasons {
            r.push(NO_RULES.to_string());
        }
    } else {
        let mut groups: BTreeMap<(&str, &[String]), Vec<usize>> = BTreeMap::new();
        for (i, s) in snapshots.iter().enumerate() {
            groups
                .entry((s.host.as_str(), s.paths.as_slice()))
                .or_default()
                .push(i);
        }
        for mut members in groups.into_values() {
            // Newest first.
            members.sort_by(|&a, &b| {
                let (a, b) = (&snapshots[a], &snapshots[b]);
                b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id))
            });
            judge_group(snapshots, &members, policy, now, &mut reasons);
        }
    }
    reasons
        .into_iter()
        .map(|reasons| {
            if reasons.is_empty() {
                Decision {
                    keep: false,
                    reasons: vec![NO_MATCH.to_string()],
                }
            } else {
                Decision {
                    keep: true,
                    reasons,
                }
            }
        })
        .collect()
}

/// Apply the rules to one group, `members` newest first, adding to `reasons`.
fn judge_group(
    all: &[Candidate],
    members: &[usize],
    policy: &RetentionConfig,
    now: DateTime<Utc>,
    reasons: &mut [Vec<String>],
) {
    if let Some(n) = policy.keep_last.filter(|&n| n > 0) {
        for (k, &i) in members.iter().take(n as usize).enumerate() {
            reasons[i].push(format!("keep_last {}/{n}", k + 1));
        }
    }
    for (rule, n, bucket) in bucket_rules(policy) {
        let Some(n) = n.filter(|&n| n > 0) else {
            continue;
        };
        let mut taken = 0u32;
        let mut last: Option<String> = None;
        for &i in members {
            if taken == n {
                break;
            }
            let b = bucket(&all[i].time);
            if last.as_ref() != Some(&b) {
                taken += 1;
                reasons[i].push(format!("{rule} {taken}/{n} ({b})"));
                last = Some(b);
            }
        }
    }
    if let Some(d) = policy.keep_within.filter(|d| !d.is_zero()) {
        let newest = all[members[0]].time;
        let anchor = newest.min(now);
        // A window reaching before the start of time keeps everything.
        let from = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| anchor.checked_sub_signed(d));
        for &i in members {
            if from.is_none_or(|from| all[i].time >= from) {
                reasons[i].push(format!("within {}", format_duration(d)));
            }
        }
    }
    for &i in members {
        for t in &policy.keep_tag {
            if all[i].tags.contains(t) {
                reasons[i].push(format!("tag {t}"));
            }
        }
    }
}

/// One snapshot in a [`ForgetReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ForgetEntry {
    pub id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub protected: bool,
    /// `keep` or `drop`.
    pub decision: &'static str,
    pub reasons: Vec<String>,
    /// Whether its object was removed (never in a dry run).
    pub removed: bool,
}

/// An extra copy of a snapshot, left by an interrupted protect or unprotect.
#[derive(Debug, Clone, Serialize)]
pub struct CopyEntry {
    pub id: String,
    /// The snapshot (in `snapshots`) it is a copy of.
    pub copy_of: String,
    pub removed: bool,
}

/// What [`forget`] decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    /// The rules, in words ([`describe`]).
    pub policy: String,
    /// Every snapshot, oldest first.
    pub snapshots: Vec<ForgetEntry>,
    pub copies: Vec<CopyEntry>,
    pub kept: usize,
    pub dropped: usize,
    /// Snapshots whose object was removed (copies not counted).
    pub removed: usize,
    /// Objects that could not be removed.
    pub errors: Vec<String>,
}

/// Apply `policy` to the snapshots of `repo`: remove the object of every snapshot it drops,
/// and every extra copy, unless `dry_run`. The caller holds the exclusive lock (or none, in
/// a dry run). Each removed snapshot is logged as `SNAPSHOT_FORGOTTEN`. A removal that
/// fails is recorded in [`ForgetReport::errors`] and the others go on.
pub fn forget(
    repo: &Repository,
    policy: &RetentionConfig,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ForgetReport, RepoError> {
    let (list, copies) = repo.snapshot_list()?;
    let candidates: Vec<Candidate> = list
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            time: s.snapshot.time,
            host: s.snapshot.host.clone(),
            paths: s.snapshot.paths.clone(),
            tags: s.snapshot.tags.clone(),
            protected: s.protected,
        })
        .collect();
    let decisions = decide(&candidates, policy, now);
    let mut report = ForgetReport {
        dry_run,
        policy: describe(policy),
        snapshots: Vec::new(),
        copies: Vec::new(),
        kept: decisions.iter().filter(|d| d.keep).count(),
        dropped: decisions.iter().filter(|d| !d.keep).count(),
        removed: 0,
        errors: Vec::new(),
    };
    let mut remove = |id: &str| -> bool {
        if dry_run {
            return false;
        }
        match repo.remove_snapshot(id) {
            Ok(()) => true,
            Err(e) => {
                report.errors.push(e.to_string());
                false
            }
        }
    };
    let mut entries = Vec::new();
    for (c, d) in candidates.into_iter().zip(decisions) {
        let removed = !d.keep && remove(&c.id);
        if removed {
            crate::stage::log_event(
                &msg::SNAPSHOT_FORGOTTEN,
                Priority::Info,
                &format!(
                    "forgot snapshot {} of {} {} taken {}: {}",
                    &c.id[..c.id.len().min(12)],
                    c.host,
                    c.paths.join(" "),
                    c.time.format("%Y-%m-%d %H:%M:%S UTC"),
                    d.reasons.join(", ")
                ),
                &[("CAIRN_SNAPSHOT", &c.id)],
            );
        }
        entries.push(ForgetEntry {
            id: c.id,
            time: c.time,
            host: c.host,
            paths: c.paths,
            tags: c.tags,
            protected: c.protected,
            decision: if d.keep { "keep" } else { "drop" },
            reasons: d.reasons,
            removed,
        });
    }
    let mut copy_entries = Vec::new();
    for (id, of) in copies {
        let removed = remove(&id);
        if removed {
            crate::stage::log(
                Priority::Notice,
                &format!(
                    "removed snapshots/{id}, a second copy of snapshot {} left by an interrupted protect or unprotect",
                    &of[..of.len().min(12)]
                ),
            );
        }
        copy_entries.push(CopyEntry {
            id,
            copy_of: of,
            removed,
        });
    }
    report.removed = entries.iter().filter(|e| e.removed).count();
    report.snapshots = entries;
    report.copies = copy_entries;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn snap(id: &str, time: &str) -> Candidate {
        Candidate {
            id: id.to_string(),
            time: t(time),
            host: "web1".into(),
            paths: vec!["/etc".into()],
            tags: vec![],
            protected: false,
        }
    }

    fn policy(f: impl FnOnce(&mut RetentionConfig)) -> RetentionConfig {
        let mut p = RetentionConfig::default();
        f(&mut p);
        p
    }

    const NOW: &str = "2026-11-23T12:00:00Z";

    /// The ids kept, sorted, and every reason of each snapshot.
    fn run(snaps: &[Candidate], p: &RetentionConfig) -> (Vec<String>, Vec<(String, String)>) {
        let d = decide(snaps, p, t(NOW));
        assert_eq!(d.len(), snaps.len());
        let mut kept: Vec<String> = snaps
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.keep)
            .map(|(s, _)| s.id.clone())
            .collect();
        kept.sort();
        let reasons = snaps
            .iter()
            .zip(&d)
            .map(|(s, d)| (s.id.clone(), d.reasons.join(", ")))
            .collect();
        (kept, reasons)
    }

    fn reason_of<'a>(r: &'a [(String, String)], id: &str) -> &'a str {
        &r.iter().find(|(i, _)| i == id).unwrap().1
    }

    /// Daily snapshots at 03:00 from 2026-11-01 to 2026-11-23 (a..w), oldest first.
    fn daily() -> Vec<Candidate> {
        (1..=23)
            .map(|d| {
                snap(
                    &((b'a' + d as u8 - 1) as char).to_string(),
                    &format!("2026-11-{d:02}T03:00:00Z"),
                )
            })
            .collect()
    }

    #[test]
    fn table_of_single_rules() {
        // (rule, snapshots, ids kept)
        type Case = (
            &'static str,
            RetentionConfig,
            Vec<Candidate>,
            &'static [&'static str],
        );
        let several_a_day = vec![
            snap("a", "2026-11-20T01:00:00Z"),
            snap("b", "2026-11-20T01:30:00Z"),
            snap("c", "2026-11-20T23:59:59Z"),
            snap("d", "2026-11-21T00:00:00Z"),
            snap("e", "2026-11-22T08:00:00Z"),
            snap("f", "2026-11-22T09:00:00Z"),
            snap("g", "2026-11-22T09:59:59Z"),
        ];
        let months = vec![
            snap("a", "2024-12-31T23:00:00Z"),
            snap("b", "2025-01-15T00:00:00Z"),
            snap("c", "2025-06-01T00:00:00Z"),
            snap("d", "2025-06-30T00:00:00Z"),
            snap("e", "2025-12-31T23:59:59Z"),
            snap("f", "2026-01-01T00:00:00Z"),
            snap("g", "2026-11-01T00:00:00Z"),
            snap("h", "2026-11-20T00:00:00Z"),
        ];
        let cases: Vec<Case> = vec![
            (
                "keep_last 3",
                policy(|p| p.keep_last = Some(3)),
                daily(),
                &["u", "v", "w"],
            ),
            (
                "keep_last more than there are",
                policy(|p| p.keep_last = Some(100)),
                several_a_day.clone(),
                &["a", "b", "c", "d", "e", "f", "g"],
            ),
            (
                "keep_hourly 3: newest of each hour",
                policy(|p| p.keep_hourly = Some(3)),
                several_a_day.clone(),
                &["d", "e", "g"],
            ),
            (
                "keep_daily 2: days without snapshots do not count",
                policy(|p| p.keep_daily = Some(2)),
                several_a_day.clone(),
                &["d", "g"],
            ),
            (
                "keep_daily 3: newest of each of 3 days",
                policy(|p| p.keep_daily = Some(3)),
                several_a_day.clone(),
                &["c", "d", "g"],
            ),
            (
                "keep_daily 7",
                policy(|p| p.keep_daily = Some(7)),
                daily(),
                &["q", "r", "s", "t", "u", "v", "w"],
            ),
            (
                // ISO weeks: 2026-11-23 is a Monday (W48); W47 = 16..22, W46 = 9..15.
                "keep_weekly 3: ISO weeks start on Monday",
                policy(|p| p.keep_weekly = Some(3)),
                daily(),
                &["o", "v", "w"],
            ),
            (
                "keep_monthly 3",
                policy(|p| p.keep_monthly = Some(3)),
                months.clone(),
                &["e", "f", "h"],
            ),
            (
                "keep_yearly 2",
                policy(|p| p.keep_yearly = Some(2)),
                months.clone(),
                &["e", "h"],
            ),
            (
                "keep_yearly 10",
                policy(|p| p.keep_yearly = Some(10)),
                months.clone(),
                &["a", "e", "h"],
            ),
            (
                "keep_within 2d of the newest (w, 11-23 03:00)",
                policy(|p| p.keep_within = Some(Duration::from_secs(2 * 86_400))),
                daily(),
                &["u", "v", "w"],
            ),
            (
                "keep_within counts from the newest snapshot, not from now",
                policy(|p| p.keep_within = Some(Duration::from_secs(86_400))),
                months.clone(),
                &["h"],
            ),
            (
                "keep_within huge keeps everything",
                policy(|p| p.keep_within = Some(Duration::from_secs(u64::MAX / 2))),
                months.clone(),
                &["a", "b", "c", "d", "e", "f", "g", "h"],
            ),
            (
                "keep_tag",
                policy(|p| p.keep_tag = vec!["important".into(), "x".into()]),
                {
                    let mut s = daily();
                    s[0].tags = vec!["important".into()];
                    s[5].tags = vec!["other".into(), "x".into()];
                    s
                },
                &["a", "f"],
            ),
        ];
        for (name, p, snaps, want) in cases {
            let (kept, reasons) = run(&snaps, &p);
            assert_eq!(kept, want.to_vec(), "{name}: {reasons:#?}");
            for (id, r) in &reasons {
                if !want.contains(&id.as_str()) {
                    assert_eq!(r, NO_MATCH, "{name}: {id}");
                }
            }
        }
    }

    #[test]
    fn reasons_name_the_rule_its_rank_and_bucket() {
        let p = policy(|p| {
            p.keep_last = Some(2);
            p.keep_daily = Some(7);
            p.keep_weekly = Some(2);
            p.keep_monthly = Some(1);
            p.keep_yearly = Some(1);
            p.keep_hourly = Some(1);
            p.keep_within = Some(Duration::from_secs(36 * 3600));
            p.keep_tag = vec!["important".into()];
        });
        let mut s = daily();
        s[2].tags = vec!["important".into()];
        s[3].protected = true;
        let (_, r) = run(&s, &p);
        assert_eq!(
            reason_of(&r, "w"),
            "keep_last 1/2, keep_hourly 1/1 (2026-11-23 03:00), keep_daily 1/7 (2026-11-23), \
             keep_weekly 1/2 (2026-W48), keep_monthly 1/1 (2026-11), keep_yearly 1/1 (2026), \
             within 1d 12h"
        );
        assert_eq!(
            reason_of(&r, "v"),
            "keep_last 2/2, keep_daily 2/7 (2026-11-22), keep_weekly 2/2 (2026-W47), within 1d 12h"
        );
        assert_eq!(reason_of(&r, "q"), "keep_daily 7/7 (2026-11-17)");
        assert_eq!(reason_of(&r, "c"), "tag important");
        assert_eq!(reason_of(&r, "d"), "protected");
        assert_eq!(reason_of(&r, "p"), NO_MATCH);
    }

    #[test]
    fn combinations_keep_the_union() {
        // keep_last 2 (v, w) + keep_weekly 3 (o, v, w) + keep_monthly 2 (w only: one month)
        let p = policy(|p| {
            p.keep_last = Some(2);
            p.keep_weekly = Some(3);
            p.keep_monthly = Some(2);
        });
        let (kept, _) = run(&daily(), &p);
        assert_eq!(kept, ["o", "v", "w"]);
        // Adding keep_daily 4 adds t and u.
        let p = RetentionConfig {
            keep_daily: Some(4),
            ..p
        };
        assert_eq!(run(&daily(), &p).0, ["o", "t", "u", "v", "w"]);
    }

    #[test]
    fn no_rules_keeps_everything_and_says_so() {
        for p in [
            RetentionConfig::default(),
            policy(|p| {
                p.keep_last = Some(0);
                p.keep_daily = Some(0);
                p.keep_within = Some(Duration::ZERO);
            }),
        ] {
            assert!(!has_rules(&p));
            assert_eq!(describe(&p), "no rules");
            let mut s = daily();
            s[1].protected = true;
            let d = decide(&s, &p, t(NOW));
            assert!(d.iter().all(|d| d.keep));
            assert_eq!(d[0].reasons, [NO_RULES]);
            assert_eq!(d[1].reasons, ["protected", NO_RULES]);
        }
    }

    #[test]
    fn zero_counts_are_unset_rules() {
        let p = policy(|p| {
            p.keep_last = Some(0);
            p.keep_daily = Some(2);
        });
        assert_eq!(describe(&p), "keep_daily 2");
        assert_eq!(run(&daily(), &p).0, ["v", "w"]);
    }

    #[test]
    fn protected_snapshots_are_never_dropped() {
        let p = policy(|p| p.keep_last = Some(1));
        let mut s = daily();
        s[0].protected = true;
        s[10].protected = true;
        let (kept, r) = run(&s, &p);
        assert_eq!(kept, ["a", "k", "w"]);
        assert_eq!(reason_of(&r, "a"), "protected");
        // Protection does not use up a keep_last slot of the newest.
        s[22].protected = true;
        let (kept, r) = run(&s, &p);
        assert_eq!(kept, ["a", "k", "w"]);
        assert_eq!(reason_of(&r, "w"), "protected, keep_last 1/1");
        // Even a tag-only policy that matches nothing keeps protected snapshots.
        let p = policy(|p| p.keep_tag = vec!["nothing".into()]);
        assert_eq!(run(&s, &p).0, ["a", "k", "w"]);
    }

    #[test]
    fn groups_by_host_and_paths() {
        let mut s = daily();
        // Another host, older snapshots only: keep_last must not let web1's evict them.
        for (i, x) in s.iter_mut().enumerate().take(5) {
            x.host = "db1".into();
            x.id = format!("db{i}");
        }
        // Same host, other paths.
        s[20].paths = vec!["/etc".into(), "/home".into()];
        s[20].id = "home".into();
        let p = policy(|p| p.keep_last = Some(2));
        let (kept, r) = run(&s, &p);
        assert_eq!(kept, ["db3", "db4", "home", "v", "w"]);
        assert_eq!(reason_of(&r, "home"), "keep_last 1/2");
        assert_eq!(reason_of(&r, "db4"), "keep_last 1/2");
        // keep_within anchors at each group's own newest snapshot.
        let p = policy(|p| p.keep_within = Some(Duration::from_secs(86_400)));
        assert_eq!(run(&s, &p).0, ["db3", "db4", "home", "v", "w"]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let p = policy(|p| {
            p.keep_daily = Some(3);
            p.keep_last = Some(1);
        });
        let s = daily();
        let mut rev = s.clone();
        rev.reverse();
        assert_eq!(run(&s, &p), {
            let (k, mut r) = run(&rev, &p);
            r.reverse();
            (k, r)
        });
    }

    #[test]
    fn same_time_ties_break_by_id() {
        let s = vec![
            snap("b", "2026-11-20T01:00:00Z"),
            snap("a", "2026-11-20T01:00:00Z"),
        ];
        assert_eq!(run(&s, &policy(|p| p.keep_last = Some(1))).0, ["b"]);
        assert_eq!(run(&s, &policy(|p| p.keep_daily = Some(1))).0, ["b"]);
    }

    #[test]
    fn buckets_are_utc() {
        // 23:30 and 00:30 UTC are different days, whatever the local zone.
        let s = vec![
            snap("a", "2026-11-20T23:30:00Z"),
            snap("b", "2026-11-21T00:30:00+01:00"), // = 2026-11-20T23:30Z
            snap("c", "2026-11-21T00:30:00Z"),
        ];
        let (kept, r) = run(&s, &policy(|p| p.keep_daily = Some(2)));
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(reason_of(&r, "b"), "keep_daily 2/2 (2026-11-20)");
        // ISO week-years: 2027-01-01 (Friday) belongs to 2026-W53.
        let s = vec![
            snap("a", "2026-12-31T12:00:00Z"),
            snap("b", "2027-01-01T12:00:00Z"),
            snap("c", "2027-01-04T12:00:00Z"),
        ];
        let (kept, r) = run(&s, &policy(|p| p.keep_weekly = Some(2)));
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(reason_of(&r, "b"), "keep_weekly 2/2 (2026-W53)");
        assert_eq!(reason_of(&r, "c"), "keep_weekly 1/2 (2027-W01)");
    }

    #[test]
    fn keep_within_ignores_a_future_newest_snapshot() {
        // A snapshot from a clock far ahead must not push the window past the real ones.
        let mut s = daily();
        s.push(snap("zz", "2030-01-01T00:00:00Z"));
        let p = policy(|p| p.keep_within = Some(Duration::from_secs(86_400)));
        // now = 11-23 12:00: window from 11-22 12:00 on.
        assert_eq!(run(&s, &p).0, ["w", "zz"]);
    }

    #[test]
    fn empty_input() {
        assert!(decide(&[], &policy(|p| p.keep_last = Some(1)), t(NOW)).is_empty());
    }

    #[test]
    fn durations_are_written_as_configured() {
        for (secs, s) in [
            (0, "0s"),
            (59, "59s"),
            (90, "1min 30s"),
            (3600, "1h"),
            (2 * 86_400, "2d"),
            (14 * 86_400, "2w"),
            (36 * 3600, "1d 12h"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(secs)), s);
        }
        let p = policy(|p| {
            p.keep_last = Some(1);
            p.keep_yearly = Some(5);
            p.keep_within = Some(Duration::from_secs(7 * 86_400));
            p.keep_tag = vec!["a".into(), "b".into()];
        });
        assert_eq!(
            describe(&p),
            "keep_last 1, keep_yearly 5, keep_within 1w, keep_tag a b"
        );
    }
}
