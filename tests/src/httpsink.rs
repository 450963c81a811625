//! A tiny real HTTP server for the heartbeat and webhook tests: it listens on
//! `127.0.0.1:<free port>`, records the method, path, headers and body of every
//! request, and answers `200 OK` — or the status a test set for a path prefix
//! ([`HttpSink::answer`]), to make a ping or a webhook fail on demand.
//!
//! Design choice: std's `TcpListener`, one thread per connection, HTTP/1.1 with
//! `Content-Length` or chunked bodies, `Connection: close` on every answer (so a
//! client never reuses a connection the sink is about to drop). No HTTP crate:
//! what is under test is the client, and this is the simplest server a real
//! client talks to. Dropping the sink stops it.
//!
//! [`HttpSink::start_in_netns`] listens inside another network namespace (a booted
//! test container's, which has only its own loopback): the listening socket is made by a
//! thread that first joins that namespace, and a socket stays in the namespace it was
//! made in, so the sink is on the container's `127.0.0.1` while the test reads its
//! requests in-process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `POST`, `GET`…
    pub method: String,
    /// The request target: path and query (`/ping/abc/fail`).
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                self.text()
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Answers = Arc<Mutex<Vec<(String, u16)>>>;

/// The server; see the module docs.
pub struct HttpSink {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    answers: Answers,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The process whose network namespace the listener is in, if not ours.
    netns: Option<i32>,
}

impl HttpSink {
    /// Listen on a free loopback port.
    pub fn start() -> HttpSink {
        Self::serve_on(
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
            None,
        )
    }

    /// Listen on a free port of the loopback of process `pid`'s network namespace
    /// (e.g. [`crate::container::Container::leader_pid`]).
    pub fn start_in_netns(pid: i32) -> HttpSink {
        let listener = crate::netns::run_in(pid, || TcpListener::bind("127.0.0.1:0"))
            .expect("join the network namespace")
            .expect("bind 127.0.0.1:0 in the namespace");
        Self::serve_on(listener, Some(pid))
    }

    fn serve_on(listener: TcpListener, netns: Option<i32>) -> HttpSink {
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers: Answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, answers, stop) = (requests.clone(), answers.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, answers) = (requests.clone(), answers.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, &requests, &answers);
                    });
                }
            })
        };
        HttpSink {
            addr,
            requests,
            answers,
            stop,
            thread: Some(thread),
            netns,
        }
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answer `status` to requests whose path starts with `prefix` (the latest rule that
    /// matches wins; the default is 200).
    pub fn answer(&self, prefix: &str, status: u16) {
        self.answers
            .lock()
            .unwrap()
            .push((prefix.to_string(), status));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests whose path is exactly `path`.
    pub fn to_path(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Wait until a request satisfies `pred`; return it. The error lists what came.
    pub fn wait_for(&self, pred: impl Fn(&Request) -> bool, timeout: Duration) -> Result<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {} ({} bytes)", r.method, r.path, r.body.len()))
                    .collect();
                bail!("no matching request within {timeout:?}; received: {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a request to exactly `path`.
    pub fn wait_for_path(&self, path: &str, timeout: Duration) -> Result<Request> {
        self.wait_for(|r| r.path == path, timeout)
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, from its namespace. When that namespace is gone (the
        // container stopped), nothing can connect: leave the thread be.
        let addr = self.addr;
        let woken = match self.netns {
            None => TcpStream::connect(addr).is_ok(),
            Some(pid) => {
                crate::netns::run_in(pid, move || TcpStream::connect(addr).is_ok()).unwrap_or(false)
            }
        };
        if let Some(t) = self.thread.take() {
            if woken {
                let _ = t.join();
            }
        }
    }
}

fn serve(
    conn: TcpStream,
    requests: &Mutex<Vec<Request>>,
    answers: &Answers,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    let status = answers
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .map(|(_, s)| *s)
        .unwrap_or(200);
    requests.lock().unwrap().push(Request {
        method,
        path,
        headers,
        body,
    });
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
        if status < 400 { "OK" } else { "Error" }
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(url_port: u16, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", url_port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn records_requests_and_answers_the_status_set_for_a_path() {
        let sink = HttpSink::start();
        sink.answer("/bad", 500);
        assert!(post(sink.port(), "/ok", "hello").starts_with("HTTP/1.1 200"));
        assert!(post(sink.port(), "/bad/x", "").starts_with("HTTP/1.1 500"));
        let r = sink.wait_for_path("/ok", Duration::from_secs(5)).unwrap();
        assert_eq!((r.method.as_str(), r.text().as_str()), ("POST", "hello"));
        assert_eq!(r.header("Host"), Some("x"));
        assert_eq!(sink.to_path("/bad/x").len(), 1);
        assert!(sink
            .wait_for_path("/never", Duration::from_millis(50))
            .is_err());
    }
}
