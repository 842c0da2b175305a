//! Resumable, recorded HTTP downloads for the full data sets.
//!
//! - A download goes to `<file>.part` first; a rerun asks for the rest with an
//!   HTTP `Range` request and appends (a server that ignores the range sends
//!   the whole file, which then replaces the part). When the server states the
//!   length (`Content-Length` / `Content-Range`), a short file is an error that
//!   a rerun resumes; only a complete file is renamed into place.
//! - The hosts publish no checksums, so none can be checked on the first
//!   download. Instead `manifest.json`, next to the files, records the URL,
//!   size and sha256 of what was downloaded; every later run verifies the
//!   files against it and refuses to reuse a file that changed (delete it, or
//!   pass `--force`, to download again).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The name of the record of downloaded files in each data set's folder.
pub const MANIFEST: &str = "manifest.json";

/// An HTTP agent with timeouts suited to large files on slow links: a bounded
/// connect, and a bound on each read rather than on the whole transfer.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .user_agent("ntk-rs xtask (https://github.com/ntk-rs/ntk-rs)")
        .build()
        .into()
}

/// One file's record in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it was downloaded from.
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// The `manifest.json` of one download folder: file name → [`Entry`].
pub struct Manifest {
    path: PathBuf,
    files: Map<String, Value>,
}

impl Manifest {
    /// Loads `dir/manifest.json`, or an empty manifest if there is none.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(MANIFEST);
        let files = match fs::read(&path) {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
                match v.get("files") {
                    Some(Value::Object(m)) => m.clone(),
                    _ => return Err(format!("{} has no \"files\" object", path.display())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self { path, files })
    }

    /// The record of `name`, if there is a well-formed one.
    pub fn get(&self, name: &str) -> Option<Entry> {
        let e = self.files.get(name)?;
        Some(Entry {
            url: e.get("url")?.as_str()?.to_string(),
            size: e.get("size")?.as_u64()?,
            sha256: e.get("sha256")?.as_str()?.to_string(),
        })
    }

    /// The recorded file names.
    pub fn names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Records `name` and writes the manifest (via a temporary file).
    pub fn record(&mut self, name: &str, entry: &Entry) -> Result<(), String> {
        self.files.insert(
            name.to_string(),
            json!({ "url": entry.url, "size": entry.size, "sha256": entry.sha256 }),
        );
        self.save()
    }

    /// Forgets `name` and writes the manifest.
    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        if self.files.remove(name).is_some() {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&json!({
            "note": "size and sha256 of each file as downloaded by `cargo xtask data`; \
                     the hosts publish no checksums, so later runs verify against this record",
            "files": self.files,
        }))
        .map_err(|e| e.to_string())?;
        write_atomic(&self.path, text.as_bytes())
    }
}

/// Writes `bytes` to `path` through `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = with_suffix(path, ".tmp");
    fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}

/// Size and lowercase hex sha256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        size,
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    ))
}

/// Checks every file recorded in `dir/manifest.json` against its size and
/// sha256; returns how many were checked.
pub fn verify_manifest(dir: &Path) -> Result<usize, String> {
    let manifest = Manifest::load(dir)?;
    let names = manifest.names();
    for name in &names {
        let rec = manifest.get(name).ok_or_else(|| {
            format!(
                "{}: malformed record for {name}",
                dir.join(MANIFEST).display()
            )
        })?;
        let (size, sha256) = hash_file(&dir.join(name))?;
        if (size, sha256.as_str()) != (rec.size, rec.sha256.as_str()) {
            return Err(format!(
                "{} changed since it was downloaded (size {size} vs {}, sha256 {sha256} vs {})",
                dir.join(name).display(),
                rec.size,
                rec.sha256
            ));
        }
    }
    Ok(names.len())
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file was there and matched the manifest.
    Verified,
    /// The file was there without a record; it was hashed and recorded.
    Recorded,
    /// The file was downloaded (possibly resuming a partial download).
    Downloaded,
}

/// Makes sure `dir/name` holds the file at `url`: reuses it when it matches
/// the manifest, downloads it (resuming) otherwise, and records what it got.
/// With `force`, deletes any earlier copy and its record first.
pub fn ensure(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    name: &str,
    force: bool,
) -> Result<(Entry, Outcome), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dest = dir.join(name);
    let mut manifest = Manifest::load(dir)?;
    if force {
        for p in [&dest, &with_suffix(&dest, ".part")] {
            if p.exists() {
                fs::remove_file(p).map_err(|e| format!("cannot delete {}: {e}", p.display()))?;
            }
        }
        manifest.remove(name)?;
    }
    if dest.is_file() {
        let (size, sha256) = hash_file(&dest)?;
        return match manifest.get(name) {
            Some(rec) if rec.size == size && rec.sha256 == sha256 => Ok((rec, Outcome::Verified)),
            Some(rec) => Err(format!(
                "{} does not match its record in {}: size {size} vs {}, sha256 {sha256} vs {}; \
                 delete it (or pass --force) to download it again",
                dest.display(),
                dir.join(MANIFEST).display(),
                rec.size,
                rec.sha256
            )),
            None => {
                let entry = Entry {
                    url: url.to_string(),
                    size,
                    sha256,
                };
                manifest.record(name, &entry)?;
                Ok((entry, Outcome::Recorded))
            }
        };
    }
    fetch(agent, url, &dest)?;
    let (size, sha256) = hash_file(&dest)?;
    let entry = Entry {
        url: url.to_string(),
        size,
        sha256,
    };
    manifest.record(name, &entry)?;
    Ok((entry, Outcome::Downloaded))
}

/// Downloads `url` to `dest`, resuming `dest.part` if there is one.
pub fn fetch(agent: &ureq::Agent, url: &str, dest: &Path) -> Result<(), String> {
    let part = with_suffix(dest, ".part");
    let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
        eprintln!("resuming {url} at byte {have}");
    } else {
        eprintln!("downloading {url}");
    }
    let mut resp = req.call().map_err(|e| request_error(url, e))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_range = header("content-range");
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let (start, total) = match status {
        200 => (0, content_length),
        206 => {
            let (start, total) = content_range
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    format!(
                        "{url}: 206 response without a usable Content-Range ({content_range:?})"
                    )
                })?;
            if start != have {
                return Err(format!(
                    "{url}: asked for bytes from {have}, server sent from {start}; \
                     delete {} and rerun",
                    part.display()
                ));
            }
            (start, total.or(content_length.map(|n| start + n)))
        }
        416 if have > 0 => {
            // Nothing left to send: complete if the server's length says so.
            let total = content_range
                .as_deref()
                .and_then(|v| v.trim().strip_prefix("bytes */"))
                .and_then(|t| t.parse::<u64>().ok());
            if total == Some(have) {
                return rename(&part, dest);
            }
            fs::remove_file(&part).map_err(|e| format!("cannot delete {}: {e}", part.display()))?;
            return Err(format!(
                "{url}: the partial download ({have} bytes) does not fit the server's file \
                 ({total:?} bytes); it was deleted, rerun to download from the start"
            ));
        }
        _ => {
            return Err(format!(
                "{url}: HTTP {status} {}",
                resp.status().canonical_reason().unwrap_or("")
            ));
        }
    };
    let mut file = if start == 0 {
        File::create(&part)
    } else {
        OpenOptions::new().append(true).open(&part)
    }
    .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = start;
    let mut next_report = got + (64 << 20);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "{url}: download interrupted after {got} bytes ({e}); rerun the same command to resume"
                ));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        got += n as u64;
        if got >= next_report {
            match total {
                Some(t) => eprintln!("  {} / {} MiB", got >> 20, t >> 20),
                None => eprintln!("  {} MiB", got >> 20),
            }
            next_report += 64 << 20;
        }
    }
    file.flush()
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    drop(file);
    if let Some(t) = total
        && got != t
    {
        return Err(format!(
            "{url}: got {got} of {t} bytes; rerun the same command to resume"
        ));
    }
    rename(&part, dest)
}

/// The error message for a request that got no response: almost always no
/// network, so say so and say what still works.
fn request_error(url: &str, e: ureq::Error) -> String {
    let offline = matches!(
        e,
        ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
    );
    if offline {
        format!(
            "cannot reach {url} ({e}).\n\
             This machine seems to be offline or the host is unreachable. Nothing was lost: \
             the experiments run on the shipped data in data/ without this download, and a \
             partial download resumes when you rerun the command with the network up."
        )
    } else {
        format!("{url}: {e}")
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    fs::rename(from, to)
        .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testserver::{Behaviour, TestServer};

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ntk-xtask-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn interrupted_download_resumes_with_a_range_request() {
        let data = payload(300_000);
        let server = TestServer::start(
            vec![("/f.bin".into(), data.clone())],
            Behaviour::CutFirstAt(100_000),
        );
        let dir = temp_dir("resume");
        let url = format!("{}/f.bin", server.base());
        let agent = agent();

        let err = ensure(&agent, &url, &dir, "f.bin", false).unwrap_err();
        assert!(err.contains("rerun"), "{err}");
        assert!(
            !dir.join("f.bin").exists(),
            "an incomplete file is never put in place"
        );
        assert_eq!(fs::metadata(dir.join("f.bin.part")).unwrap().len(), 100_000);

        let (entry, outcome) = ensure(&agent, &url, &dir, "f.bin", false).unwrap();
        assert_eq!(outcome, Outcome::Downloaded);
        assert_eq!(fs::read(dir.join("f.bin")).unwrap(), data);
        assert_eq!(entry.size, 300_000);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].range.as_deref(), Some("bytes=100000-"));

        // Reuse verifies against the manifest without a request.
        let (again, outcome) = ensure(&agent, &url, &dir, "f.bin", false).unwrap();
        assert_eq!((again, outcome), (entry.clone(), Outcome::Verified));
        assert_eq!(server.requests().len(), 2);

        // A changed file is refused, --force downloads it again.
        fs::write(dir.join("f.bin"), b"tampered").unwrap();
        let err = ensure(&agent, &url, &dir, "f.bin", false).unwrap_err();
        assert!(err.contains("does not match its record"), "{err}");
        assert!(verify_manifest(&dir).unwrap_err().contains("changed"));
        let (forced, outcome) = ensure(&agent, &url, &dir, "f.bin", true).unwrap();
        assert_eq!((forced, outcome), (entry, Outcome::Downloaded));
        assert_eq!(verify_manifest(&dir).unwrap(), 1);
        fs::remove_file(dir.join("f.bin")).unwrap();
        assert!(
            verify_manifest(&dir).is_err(),
            "a recorded file that is gone"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_server_ignoring_ranges_restarts_the_file() {
        let data = payload(50_000);
        let server = TestServer::start(
            vec![("/g.bin".into(), data.clone())],
            Behaviour::IgnoreRange,
        );
        let dir = temp_dir("norange");
        fs::write(dir.join("g.bin.part"), b"stale partial bytes").unwrap();
        let url = format!("{}/g.bin", server.base());
        ensure(&agent(), &url, &dir, "g.bin", false).unwrap();
        assert_eq!(fs::read(dir.join("g.bin")).unwrap(), data);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_errors_and_unreachable_hosts_are_clear() {
        let server = TestServer::start(vec![], Behaviour::Normal);
        let dir = temp_dir("errors");
        let err = ensure(
            &agent(),
            &format!("{}/nope", server.base()),
            &dir,
            "nope",
            false,
        )
        .unwrap_err();
        assert!(err.contains("HTTP 404"), "{err}");

        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = ensure(
            &agent(),
            &format!("http://127.0.0.1:{port}/x"),
            &dir,
            "x",
            false,
        )
        .unwrap_err();
        assert!(err.contains("offline"), "{err}");
        assert!(err.contains("shipped data"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
