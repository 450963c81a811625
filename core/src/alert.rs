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
//!
//! `[alert] webhook` is a second, independent path: the same alert POSTed as JSON in the
//! shape the hook expects ([`webhook_payload`]: Slack `{"text"}`, Discord `{"content"}`
//! cut to 2000 characters, an ntfy JSON publish to the server root with the URL's last
//! path segment as topic, or plain JSON). Mail and webhook are tried one after the other
//! and neither waits on the other's failure; [`deliver`] says which reached. The webhook
//! URL is a secret and is never logged (the log says "the webhook (slack)"). [`send`], the
//! call the stages use, returns the mail's result only: a stage's unit may have no network
//! (`PrivateNetwork=yes`), so its webhook attempt is best effort, logged either way, and
//! the `OnFailure=` unit (`cairn-heartbeat alert`) and the heartbeat, which have network,
//! report an undelivered webhook in their exit code.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{Message, SendmailTransport, Transport};

use crate::config::{AlertConfig, Secret, WebhookFormat};
use crate::http::{self, Body, HttpError, HttpOptions};
use crate::stage::{msg, Priority};

/// Discord refuses a `content` longer than this many characters.
pub const DISCORD_MAX: usize = 2000;
/// Slack's and ntfy's messages are cut to this many characters (both accept more, but an
/// alert is read on a phone).
pub const MESSAGE_MAX: usize = 3500;

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

/// Why the webhook did not take the alert (never names the URL).
#[derive(Debug, thiserror::Error)]
#[error("the webhook ({format}) did not take the alert: {source}")]
pub struct WebhookError {
    /// The payload shape, for the message.
    pub format: &'static str,
    /// The HTTP failure.
    #[source]
    pub source: HttpError,
}

/// Which paths an alert took: the mail always, the webhook when one is configured.
#[derive(Debug)]
pub struct Delivery {
    /// The hand-over to sendmail.
    pub mail: Result<(), AlertError>,
    /// The POST to `[alert] webhook`; `None` without one.
    pub webhook: Option<Result<(), WebhookError>>,
}

impl Delivery {
    /// The paths that reached: `["mail", "webhook"]`, `["webhook"]`, `[]`…
    pub fn reached(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.mail.is_ok() {
            r.push("mail");
        }
        if matches!(self.webhook, Some(Ok(()))) {
            r.push("webhook");
        }
        r
    }

    /// Whether anybody was told.
    pub fn any_reached(&self) -> bool {
        !self.reached().is_empty()
    }

    /// Whether every configured path reached.
    pub fn complete(&self) -> bool {
        self.mail.is_ok() && !matches!(self.webhook, Some(Err(_)))
    }

    /// One line for logs: what reached and what did not, and why.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.mail {
            Ok(()) => parts.push("mail handed to the MTA".to_string()),
            Err(e) => parts.push(format!("mail NOT delivered ({e})")),
        }
        match &self.webhook {
            Some(Ok(())) => parts.push("webhook posted".to_string()),
            Some(Err(e)) => parts.push(format!("webhook NOT posted ({})", e.source)),
            None => {}
        }
        parts.join("; ")
    }
}

/// The name of a payload shape, as in `webhook_format`.
pub fn format_name(f: WebhookFormat) -> &'static str {
    match f {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
        WebhookFormat::Discord => "discord",
        WebhookFormat::Ntfy => "ntfy",
    }
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

/// Mail `alert` to every `mail_to` and post it to the webhook, if one is configured (one
/// request, a retry, 10 s each); logs each path's outcome. Returns the mail's result: see
/// the module docs for why the webhook's does not count here ([`deliver`] has both).
pub fn send(cfg: &AlertConfig, alert: &Alert) -> Result<(), AlertError> {
    let opts = HttpOptions::new(crate::config::DEFAULT_PING_TIMEOUT, 1);
    deliver(cfg, alert, &opts).mail
}

/// Mail `alert` and post it to the webhook (with `http`'s timeout and retries), each path
/// independent of the other; logs each outcome (`ALERT_SENT` / `ALERT_UNDELIVERED` with
/// `CAIRN_ALERT_CHANNEL=mail|webhook`) and says which reached.
pub fn deliver(cfg: &AlertConfig, alert: &Alert, http_opts: &HttpOptions) -> Delivery {
    let mail = send_quiet(cfg, alert);
    let to = cfg.mail_to.join(", ");
    let fields = [
        ("CAIRN_ALERT_STAGE", alert.stage.as_str()),
        ("CAIRN_ALERT", alert.verdict.as_str()),
        ("CAIRN_ALERT_CHANNEL", "mail"),
    ];
    match &mail {
        Ok(()) => crate::stage::log_event(
            &msg::ALERT_SENT,
            Priority::Notice,
            &format!("alert mailed to {to}: {}", alert.headline),
            &fields,
        ),
        Err(e) => crate::stage::log_event(
            &msg::ALERT_UNDELIVERED,
            Priority::Err,
            &format!("alert for {to} NOT delivered ({e}): {}", alert.headline),
            &fields,
        ),
    }
    let webhook = cfg.webhook.as_ref().map(|url| {
        let format = format_name(cfg.webhook_format);
        let result = post_webhook(url, cfg.webhook_format, alert, http_opts)
            .map_err(|source| WebhookError { format, source });
        let fields = [
            ("CAIRN_ALERT_STAGE", alert.stage.as_str()),
            ("CAIRN_ALERT", alert.verdict.as_str()),
            ("CAIRN_ALERT_CHANNEL", "webhook"),
        ];
        match &result {
            Ok(()) => crate::stage::log_event(
                &msg::ALERT_SENT,
                Priority::Notice,
                &format!("alert posted to the webhook ({format}): {}", alert.headline),
                &fields,
            ),
            Err(e) => crate::stage::log_event(
                &msg::ALERT_UNDELIVERED,
                Priority::Err,
                &format!("alert NOT posted: {e}: {}", alert.headline),
                &fields,
            ),
        }
        result
    });
    Delivery { mail, webhook }
}

fn post_webhook(
    url: &Secret,
    format: WebhookFormat,
    alert: &Alert,
    opts: &HttpOptions,
) -> Result<(), HttpError> {
    let host = crate::util::hostname();
    let (target, payload) = webhook_payload(format, url.expose(), alert, &host);
    http::post(&Secret::new(target), &Body::json(&payload), opts).map(|_| ())
}

/// Where a webhook alert is POSTed and its JSON body. For ntfy the target is the server
/// root (the URL without its last path segment, which becomes `topic`); for the other
/// shapes it is the URL itself. The target is as secret as the URL.
pub fn webhook_payload(
    format: WebhookFormat,
    url: &str,
    alert: &Alert,
    host: &str,
) -> (String, serde_json::Value) {
    let subject = alert.subject(host);
    match format {
        WebhookFormat::Json => (
            url.to_string(),
            serde_json::json!({
                "stage": alert.stage,
                "verdict": alert.verdict,
                "headline": alert.headline,
                "body": alert.body,
                "host": host,
                "run_id": alert.run_id,
            }),
        ),
        WebhookFormat::Slack => {
            let text = format!(
                "*{}*\n{}",
                slack_escape(&subject),
                slack_escape(&alert.body)
            );
            (
                url.to_string(),
                serde_json::json!({ "text": truncate(&text, MESSAGE_MAX) }),
            )
        }
        WebhookFormat::Discord => {
            let text = format!("**{subject}**\n{}", alert.body);
            (
                url.to_string(),
                serde_json::json!({ "content": truncate(&text, DISCORD_MAX) }),
            )
        }
        WebhookFormat::Ntfy => {
            let (root, topic) = ntfy_root_and_topic(url);
            let (priority, tag) = ntfy_priority(&alert.verdict);
            (
                root,
                serde_json::json!({
                    "topic": topic,
                    "title": truncate(&subject, 250),
                    "message": truncate(&alert.body, MESSAGE_MAX),
                    "priority": priority,
                    "tags": [tag, "cairn", alert.stage],
                }),
            )
        }
    }
}

/// ntfy's priority (1–5) and an emoji tag for a verdict.
fn ntfy_priority(verdict: &str) -> (u8, &'static str) {
    match verdict {
        "DOWN" | "MISMATCH" | "UNTRUSTED" => (5, "sos"),
        "FAILED" => (4, "rotating_light"),
        "STALE" => (4, "hourglass"),
        "WARNING" => (3, "warning"),
        _ => (3, "information_source"),
    }
}

/// An ntfy topic URL `https://ntfy.example/sub/topic?auth=…` split into the server root
/// `https://ntfy.example/sub/?auth=…` (JSON publishing goes there) and the topic; a URL
/// without a path segment publishes to the topic `cairn`.
pub fn ntfy_root_and_topic(url: &str) -> (String, String) {
    let (before_query, query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let scheme_end = before_query.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = before_query[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(before_query.len());
    let authority = &before_query[..path_start];
    let path = before_query[path_start..].trim_end_matches('/');
    match path.rfind('/') {
        Some(i) if i + 1 < path.len() => (
            format!("{authority}{}/{query}", &path[..i]),
            path[i + 1..].to_string(),
        ),
        _ => (format!("{authority}/{query}"), "cairn".to_string()),
    }
}

/// Slack's three control characters in text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
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
    let by_sendmail = if cfg.sendmail.exists() {
        SendmailTransport::new_with_command(&cfg.sendmail)
            .send(&message)
            .map_err(|e| AlertError::Send {
                program,
                detail: e.to_string(),
            })
    } else {
        Err(AlertError::NoSendmail(program))
    };
    match by_sendmail {
        Ok(()) => Ok(()),
        // A sandboxed unit (NoNewPrivileges) cannot run the MTA's set-user-ID sendmail;
        // the same local MTA usually listens on the loopback SMTP port: hand it over
        // there. Nothing leaves the host; when that fails too, the sendmail error stands.
        Err(first) => match cfg
            .smtp
            .ok_or_else(|| "smtp = no".to_string())
            .and_then(|a| smtp_local(&message, &host, a))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                crate::stage::log(
                    crate::stage::Priority::Debug,
                    &format!("the local MTA's SMTP port did not take the mail either: {e}"),
                );
                Err(first)
            }
        },
    }
}

/// Plain SMTP to the local MTA's loopback listener (no TLS: the loopback never leaves
/// the host), with a short timeout.
fn smtp_local(message: &Message, host: &str, at: std::net::SocketAddr) -> Result<(), String> {
    use lettre::transport::smtp::extension::ClientId;
    use lettre::SmtpTransport;
    let t = SmtpTransport::builder_dangerous(at.ip().to_string())
        .port(at.port())
        .hello_name(ClientId::Domain(host.to_string()))
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    t.send(message).map(|_| ()).map_err(|e| e.to_string())
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
            smtp: None,
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

    fn sample() -> Alert {
        Alert {
            stage: "snapshot".into(),
            verdict: "FAILED".into(),
            headline: "the backup failed".into(),
            body: "line one <b>&\nline two".into(),
            run_id: Some("0123abcd".into()),
        }
    }

    #[test]
    fn webhook_payloads_have_the_documented_shapes() {
        let a = sample();
        let (url, v) = webhook_payload(WebhookFormat::Json, "https://h/x", &a, "db1");
        assert_eq!(url, "https://h/x");
        assert_eq!(
            v,
            serde_json::json!({"stage": "snapshot", "verdict": "FAILED",
                "headline": "the backup failed", "body": a.body, "host": "db1",
                "run_id": "0123abcd"})
        );
        let (_, v) = webhook_payload(WebhookFormat::Slack, "https://hooks.slack.com/x", &a, "db1");
        let text = v["text"].as_str().unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert!(text.starts_with("*[cairn] db1: snapshot FAILED: the backup failed*\n"));
        assert!(text.contains("&lt;b&gt;&amp;"), "{text}");
        let (_, v) = webhook_payload(
            WebhookFormat::Discord,
            "https://discord.com/api/webhooks/1/t",
            &a,
            "db1",
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert!(v["content"]
            .as_str()
            .unwrap()
            .starts_with("**[cairn] db1: snapshot FAILED"));
        let (root, v) = webhook_payload(
            WebhookFormat::Ntfy,
            "https://ntfy.sh/backups-db1",
            &a,
            "db1",
        );
        assert_eq!(root, "https://ntfy.sh/");
        assert_eq!(v["topic"], "backups-db1");
        assert_eq!(v["priority"], 4);
        assert_eq!(
            v["title"],
            "[cairn] db1: snapshot FAILED: the backup failed"
        );
        assert_eq!(v["message"], a.body.as_str());
        assert_eq!(
            v["tags"],
            serde_json::json!(["rotating_light", "cairn", "snapshot"])
        );
    }

    #[test]
    fn discord_content_is_cut_to_2000_characters() {
        let mut a = sample();
        a.body = "é".repeat(5000);
        let (_, v) = webhook_payload(WebhookFormat::Discord, "https://d/x", &a, "h");
        let c = v["content"].as_str().unwrap();
        assert_eq!(c.chars().count(), DISCORD_MAX);
        assert!(c.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn ntfy_root_keeps_sub_path_credentials_and_query() {
        assert_eq!(
            ntfy_root_and_topic("https://u:p@ntfy.example:8080/sub/topic?auth=tok"),
            (
                "https://u:p@ntfy.example:8080/sub/?auth=tok".into(),
                "topic".into()
            )
        );
        assert_eq!(
            ntfy_root_and_topic("http://127.0.0.1:9/alerts/"),
            ("http://127.0.0.1:9/".into(), "alerts".into())
        );
        assert_eq!(
            ntfy_root_and_topic("https://ntfy.example"),
            ("https://ntfy.example/".into(), "cairn".into())
        );
    }

    #[test]
    fn delivery_says_which_path_reached() {
        let d = Delivery {
            mail: Err(AlertError::NoSendmail("/x".into())),
            webhook: Some(Ok(())),
        };
        assert_eq!(d.reached(), ["webhook"]);
        assert!(d.any_reached() && !d.complete());
        assert!(
            d.describe().contains("mail NOT delivered"),
            "{}",
            d.describe()
        );
        let d = Delivery {
            mail: Ok(()),
            webhook: None,
        };
        assert!(d.complete());
        assert_eq!(d.reached(), ["mail"]);
    }
}
