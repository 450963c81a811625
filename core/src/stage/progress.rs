//! Progress reporting for long work, shown where the operator is looking.
//!
//! On a terminal it is an `indicatif` bar on stderr (log lines are printed around it);
//! under systemd it is `STATUS=` for `systemctl status`, sent at most once a second; when
//! neither applies it costs two atomic operations per call. `inc` is meant to be called per
//! chunk from any number of threads: a [`Progress`] is a cheap, `Send + Sync` handle and may
//! be cloned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::log::Logger;
use super::notify::{Notifier, NotifyState};

/// Minimum time between two `STATUS=` notifications.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// `last_status_ms` value meaning "never sent".
const NEVER: u64 = u64::MAX;

/// A progress handle: see the module documentation.
#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    what: String,
    total: Option<u64>,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    notifier: Option<Notifier>,
    logger: Option<Arc<Logger>>,
    started: Instant,
    last_status_ms: AtomicU64,
    message: Mutex<String>,
    finished: AtomicBool,
}

impl Progress {
    /// `bar`: draw a terminal bar; `notifier`: send `STATUS=` (only if enabled).
    pub(crate) fn new(
        what: &str,
        total: Option<u64>,
        bar: bool,
        notifier: &Notifier,
        logger: Option<Arc<Logger>>,
    ) -> Progress {
        let bar = bar.then(|| make_bar(what, total));
        if let (Some(bar), Some(logger)) = (&bar, &logger) {
            logger.set_bar(Some(bar.downgrade()));
        }
        Progress {
            inner: Arc::new(Inner {
                what: what.to_owned(),
                total,
                done: AtomicU64::new(0),
                bar,
                notifier: notifier.is_enabled().then(|| notifier.clone()),
                logger,
                started: Instant::now(),
                last_status_ms: AtomicU64::new(NEVER),
                message: Mutex::new(String::new()),
                finished: AtomicBool::new(false),
            }),
        }
    }

    /// A handle that shows nothing (for callers that need a `Progress` but no display).
    pub fn hidden() -> Progress {
        Progress::new("", None, false, &Notifier::default(), None)
    }

    /// Count `bytes` more done.
    pub fn inc(&self, bytes: u64) {
        self.inner.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.inner.bar {
            bar.inc(bytes);
        }
        if self.inner.notifier.is_some() {
            self.maybe_status();
        }
    }

    /// Bytes counted so far.
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// Set the detail shown after the figures (e.g. the current path).
    pub fn set_message(&self, message: &str) {
        if let Some(bar) = &self.inner.bar {
            bar.set_message(message.to_owned());
        }
        if self.inner.notifier.is_some() {
            *self.inner.message.lock().unwrap_or_else(|p| p.into_inner()) = message.to_owned();
            self.maybe_status();
        }
    }

    /// The work is over: leave the final bar on the terminal, send a last `STATUS=`.
    /// Further calls do nothing.
    pub fn finish(&self) {
        if self.inner.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(bar) = &self.inner.bar {
            bar.finish();
            // indicatif leaves the cursor at the end of the final bar: end that line so the
            // next log line starts on its own.
            if !bar.is_hidden() {
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), b"\n");
            }
            if let Some(logger) = &self.inner.logger {
                logger.set_bar(None);
            }
        }
        if let Some(n) = &self.inner.notifier {
            let text = format!("{}: done, {}", self.inner.what, BinaryBytes(self.done()));
            let _ = n.send(&[NotifyState::Status(&text)]);
        }
    }

    /// Send `STATUS=` if the last one is at least [`STATUS_INTERVAL`] old. Only one thread
    /// wins the compare-exchange, so concurrent callers never send twice.
    fn maybe_status(&self) {
        let inner = &self.inner;
        if inner.finished.load(Ordering::Acquire) {
            return;
        }
        let now = u64::try_from(inner.started.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let last = inner.last_status_ms.load(Ordering::Relaxed);
        let interval = STATUS_INTERVAL.as_millis() as u64;
        if last != NEVER && now.saturating_sub(last) < interval {
            return;
        }
        if inner
            .last_status_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let text = self.status_text(now);
        if let Some(n) = &inner.notifier {
            let _ = n.send(&[NotifyState::Status(&text)]);
        }
    }

    /// `reading files: 1.20 GiB of 10.00 GiB (12%), 85.30 MiB/s; /var/lib/x`
    fn status_text(&self, elapsed_ms: u64) -> String {
        let inner = &self.inner;
        let done = self.done();
        let mut text = format!("{}: {}", inner.what, BinaryBytes(done));
        if let Some(total) = inner.total {
            let pct = if total == 0 {
                100
            } else {
                (u128::from(done) * 100 / u128::from(total)).min(100)
            };
            text.push_str(&format!(" of {} ({pct}%)", BinaryBytes(total)));
        }
        if elapsed_ms >= 1000 {
            let rate = u128::from(done) * 1000 / u128::from(elapsed_ms);
            text.push_str(&format!(
                ", {}/s",
                BinaryBytes(u64::try_from(rate).unwrap_or(u64::MAX))
            ));
        }
        let message = inner.message.lock().unwrap_or_else(|p| p.into_inner());
        if !message.is_empty() {
            // STATUS= is one line.
            text.push_str("; ");
            text.extend(
                message
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c }),
            );
        }
        text
    }
}

impl Drop for Inner {
    /// A bar dropped without [`Progress::finish`] stays as it was, on its own line.
    fn drop(&mut self) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.abandon();
            if !bar.is_hidden() {
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), b"\n");
            }
            if let Some(logger) = &self.logger {
                logger.set_bar(None);
            }
        }
    }
}

/// Terminal bar when the total is known.
const BAR_TEMPLATE: &str = "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
                            {binary_bytes_per_sec} eta {eta} {wide_msg}";
/// Terminal spinner when it is not.
const SPINNER_TEMPLATE: &str =
    "{spinner} {prefix} {binary_bytes} {binary_bytes_per_sec} {wide_msg}";

fn make_bar(what: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            BAR_TEMPLATE,
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            SPINNER_TEMPLATE,
        ),
    };
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    if total.is_none() {
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn drain(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn status_is_throttled_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.into_os_string()));
        let p = Progress::new("reading files", Some(4 << 20), false, &n, None);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let p = p.clone();
                s.spawn(move || {
                    for _ in 0..1024 {
                        p.inc(1024);
                    }
                });
            }
        });
        assert_eq!(p.done(), 4 << 20);
        let first = drain(&rx);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].starts_with("STATUS=reading files: "), "{first:?}");

        p.set_message("/etc/x");
        assert!(drain(&rx).is_empty(), "no second status within a second");
        let text = p.status_text(2000);
        assert_eq!(
            text,
            "reading files: 4.00 MiB of 4.00 MiB (100%), 2.00 MiB/s; /etc/x"
        );

        p.finish();
        p.finish();
        assert_eq!(
            drain(&rx),
            vec!["STATUS=reading files: done, 4.00 MiB\n".to_owned()]
        );
        p.inc(1);
        assert!(drain(&rx).is_empty());
    }

    #[test]
    fn bar_templates_are_valid() {
        for t in [BAR_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
        assert!(!BAR_TEMPLATE.contains("  "), "{BAR_TEMPLATE:?}");
    }

    #[test]
    fn silent_without_terminal_or_manager() {
        let p = Progress::hidden();
        p.inc(10);
        p.set_message("x");
        p.finish();
        assert_eq!(p.done(), 10);
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Progress>();
    }
}
