//! Alerts: telling a human, through the local mail system.
//!
//! Design: the network may be the thing that is down, so an alert is a mail handed to the
//! local MTA's `sendmail` (lettre's sendmail transport), which delivers locally or queues
//! it until the network is back; nothing here resolves a name or opens a socket. A mail is
//! plain text whose first lines say what failed and what to do; the subject carries host,
//! stage and verdict so a mailbox view alone tells the story. Every attempt is logged:
//! `ALERT_SENT`, or `ALERT_UNDELIVERED` with the reason (the caller then exits 5 unless it
//! already fails harder). Callers never put secrets in an alert; errors from the config
//! layer already redact them.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{Message, SendmailTransport, Transport};

use crate::config::AlertConfig;
use crate::stage::{msg, Priority};

/// One alert: who it is about and what to say.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The stage it is about (`preflight`).
    pub stage: String,
    /// Short verdict for the subject: `FAILED`, `STALE`…
    pub verdict: String,
    /// One line: what happened.
    pub headline: String,
    /// The body: what failed, what to do, details.
    pub body: String,
    /// The run it comes from, if any.
    pub run_id: Option<String>,
}

/// Why a mail was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// An address could not be used.
    #[error("invalid mail address {address}: {detail}")]
    Address {
        /// The address.
        address: String,
        /// Why.
        detail: String,
    },
    /// The message could not be built.
    #[error("cannot build the alert mail: {0}")]
    Build(#[source] lettre::error::Error),
    /// No sendmail program.
    #[error(
        "no sendmail program at {0}: install a local MTA (e.g. `cairn setup --install-mta`, \
         or Debian's exim4-daemon-light) or set [alert] sendmail"
    )]
    NoSendmail(String),
    /// sendmail failed.
    #[error("sendmail ({program}) did not accept the mail: {detail}")]
    Send {
        /// The program.
        program: String,
        /// Its error.
        detail: String,
    },
}

impl Alert {
    /// The subject line: `[cairn] HOST: preflight FAILED: headline`.
    pub fn subject(&self, host: &str) -> String {
        let headline: String = self.headline.chars().take(160).collect();
        format!(
            "[cairn] {host}: {} {}: {headline}",
            self.stage, self.verdict
        )
    }
}

/// The default sender: `cairn@HOST`, or `cairn@localhost` when the host name is not a
/// usable mail domain.
pub fn default_from(host: &str) -> String {
    let candidate = format!("cairn@{host}");
    if candidate.parse::<lettre::Address>().is_ok() {
        candidate
    } else {
        "cairn@localhost".to_string()
    }
}

/// Hand `alert` to the MTA for every `mail_to`; logs the outcome either way.
pub fn send(cfg: &AlertConfig, alert: &Alert) -> Result<(), AlertError> {
    let result = send_quiet(cfg, alert);
    let to = cfg.mail_to.join(", ");
    match &result {
        Ok(()) => crate::stage::log_event(
            &msg::ALERT_SENT,
            Priority::Notice,
            &format!("alert mailed to {to}: {}", alert.headline),
            &[
                ("CAIRN_ALERT_STAGE", &alert.stage),
                ("CAIRN_ALERT", &alert.verdict),
            ],
        ),
        Err(e) => crate::stage::log_event(
            &msg::ALERT_UNDELIVERED,
            Priority::Err,
            &format!("alert for {to} NOT delivered ({e}): {}", alert.headline),
            &[
                ("CAIRN_ALERT_STAGE", &alert.stage),
                ("CAIRN_ALERT", &alert.verdict),
            ],
        ),
    }
    result
}

fn send_quiet(cfg: &AlertConfig, alert: &Alert) -> Result<(), AlertError> {
    let host = crate::util::hostname();
    let mailbox = |a: &str| {
        a.parse::<Mailbox>().map_err(|e| AlertError::Address {
            address: a.to_string(),
            detail: e.to_string(),
        })
    };
    let from = cfg.mail_from.clone().unwrap_or_else(|| default_from(&host));
    let mut builder = Message::builder()
        .from(mailbox(&from)?)
        .subject(alert.subject(&host))
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.mail_to {
        builder = builder.to(mailbox(to)?);
    }
    let mut body = alert.body.trim_end().to_string();
    body.push_str(&format!(
        "\n\n-- \ncairn {} on {host}, stage {}{}\n",
        crate::stage::VERSION,
        alert.stage,
        alert
            .run_id
            .as_ref()
            .map(|r| format!(", run {r} (journalctl CAIRN_RUN={r})"))
            .unwrap_or_default()
    ));
    let message = builder.body(body).map_err(AlertError::Build)?;
    let program = cfg.sendmail.display().to_string();
    if !cfg.sendmail.exists() {
        return Err(AlertError::NoSendmail(program));
    }
    SendmailTransport::new_with_command(&cfg.sendmail)
        .send(&message)
        .map_err(|e| AlertError::Send {
            program,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_names_host_stage_and_verdict() {
        let a = Alert {
            stage: "preflight".into(),
            verdict: "FAILED".into(),
            headline: "/srv/backup is not mounted".into(),
            body: String::new(),
            run_id: None,
        };
        assert_eq!(
            a.subject("db1"),
            "[cairn] db1: preflight FAILED: /srv/backup is not mounted"
        );
    }

    #[test]
    fn default_sender_falls_back_for_odd_host_names() {
        assert_eq!(default_from("db1.example.org"), "cairn@db1.example.org");
        assert_eq!(default_from("bad host"), "cairn@localhost");
    }

    #[test]
    fn a_missing_sendmail_is_reported_not_panicked() {
        let cfg = AlertConfig {
            mail_to: vec!["root@localhost".into()],
            mail_from: None,
            sendmail: "/nonexistent/sendmail".into(),
            webhook: None,
            webhook_format: crate::config::WebhookFormat::Json,
        };
        let a = Alert {
            stage: "preflight".into(),
            verdict: "FAILED".into(),
            headline: "x".into(),
            body: "y".into(),
            run_id: None,
        };
        let e = send_quiet(&cfg, &a).unwrap_err();
        assert!(matches!(e, AlertError::NoSendmail(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/sendmail"));
    }
}
