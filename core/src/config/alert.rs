//! `[alert]`: who is told when something fails, and through which local MTA.
//!
//! Design: alerts go through the local mail system (`sendmail`), which queues a message
//! when the network is down, so the addresses are checked here for the shape an MTA
//! accepts (`user@domain`) and a bare local name (`root`) is taken as `root@localhost`,
//! which every local-only MTA delivers. The sendmail binary is configurable because some
//! hosts keep theirs elsewhere; its existence is checked when a mail is sent, so a missing
//! MTA is reported as an undelivered alert (exit 5), not as a configuration error.

use std::path::PathBuf;

use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "alert",
    instances: false,
    keys: &[
        KeySpec::plain("mail_to"),
        KeySpec::plain("mail_from"),
        KeySpec::plain("sendmail"),
        KeySpec::plain("smtp"),
        KeySpec::secret("webhook"),
        KeySpec::plain("webhook_format"),
    ],
    example: "[alert]\nmail_to = root@localhost\n",
};

/// The sendmail binary used when `sendmail` is not set.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// `[alert]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// Recipients, each `user@domain`. Required, at least one.
    pub mail_to: Vec<String>,
    /// Sender; `None`: `cairn@<host name>`.
    pub mail_from: Option<String>,
    /// The sendmail-compatible program the mail is handed to.
    pub sendmail: PathBuf,
    /// The local MTA's SMTP listener, tried when sendmail cannot be run (a sandboxed unit
    /// cannot run a set-user-ID sendmail); None: `smtp = no`.
    pub smtp: Option<std::net::SocketAddr>,
    /// A webhook that gets every alert as a JSON POST too (secret: the URL is its key).
    pub webhook: Option<super::Secret>,
    /// The payload shape of `webhook`.
    pub webhook_format: WebhookFormat,
}

/// The JSON shape a webhook expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"stage", "verdict", "headline", "body", "host", "run_id"}`.
    Json,
    /// Slack's incoming webhooks: `{"text": …}`.
    Slack,
    /// Discord's webhooks: `{"content": …}` (at most 2000 characters).
    Discord,
    /// ntfy: a JSON publish with `topic`, `title`, `message`, `priority`, `tags`.
    Ntfy,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<AlertConfig, ConfigError> {
    let to = s.list_of("mail_to", |a| address(&a))?;
    let mail_to = s.required(
        "mail_to",
        to.filter(|t| !t.is_empty()),
        "mail_to = root@localhost",
    )?;
    let webhook = s.secret("webhook")?;
    if let Some(w) = &webhook {
        super::heartbeat::http_url(w.expose()).map_err(|m| s.invalid("webhook", m))?;
    }
    let format = s.parsed("webhook_format", |v| match v {
        "json" => Ok(WebhookFormat::Json),
        "slack" => Ok(WebhookFormat::Slack),
        "discord" => Ok(WebhookFormat::Discord),
        "ntfy" => Ok(WebhookFormat::Ntfy),
        _ => Err(format!(
            "`{v}` is not a webhook format; write json, slack, discord or ntfy"
        )),
    })?;
    // Unset: guessed from the webhook's host.
    let webhook_format = format.unwrap_or_else(|| match webhook.as_ref().map(|w| w.expose()) {
        Some(u) if u.contains("hooks.slack.com") => WebhookFormat::Slack,
        Some(u)
            if u.contains("discord.com/api/webhooks")
                || u.contains("discordapp.com/api/webhooks") =>
        {
            WebhookFormat::Discord
        }
        Some(u) if u.contains("ntfy") => WebhookFormat::Ntfy,
        _ => WebhookFormat::Json,
    });
    let smtp = s
        .parsed("smtp", |v| {
            if v == "no" {
                return Ok(None);
            }
            let a: std::net::SocketAddr = v.parse().map_err(|_| {
                format!("`{v}` is not an address:port; write e.g. `smtp = 127.0.0.1:25`, or `no`")
            })?;
            if !a.ip().is_loopback() {
                return Err(format!(
                    "`{v}` is not on this host: alerts go to the local MTA only (a loopback \
                     address such as 127.0.0.1 or [::1])"
                ));
            }
            Ok(Some(a))
        })?
        .unwrap_or(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 25))));
    Ok(AlertConfig {
        smtp,
        webhook,
        webhook_format,
        mail_to,
        mail_from: s.parsed("mail_from", address)?,
        sendmail: s
            .absolute_path("sendmail")?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SENDMAIL)),
    })
}

/// `user@domain`, or a bare local name taken as `name@localhost`.
pub(crate) fn address(v: &str) -> Result<String, String> {
    let full = if v.contains('@') {
        v.to_string()
    } else {
        format!("{v}@localhost")
    };
    match full.parse::<lettre::Address>() {
        Ok(_) => Ok(full),
        Err(_) => Err(format!(
            "`{v}` is not a mail address; write `user@domain`, or a local user name \
             such as `root` (delivered as `root@localhost`)"
        )),
    }
}
