//! `cairn-heartbeat alert UNIT`: the mail `cairn-alert@.service` sends when a unit fails
//! (`OnFailure=cairn-alert@%n.service`), built from the `$MONITOR_*` variables systemd
//! passes to such a unit and the failed unit's last journal lines.

use crate::alert::Alert;

/// Lines of the unit's journal in the mail.
pub const JOURNAL_LINES: usize = 50;

/// What systemd says about the failed unit (`OnFailure=` units get `$MONITOR_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitor {
    /// `$MONITOR_UNIT`.
    pub unit: Option<String>,
    /// `$MONITOR_SERVICE_RESULT`: `exit-code`, `signal`, `timeout`, `core-dump`,
    /// `watchdog`, `start-limit-hit`…
    pub service_result: Option<String>,
    /// `$MONITOR_EXIT_CODE`: `exited`, `killed`, `dumped`.
    pub exit_code: Option<String>,
    /// `$MONITOR_EXIT_STATUS`: the exit status or the signal name.
    pub exit_status: Option<String>,
    /// `$MONITOR_INVOCATION_ID`.
    pub invocation_id: Option<String>,
}

impl Monitor {
    /// From the process environment.
    pub fn from_env() -> Monitor {
        let v = |n: &str| std::env::var(n).ok().filter(|s| !s.trim().is_empty());
        Monitor {
            unit: v("MONITOR_UNIT"),
            service_result: v("MONITOR_SERVICE_RESULT"),
            exit_code: v("MONITOR_EXIT_CODE"),
            exit_status: v("MONITOR_EXIT_STATUS"),
            invocation_id: v("MONITOR_INVOCATION_ID"),
        }
    }
}

/// The stage a unit runs: `cairn-snapshot.service` → `snapshot`; any other unit is named
/// as it is.
pub fn stage_of(unit: &str) -> String {
    unit.strip_prefix("cairn-")
        .and_then(|u| u.strip_suffix(".service"))
        .filter(|s| !s.is_empty() && !s.contains('@'))
        .map(str::to_string)
        .unwrap_or_else(|| unit.to_string())
}

/// A few words on systemd's result.
fn explain_result(r: &str) -> &'static str {
    match r {
        "exit-code" => "the program exited with an error",
        "signal" => "the program was killed by a signal",
        "core-dump" => "the program crashed (core dump)",
        "timeout" => "it ran into a timeout",
        "watchdog" => "it stopped answering its watchdog",
        "start-limit-hit" => "it was started too often in too short a time",
        "resources" => "systemd could not set it up (resources, sandbox, missing program)",
        "oom-kill" => "the kernel's OOM killer ended it",
        "exec-condition" | "condition" => "a start condition failed",
        _ => "it failed",
    }
}

/// The exit status's meaning for cairn's own programs.
fn explain_status(unit: &str, status: &str) -> Option<String> {
    if !unit.starts_with("cairn") {
        return None;
    }
    let code: i32 = status.parse().ok()?;
    crate::stage::Exit::from_code(code).map(|e| e.describe().to_string())
}

/// The alert for `unit`'s failure, with `lines` (already formatted) from its journal, or
/// the reason none could be read.
pub fn alert(unit: &str, m: &Monitor, host: &str, lines: Result<&[String], &str>) -> Alert {
    let result = m.service_result.as_deref().unwrap_or("unknown");
    let status = match (&m.exit_code, &m.exit_status) {
        (Some(c), Some(s)) => {
            let meaning = explain_status(unit, s)
                .map(|x| format!(": {x}"))
                .unwrap_or_default();
            format!("{c}, status {s}{meaning}")
        }
        (Some(c), None) => c.clone(),
        (None, Some(s)) => format!("status {s}"),
        (None, None) => "no exit status".into(),
    };
    let mut body = String::new();
    if stage_of(unit) == "drill" {
        body.push_str(
            "THE BACKUPS ARE UNTRUSTED: the restore drill failed, so it is not proven that \
             the latest backup can be restored. Treat the backups as untrusted until a \
             drill passes again.\n\n",
        );
    }
    body.push_str(&format!(
        "The unit {unit} on {host} failed: {}.\n\n\
         Result:      {result}\n\
         Exit:        {status}\n\
         Invocation:  {}\n",
        explain_result(result),
        m.invocation_id.as_deref().unwrap_or("(unknown)"),
    ));
    match &m.unit {
        None => body.push_str(
            "(No $MONITOR_* variables: this alert was not started by systemd's OnFailure=.)\n",
        ),
        Some(u) if u != unit => body.push_str(&format!(
            "(Note: systemd says the failed unit is {u}; this alert is about {unit}.)\n"
        )),
        Some(_) => {}
    }
    let filter = m
        .invocation_id
        .as_ref()
        .map(|i| format!(" _SYSTEMD_INVOCATION_ID={i}"))
        .unwrap_or_default();
    body.push_str(&format!(
        "\nWhat to do: look at `systemctl status {unit}` and \
         `journalctl -u {unit}{filter}`; for a cairn stage, `cairn status` shows every \
         stage's last run. Start it again with `systemctl start {unit}` once fixed.\n\n"
    ));
    match lines {
        Ok([]) => body.push_str(&format!(
            "The journal has no lines of {unit} (or they are not readable here).\n"
        )),
        Ok(lines) => {
            body.push_str(&format!(
                "The last {} journal lines of {unit}:\n\n",
                lines.len()
            ));
            for l in lines {
                body.push_str("  ");
                body.push_str(l);
                body.push('\n');
            }
        }
        Err(why) => body.push_str(&format!(
            "The journal of {unit} could not be read: {why}. See `journalctl -u {unit}`.\n"
        )),
    }
    Alert {
        stage: stage_of(unit),
        verdict: "FAILED".into(),
        headline: format!("{unit} failed ({result}, {status})"),
        body,
        run_id: m.invocation_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> Monitor {
        Monitor {
            unit: Some("cairn-snapshot.service".into()),
            service_result: Some("exit-code".into()),
            exit_code: Some("exited".into()),
            exit_status: Some("3".into()),
            invocation_id: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    #[test]
    fn stage_names_from_unit_names() {
        assert_eq!(stage_of("cairn-snapshot.service"), "snapshot");
        assert_eq!(stage_of("cairn-drill.service"), "drill");
        assert_eq!(stage_of("nginx.service"), "nginx.service");
        assert_eq!(stage_of("cairn-alert@x.service"), "cairn-alert@x.service");
    }

    #[test]
    fn the_mail_says_what_failed_and_quotes_the_journal() {
        let lines = vec!["l1".to_string(), "l2 boom".to_string()];
        let a = alert("cairn-snapshot.service", &monitor(), "db1", Ok(&lines));
        assert_eq!(a.stage, "snapshot");
        assert_eq!(a.verdict, "FAILED");
        assert_eq!(
            a.headline,
            "cairn-snapshot.service failed (exit-code, exited, status 3: the operation failed)"
        );
        assert!(a.body.contains("The last 2 journal lines"), "{}", a.body);
        assert!(a.body.contains("\n  l2 boom\n"), "{}", a.body);
        assert!(a.body.contains("_SYSTEMD_INVOCATION_ID=0123"), "{}", a.body);
        assert_eq!(
            a.run_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let by_hand = alert("x.service", &Monitor::default(), "db1", Err("no access"));
        assert!(by_hand.body.contains("not started by systemd's OnFailure"));
        assert!(by_hand.body.contains("could not be read: no access"));
        assert_eq!(
            by_hand.headline,
            "x.service failed (unknown, no exit status)"
        );
    }

    #[test]
    fn a_failed_drill_says_first_that_the_backups_are_untrusted() {
        let a = alert("cairn-drill.service", &monitor(), "db1", Ok(&[]));
        assert!(
            a.body.starts_with("THE BACKUPS ARE UNTRUSTED"),
            "{}",
            a.body
        );
    }
}
