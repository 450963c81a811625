//! The Prometheus metrics file, for node_exporter's textfile collector.
//!
//! Everything is computed from the status files (and the staleness found from them), never
//! accumulated in memory, so a restarted heartbeat writes the same file; counters are
//! therefore absent and every metric is a gauge. The file is written atomically (temp
//! file in the same directory, fsync, rename: the collector never reads half a file; the
//! temp name `.tmp-….prom-…` does not end in `.prom`, so the collector skips it) with mode
//! 0644, since node_exporter runs as another user. [`FAMILIES`] is the list of names, types
//! and help texts; cairn-heartbeat(8) documents the same list and a test keeps them equal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::stale::Staleness;
use crate::stage::{StageResult, StatusFile};

/// (name, labels, help) of every metric family, in the order written.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("cairn_stage_result", "stage, result", "1 for the result of the stage's latest run (running, success, partial, failure), 0 for the others."),
    ("cairn_stage_last_exit_code", "stage", "Exit code of the stage's latest finished run."),
    ("cairn_stage_last_start_timestamp_seconds", "stage", "When the stage's latest run started (Unix time)."),
    ("cairn_stage_last_end_timestamp_seconds", "stage", "When the stage's latest run finished (Unix time)."),
    ("cairn_stage_last_duration_seconds", "stage", "How long the stage's latest finished run took."),
    ("cairn_stage_last_success_timestamp_seconds", "stage", "When a run of the stage last succeeded (Unix time)."),
    ("cairn_pipeline_last_success_timestamp_seconds", "", "When the backup pipeline last succeeded: upload, or snapshot without [remote] (Unix time)."),
    ("cairn_pipeline_max_age_seconds", "", "[heartbeat] max_age."),
    ("cairn_pipeline_stale", "", "1 when the pipeline has not succeeded for longer than max_age."),
    ("cairn_drill_max_age_seconds", "", "[drill] max_age."),
    ("cairn_drill_stale", "", "1 when the drill has not passed for longer than [drill] max_age."),
    ("cairn_snapshot_size_bytes", "", "Logical size of the files in the latest recorded snapshot."),
    ("cairn_snapshot_files", "", "Regular files in the latest recorded snapshot (new, changed and unchanged)."),
    ("cairn_snapshot_read_bytes", "", "Bytes the latest snapshot run read (unchanged files are not read)."),
    ("cairn_snapshot_added_bytes", "", "Bytes of new data the latest snapshot run added, before compression."),
    ("cairn_snapshot_added_stored_bytes", "", "Bytes the latest snapshot run added to the repository, compressed and encrypted."),
    ("cairn_snapshot_complete", "", "1 when the latest recorded snapshot holds every selected file, 0 when some could not be read."),
    ("cairn_snapshot_unreadable_entries", "", "Entries the latest snapshot run could not back up."),
    ("cairn_repository_size_bytes", "", "Bytes the repository stores (packs, compressed and encrypted), as the latest snapshot run recorded."),
    ("cairn_repository_logical_bytes", "", "Logical bytes of all snapshots in the repository, as the latest snapshot run recorded."),
    ("cairn_repository_snapshots", "", "Snapshots in the repository, as the latest snapshot run recorded."),
    ("cairn_dedup_ratio", "", "cairn_repository_logical_bytes / cairn_repository_size_bytes: how many times the repository's content would fill the disk without deduplication and compression."),
    ("cairn_upload_bytes", "", "Bytes the latest upload run sent to the bucket."),
    ("cairn_upload_objects", "", "Objects the latest upload run sent."),
    ("cairn_upload_present_objects", "", "Objects the latest upload run found already in the bucket."),
    ("cairn_upload_throughput_bytes_per_second", "", "Transfer rate of the latest upload run."),
    ("cairn_drill_passed", "", "1 when the latest drill passed, 0 when it failed or found a mismatch."),
    ("cairn_drill_duration_seconds", "", "How long the latest drill took (restore and verification)."),
    ("cairn_drill_restore_seconds", "", "How long the latest drill's restore took: the measured time to restore."),
    ("cairn_drill_files", "", "Files the latest drill restored and verified."),
    ("cairn_drill_bytes", "", "Bytes the latest drill restored and verified."),
    ("cairn_drill_throughput_bytes_per_second", "", "Restore rate of the latest drill."),
    ("cairn_metrics_timestamp_seconds", "", "When cairn-heartbeat wrote this file (Unix time)."),
];

/// What the file is computed from.
#[derive(Debug)]
pub struct Input<'a> {
    /// Every stage's status file, by stage name.
    pub statuses: &'a BTreeMap<String, StatusFile>,
    /// The stage whose success is the pipeline's (`upload` or `snapshot`).
    pub pipeline_stage: &'a str,
    /// The pipeline's staleness, when `[heartbeat] max_age` is set.
    pub pipeline: Option<&'a Staleness>,
    /// The drill's, when `[drill] max_age` is set.
    pub drill: Option<&'a Staleness>,
    /// Now.
    pub now: DateTime<Utc>,
}

type Sample = (Vec<(&'static str, String)>, f64);

/// The metrics file's text.
pub fn render(input: &Input<'_>) -> String {
    let mut values: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    let mut put = |name: &'static str, labels: Vec<(&'static str, String)>, v: f64| {
        values.entry(name).or_default().push((labels, v));
    };
    let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;

    for (stage, s) in input.statuses {
        let l = || vec![("stage", stage.clone())];
        for r in [
            StageResult::Running,
            StageResult::Success,
            StageResult::Partial,
            StageResult::Failure,
        ] {
            let mut labels = l();
            labels.push(("result", r.as_str().to_string()));
            put(
                "cairn_stage_result",
                labels,
                f64::from(u8::from(s.result == r)),
            );
        }
        if let (Some(code), true) = (s.exit_code, s.result != StageResult::Running) {
            put("cairn_stage_last_exit_code", l(), f64::from(code));
        }
        put(
            "cairn_stage_last_start_timestamp_seconds",
            l(),
            ts(s.started),
        );
        if let (Some(end), true) = (s.finished, s.result != StageResult::Running) {
            put("cairn_stage_last_end_timestamp_seconds", l(), ts(end));
            let d = (end - s.started).num_milliseconds().max(0) as f64 / 1000.0;
            put("cairn_stage_last_duration_seconds", l(), d);
        }
        if let Some(t) = last_success(s) {
            put("cairn_stage_last_success_timestamp_seconds", l(), ts(t));
        }
    }
    if let Some(t) = input
        .statuses
        .get(input.pipeline_stage)
        .and_then(last_success)
    {
        put(
            "cairn_pipeline_last_success_timestamp_seconds",
            vec![],
            ts(t),
        );
    }
    for (st, max, stale) in [
        (
            input.pipeline,
            "cairn_pipeline_max_age_seconds",
            "cairn_pipeline_stale",
        ),
        (
            input.drill,
            "cairn_drill_max_age_seconds",
            "cairn_drill_stale",
        ),
    ] {
        if let Some(s) = st {
            put(max, vec![], s.max_age.as_secs_f64());
            put(stale, vec![], f64::from(u8::from(s.stale)));
        }
    }

    if let Some(s) = input.statuses.get("snapshot") {
        let f = &s.figures;
        let inner = &f["figures"];
        if inner.is_object() {
            let n = |k: &str| inner[k].as_f64();
            let mut opt = |name, v: Option<f64>| {
                if let Some(v) = v {
                    put(name, vec![], v);
                }
            };
            opt("cairn_snapshot_size_bytes", n("bytes_total"));
            opt(
                "cairn_snapshot_files",
                match (n("files_new"), n("files_changed"), n("files_unchanged")) {
                    (Some(a), Some(b), Some(c)) => Some(a + b + c),
                    _ => None,
                },
            );
            opt("cairn_snapshot_read_bytes", n("bytes_read"));
            opt("cairn_snapshot_added_bytes", n("bytes_added"));
            opt("cairn_snapshot_added_stored_bytes", n("bytes_added_stored"));
            opt(
                "cairn_snapshot_complete",
                f["complete"].as_bool().map(|c| f64::from(u8::from(c))),
            );
            opt("cairn_snapshot_unreadable_entries", f["errors"].as_f64());
        }
        let repo = &f["repository"];
        let stored = repo["stored_bytes"].as_f64();
        let logical = repo["logical_bytes"].as_f64();
        if let Some(v) = stored {
            put("cairn_repository_size_bytes", vec![], v);
        }
        if let Some(v) = logical {
            put("cairn_repository_logical_bytes", vec![], v);
        }
        if let Some(v) = repo["snapshots"].as_f64() {
            put("cairn_repository_snapshots", vec![], v);
        }
        if let (Some(l), Some(s)) = (logical, stored) {
            if s > 0.0 {
                put("cairn_dedup_ratio", vec![], l / s);
            }
        }
    }
    if let Some(s) = input.statuses.get("upload") {
        let f = &s.figures["figures"];
        if f.is_object() {
            if let Some(v) = f["bytes"].as_f64() {
                put("cairn_upload_bytes", vec![], v);
            }
            if let Some(m) = f["uploaded"].as_object() {
                let n: f64 = m.values().filter_map(Value::as_f64).sum();
                put("cairn_upload_objects", vec![], n);
            }
            if let Some(v) = f["present"].as_f64() {
                put("cairn_upload_present_objects", vec![], v);
            }
            if let Some(v) = f["throughput"].as_f64() {
                put("cairn_upload_throughput_bytes_per_second", vec![], v);
            }
        }
    }
    if let Some(s) = input.statuses.get("drill") {
        if s.result != StageResult::Running {
            put(
                "cairn_drill_passed",
                vec![],
                f64::from(u8::from(s.result == StageResult::Success)),
            );
        }
        // The drill's figures, nested under "figures" like the other stages' (or flat).
        let f = if s.figures["figures"].is_object() {
            &s.figures["figures"]
        } else {
            &s.figures
        };
        for (name, key) in [
            ("cairn_drill_duration_seconds", "seconds"),
            ("cairn_drill_restore_seconds", "restore_seconds"),
            ("cairn_drill_files", "files"),
            ("cairn_drill_bytes", "bytes"),
            ("cairn_drill_throughput_bytes_per_second", "throughput"),
        ] {
            if let Some(v) = f[key].as_f64() {
                put(name, vec![], v);
            }
        }
    }
    put("cairn_metrics_timestamp_seconds", vec![], ts(input.now));

    let mut out = String::new();
    for (name, _, help) in FAMILIES {
        let Some(samples) = values.get(name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in samples {
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                let parts: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                out.push_str(&parts.join(","));
                out.push('}');
            }
            out.push(' ');
            out.push_str(&number(*v));
            out.push('\n');
        }
    }
    out
}

fn last_success(s: &StatusFile) -> Option<DateTime<Utc>> {
    s.last_success.or(match s.result {
        StageResult::Success => s.finished,
        _ => None,
    })
}

/// A sample value as the text format writes it (`+Inf`, `NaN`, integers without `.0`).
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Write `text` to `path` atomically, mode 0644.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    crate::atomic::write_atomic_with(path, 0o644, |f| {
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn status(stage: &str, result: StageResult, figures: Value) -> StatusFile {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap();
        StatusFile {
            stage: stage.into(),
            run_id: "r".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            started: t0,
            finished: Some(t0 + chrono::Duration::milliseconds(90_500)),
            result,
            exit_code: Some(if result == StageResult::Success { 0 } else { 3 }),
            summary: String::new(),
            error: None,
            figures,
            last_success: Some(t0 - chrono::Duration::days(1)),
            first_started: Some(t0 - chrono::Duration::days(9)),
        }
    }

    #[test]
    fn renders_stage_snapshot_upload_and_drill_figures() {
        let mut st = BTreeMap::new();
        st.insert(
            "snapshot".to_string(),
            status(
                "snapshot",
                StageResult::Partial,
                serde_json::json!({"snapshot": "ab", "complete": false, "errors": 2,
                    "figures": {"files_new": 3, "files_changed": 1, "files_unchanged": 6,
                        "bytes_read": 100, "bytes_total": 5000, "bytes_added": 40,
                        "bytes_added_stored": 20},
                    "repository": {"stored_bytes": 2000, "logical_bytes": 9000, "snapshots": 4}}),
            ),
        );
        st.insert(
            "upload".to_string(),
            status(
                "upload",
                StageResult::Success,
                serde_json::json!({"figures": {"uploaded": {"data": 3, "index": 1}, "bytes": 777,
                    "present": 9, "throughput": 1.5}}),
            ),
        );
        st.insert(
            "drill".to_string(),
            status(
                "drill",
                StageResult::Failure,
                serde_json::json!({"figures": {"files": 5, "bytes": 50, "seconds": 2.25,
                    "restore_seconds": 1.5, "throughput": 22.2}}),
            ),
        );
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let text = render(&Input {
            statuses: &st,
            pipeline_stage: "upload",
            pipeline: None,
            drill: None,
            now,
        });
        for line in [
            "cairn_stage_result{stage=\"snapshot\",result=\"partial\"} 1",
            "cairn_stage_result{stage=\"snapshot\",result=\"success\"} 0",
            "cairn_stage_last_exit_code{stage=\"drill\"} 3",
            "cairn_stage_last_duration_seconds{stage=\"upload\"} 90.5",
            "cairn_stage_last_start_timestamp_seconds{stage=\"upload\"} 1772330400",
            "cairn_stage_last_success_timestamp_seconds{stage=\"upload\"} 1772244000",
            "cairn_pipeline_last_success_timestamp_seconds 1772244000",
            "cairn_snapshot_size_bytes 5000",
            "cairn_snapshot_files 10",
            "cairn_snapshot_complete 0",
            "cairn_snapshot_unreadable_entries 2",
            "cairn_repository_size_bytes 2000",
            "cairn_dedup_ratio 4.5",
            "cairn_upload_bytes 777",
            "cairn_upload_objects 4",
            "cairn_drill_passed 0",
            "cairn_drill_duration_seconds 2.25",
            "cairn_metrics_timestamp_seconds 1772409600",
            "# TYPE cairn_snapshot_size_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("cairn_pipeline_stale"), "{text}");
    }

    #[test]
    fn every_family_rendered_is_listed_and_numbers_are_prometheus_floats() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let names: std::collections::HashSet<_> = FAMILIES.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), FAMILIES.len(), "duplicate family");
    }
}
