//! A tiny HTTP/1.1 file server on 127.0.0.1 for the download tests: one
//! request per connection, `Range: bytes=N-` support, and a few faults to
//! simulate. It stops itself when dropped or after 60 s, whichever is first.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server misbehaves, if at all.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Serves files and ranges correctly.
    Normal,
    /// Answers every request with the whole file (status 200).
    IgnoreRange,
    /// Like `Normal`, but the first response stops after this many body bytes
    /// (its headers still announce the full length), then the connection drops.
    CutFirstAt(usize),
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request target (path and query).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

/// The running server; dropping it stops it.
pub struct TestServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `files`: a request goes to the first file whose key is a
    /// substring of its target (so keys can match on a query parameter).
    pub fn start(files: Vec<(String, Vec<u8>)>, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (req2, stop2) = (requests.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0usize;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &files, behaviour, served, &req2);
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    files: &[(String, Vec<u8>)],
    behaviour: Behaviour,
    index: usize,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    if let Ok(mut log) = log.lock() {
        log.push(Request {
            target: target.clone(),
            range: range.clone(),
        });
    }
    let Some((_, data)) = files.iter().find(|(k, _)| target.contains(k.as_str())) else {
        let body = b"not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        return stream.shutdown(Shutdown::Write);
    };
    let len = data.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let body: &[u8] = match (start, behaviour) {
        (Some(s), Behaviour::Normal | Behaviour::CutFirstAt(_)) if s >= len => {
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return stream.shutdown(Shutdown::Write);
        }
        (Some(s), Behaviour::Normal | Behaviour::CutFirstAt(_)) => {
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - s
            )?;
            &data[s..]
        }
        _ => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            data
        }
    };
    let body = match behaviour {
        Behaviour::CutFirstAt(k) if index == 0 => &body[..k.min(body.len())],
        _ => body,
    };
    stream.write_all(body)?;
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}
