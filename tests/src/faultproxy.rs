//! A fault-injecting HTTP proxy between cairn and a real S3 server, for the upload
//! tests: a test double at the one boundary that cannot be made to misbehave on demand
//! here (the network). Each request is read whole from the client, then a [`Plan`]
//! decides: pass it to the server, answer `503 SlowDown` or `500 InternalError` as S3
//! does, reset the connection halfway through the request body, or pass it over a slow
//! link. Every connection carries one request (`Connection: close`), so a reset or an
//! error never poisons a pooled connection the client reuses.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and its answer.
    Pass,
    /// Answer `503 Slow Down` with S3's `SlowDown` error body.
    SlowDown,
    /// Answer `500 Internal Server Error` with S3's `InternalError` body.
    InternalError,
    /// Read half of the request body, then reset the connection (RST).
    Reset,
    /// Answer `403 Forbidden` with S3's `AccessDenied`, as a bucket under Object Lock
    /// answers the delete of a locked object version.
    AccessDenied,
    /// Forward it, both ways at this many bytes per second.
    Slow(u64),
    /// Forward it with one byte of its body flipped (the headers, checksums among them,
    /// unchanged): the server must refuse it.
    Corrupt,
}

/// What a [`Plan`] sees of a request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Its body length.
    pub body_len: usize,
    /// How many requests came before this one (0-based).
    pub seq: u64,
}

/// Decides each request's fate.
pub type Plan = Box<dyn FnMut(&Request) -> Fault + Send>;

/// Counts of what happened.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Requests seen.
    pub requests: u64,
    /// Faults injected, by kind (`SlowDown`, `InternalError`, `AccessDenied`, `Reset`,
    /// `Slow`, `Corrupt`).
    pub injected: HashMap<&'static str, u64>,
}

struct Shared {
    plan: Mutex<Plan>,
    stats: Mutex<Stats>,
    stop: AtomicBool,
}

/// A running proxy on 127.0.0.1.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free port; forward to `upstream`; pass everything until a plan is set.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(Box::new(|_| Fault::Pass)),
            stats: Mutex::new(Stats::default()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &s);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give cairn.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace the plan.
    pub fn set_plan(&self, plan: impl FnMut(&Request) -> Fault + Send + 'static) {
        *self.shared.plan.lock().unwrap() = Box::new(plan);
    }

    /// What happened so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read until `\r\n\r\n`; returns (head, bytes already read past it).
fn read_head(s: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok(Some((buf, rest)));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("request head too large"));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with `Connection: close` in place of any Connection header.
fn close_head(head: &str) -> String {
    let mut out = String::new();
    for (i, l) in head.trim_end_matches("\r\n").split("\r\n").enumerate() {
        if i > 0 && l.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn s3_error(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>cairn-faultproxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn write_slow(w: &mut TcpStream, data: &[u8], rate: Option<u64>) -> io::Result<()> {
    match rate {
        None => w.write_all(data),
        Some(rate) => {
            // 20 slices a second.
            let step = ((rate / 20).max(1)) as usize;
            for c in data.chunks(step) {
                w.write_all(c)?;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    }
}

/// SO_LINGER 0: closing sends an RST instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, s: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some((head, mut body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut first = head.split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let seq = {
        let mut st = s.stats.lock().unwrap();
        st.requests += 1;
        st.requests - 1
    };
    let req = Request {
        method,
        target,
        body_len: len,
        seq,
    };
    let fault = (s.plan.lock().unwrap())(&req);
    let count = |name: &'static str| {
        *s.stats.lock().unwrap().injected.entry(name).or_default() += 1;
    };
    if fault == Fault::Reset {
        count("Reset");
        // Half the body, then an RST: the client sees the connection die mid-upload.
        let mut chunk = vec![0u8; 8192];
        while body.len() < len / 2 {
            let n = client.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        set_linger_zero(&client);
        drop(client);
        return Ok(());
    }
    // The whole body.
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < len {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    match fault {
        Fault::SlowDown => {
            count("SlowDown");
            client.write_all(&s3_error(
                "503 Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            ))?;
            return client.shutdown(Shutdown::Both);
        }
        Fault::AccessDenied => {
            count("AccessDenied");
            client.write_all(&s3_error(
                "403 Forbidden",
                "AccessDenied",
                "Access Denied because object protected by object lock.",
            ))?;
            return client.shutdown(Shutdown::Both);
        }
        Fault::InternalError => {
            count("InternalError");
            client.write_all(&s3_error(
                "500 Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))?;
            return client.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    if fault == Fault::Corrupt && !body.is_empty() {
        count("Corrupt");
        let mid = body.len() / 2;
        body[mid] ^= 0x01;
    }
    let rate = match fault {
        Fault::Slow(r) => {
            count("Slow");
            Some(r)
        }
        _ => None,
    };
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    up.write_all(close_head(&head).as_bytes())?;
    write_slow(&mut up, &body, rate)?;
    // The answer, whole (the server closes: Connection: close), with its head rewritten.
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => {
            let h = String::from_utf8_lossy(&answer[..i + 4]).into_owned();
            client.write_all(close_head(&h).as_bytes())?;
            write_slow(&mut client, &answer[i + 4..], rate)?;
        }
        None => client.write_all(&answer)?,
    }
    client.shutdown(Shutdown::Both)
}
