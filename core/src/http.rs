//! Outgoing HTTP for the dead-man's-switch pings and the `[alert] webhook`: one POST,
//! bounded in time, retried a bounded number of times, and never naming its URL.
//!
//! Design: both URLs are secrets (the check's UUID, the webhook's token are in them), so
//! they live in [`Secret`]s, and no error, log line or panic message here repeats them:
//! reqwest's errors are stripped of their URL before they are formatted. Only `http` and
//! `https` are spoken — the config refuses anything else at load time and this module
//! checks again — and redirects are not followed: a POST that is redirected loses its
//! body on the way, and a check or hook that answers 3xx is misconfigured, which the
//! error says. One request may take at most `timeout` (connect included); transport
//! errors, 5xx and 429 are retried up to `retries` times with exponential backoff (1 s,
//! 2 s, 4 s…, at most 30 s), other 4xx are final at once. reqwest's blocking client (with
//! rustls, the same TLS stack object_store uses for S3) runs its own small runtime thread,
//! so nothing here needs an async context. Proxies named by `HTTPS_PROXY`/`HTTP_PROXY`
//! are honoured, as administrators behind one expect.

use std::time::Duration;

use crate::config::Secret;

/// How long one request may take, and how often a failed one is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Timeout of one request, connect included.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first backoff; doubled on each retry, at most [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl HttpOptions {
    /// `timeout` and `retries` with the default backoff (1 s, doubling).
    pub fn new(timeout: Duration, retries: u32) -> HttpOptions {
        HttpOptions {
            timeout,
            retries,
            backoff: Duration::from_secs(1),
        }
    }

    /// The wait before retry number `n` (0-based).
    pub fn backoff_before(&self, n: u32) -> Duration {
        self.backoff
            .checked_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }

    /// The longest a [`post`] with these options can take (all attempts and waits).
    pub fn worst_case(&self) -> Duration {
        let waits: Duration = (0..self.retries).map(|n| self.backoff_before(n)).sum();
        self.timeout * (self.retries + 1) + waits
    }
}

/// Why a POST did not get a 2xx answer. Never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an http or https URL (the value is not shown).
    #[error("not an http:// or https:// URL (only those are used; the value is not shown)")]
    Scheme,
    /// The client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The server answered, but not with success.
    #[error("the server answered HTTP {status}{}{}", reason(*status), attempts_note(*attempts))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// How many requests were made.
        attempts: u32,
    },
    /// No answer: connection, TLS, timeout…
    #[error("{detail}{}", attempts_note(*attempts))]
    Transport {
        /// What went wrong (without the URL).
        detail: String,
        /// How many requests were made.
        attempts: u32,
    },
}

fn reason(status: u16) -> String {
    let hint = match status {
        300..=399 => " (a redirect, not followed: configure the final URL)",
        401 | 403 => " (refused: check the URL's token)",
        404 => " (no such check or hook: check the URL)",
        _ => "",
    };
    let canonical = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    format!("{canonical}{hint}")
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(", after {attempts} attempts")
    } else {
        String::new()
    }
}

/// Whether `url` is `http://` or `https://` with a host and no whitespace (the rule the
/// config applies at load time, checked again before anything is sent).
pub fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// A request body and its type.
#[derive(Debug, Clone)]
pub struct Body {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Body {
    /// `text/plain; charset=utf-8`.
    pub fn text(s: impl Into<String>) -> Body {
        Body {
            content_type: "text/plain; charset=utf-8",
            bytes: s.into().into_bytes(),
        }
    }

    /// `application/json`.
    pub fn json(v: &serde_json::Value) -> Body {
        Body {
            content_type: "application/json",
            bytes: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// POST `body` to `url`; `Ok(status)` on a 2xx answer. See the module docs for timeouts,
/// retries and redirects.
pub fn post(url: &Secret, body: &Body, opts: &HttpOptions) -> Result<u16, HttpError> {
    if !is_http_url(url.expose()) {
        return Err(HttpError::Scheme);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cairn-heartbeat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HttpError::Client(e.without_url().to_string()))?;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let sent = client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, body.content_type)
            .body(body.bytes.clone())
            .send();
        let (error, retry) = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Drain a little of the answer so the connection closes cleanly.
                drop(resp);
                if (200..300).contains(&status) {
                    return Ok(status);
                }
                let retry = status >= 500 || status == 429 || status == 408;
                (
                    HttpError::Status {
                        status,
                        attempts: attempt,
                    },
                    retry,
                )
            }
            Err(e) => (
                HttpError::Transport {
                    detail: transport_detail(e),
                    attempts: attempt,
                },
                true,
            ),
        };
        if !retry || attempt > opts.retries {
            return Err(error);
        }
        std::thread::sleep(opts.backoff_before(attempt - 1));
    }
}

/// A transport error as one line, its URL removed, with its causes.
fn transport_detail(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut parts = vec![kind.to_string()];
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = HttpOptions::new(Duration::from_secs(10), 3);
        assert_eq!(o.backoff_before(0), Duration::from_secs(1));
        assert_eq!(o.backoff_before(1), Duration::from_secs(2));
        assert_eq!(o.backoff_before(2), Duration::from_secs(4));
        assert_eq!(o.backoff_before(10), MAX_BACKOFF);
        assert_eq!(o.backoff_before(u32::MAX), MAX_BACKOFF);
        assert_eq!(o.worst_case(), Duration::from_secs(40 + 7));
    }

    #[test]
    fn only_http_and_https_are_spoken() {
        let opts = HttpOptions::new(Duration::from_secs(1), 0);
        for bad in [
            "ftp://example.org/x",
            "file:///etc/passwd",
            "gopher://h/",
            "http://",
        ] {
            let e = post(&Secret::new(bad), &Body::text("x"), &opts).unwrap_err();
            assert!(matches!(e, HttpError::Scheme), "{bad}: {e}");
            assert!(bad == "http://" || !e.to_string().contains(bad), "{e}");
        }
    }

    /// A listener answering each connection with the next status of `statuses`.
    fn server(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for status in statuses {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Headers, then Content-Length bytes of body.
                loop {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(
                    String::from_utf8_lossy(&got)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string(),
                );
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                s.write_all(resp.as_bytes()).unwrap();
            }
            seen
        });
        (format!("http://{addr}"), h)
    }

    #[test]
    fn server_errors_are_retried_client_errors_are_not() {
        let opts = HttpOptions {
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(10),
        };
        let (base, h) = server(vec![503, 500, 200]);
        let url = Secret::new(format!("{base}/ping/abc"));
        assert_eq!(post(&url, &Body::text("hi"), &opts).unwrap(), 200);
        let seen = h.join().unwrap();
        assert_eq!(seen, vec!["POST /ping/abc HTTP/1.1"; 3]);

        let (base, h) = server(vec![404]);
        let url = Secret::new(format!("{base}/secret-token"));
        let e = post(&url, &Body::text("hi"), &opts).unwrap_err();
        assert!(
            matches!(
                e,
                HttpError::Status {
                    status: 404,
                    attempts: 1
                }
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("secret-token"), "{e}");
        h.join().unwrap();

        let (base, h) = server(vec![302]);
        let e = post(&Secret::new(format!("{base}/x")), &Body::text("hi"), &opts).unwrap_err();
        assert!(e.to_string().contains("redirect"), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn transport_errors_never_name_the_url() {
        // A port nobody listens on (bound, then closed).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = HttpOptions {
            timeout: Duration::from_secs(2),
            retries: 1,
            backoff: Duration::from_millis(10),
        };
        let url = Secret::new(format!("http://127.0.0.1:{port}/very-secret-uuid"));
        let e = post(&url, &Body::text("x"), &opts).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, HttpError::Transport { attempts: 2, .. }),
            "{text}"
        );
        assert!(!text.contains("very-secret-uuid"), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
