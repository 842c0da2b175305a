//! `cargo xtask data ushcn`: the US Historical Climatology Network subset of
//! NOAA's GHCN-Daily, for the paper's precipitation experiment.
//!
//! Downloads, into `data/downloads/ushcn/`, `ghcnd-stations.txt` (names and
//! coordinates; HCN stations carry `HCN` in columns 77–79) and
//! `ghcnd_hcn.tar.gz` (one `.dly` file per HCN station), recorded in
//! `manifest.json` (see [`crate::download`]), then extracts the `.dly` files
//! to `dly/` and writes `dly/.complete` last. ntk-bench
//! (`data::ushcn`) reads that layout.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::download::{Outcome, ensure};

/// GHCN-Daily's folder at NOAA NCEI.
pub const BASE_URL: &str = "https://www.ncei.noaa.gov/pub/data/ghcn/daily/";
/// The HCN archive.
pub const ARCHIVE: &str = "ghcnd_hcn.tar.gz";
/// The station list.
pub const STATIONS: &str = "ghcnd-stations.txt";
/// The folder of extracted `.dly` files.
pub const DLY_DIR: &str = "dly";
/// Written in [`DLY_DIR`] after a complete extraction.
pub const COMPLETE_MARKER: &str = ".complete";

/// Downloads (or verifies) both files from `base` into `dir` and extracts
/// the archive unless an extraction of this very archive is complete.
pub fn download(base: &str, dir: &Path, force: bool) -> Result<(), String> {
    let agent = crate::download::agent();
    let base = base.trim_end_matches('/');
    let mut fresh = false;
    for name in [STATIONS, ARCHIVE] {
        let (entry, outcome) = ensure(&agent, &format!("{base}/{name}"), dir, name, force)?;
        eprintln!(
            "{name}: {} ({} bytes, sha256 {})",
            match outcome {
                Outcome::Verified => "verified against manifest.json",
                Outcome::Recorded => "found, recorded in manifest.json",
                Outcome::Downloaded => "downloaded, recorded in manifest.json",
            },
            entry.size,
            entry.sha256
        );
        fresh |= outcome != Outcome::Verified;
    }
    let out = dir.join(DLY_DIR);
    if fresh || !out.join(COMPLETE_MARKER).is_file() {
        let n = extract_dly(&dir.join(ARCHIVE), &out)?;
        eprintln!("extracted {n} .dly files to {}", out.display());
    } else {
        eprintln!("{} is complete", out.display());
    }
    let stations = fs::read(dir.join(STATIONS))
        .map_err(|e| format!("cannot read {}: {e}", dir.join(STATIONS).display()))?;
    let hcn: Vec<&[u8]> = stations
        .split(|&b| b == b'\n')
        .filter(|l| l.get(76..79) == Some(b"HCN"))
        .filter_map(|l| l.get(0..11))
        .collect();
    let with_data = hcn
        .iter()
        .filter(|id| {
            out.join(format!("{}.dly", String::from_utf8_lossy(id)))
                .is_file()
        })
        .count();
    eprintln!(
        "{} stations flagged HCN in {STATIONS}, {with_data} of them with a .dly file",
        hcn.len()
    );
    Ok(())
}

/// Extracts the `.dly` files of a `.tar.gz` (flattened: file names only) into
/// `out`, replacing what was there, and writes the completion marker last.
pub fn extract_dly(archive: &Path, out: &Path) -> Result<usize, String> {
    let err = |e: io::Error| {
        format!(
            "{}: {e} (a damaged download? rerun with --force to fetch it again)",
            archive.display()
        )
    };
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let file = File::open(archive).map_err(err)?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut n = 0;
    for entry in tar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(err)?.into_owned();
        // Flatten, and accept only plain station file names: no path tricks.
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let plain = name
            .strip_suffix(".dly")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !plain {
            continue;
        }
        let dest = out.join(name);
        let mut f =
            File::create(&dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        io::copy(&mut entry, &mut f).map_err(err)?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "{}: no .dly files in the archive",
            archive.display()
        ));
    }
    let marker = out.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{n} files\n"))
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::tests::temp_dir;
    use crate::testserver::{Behaviour, TestServer};
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn downloads_verifies_and_extracts() {
        let stations = [
            format!(
                "{:<76}HCN",
                "USC00011084  31.0581  -87.0547   25.9 AL BREWTON 3 SSE"
            ),
            format!(
                "{:<76}   ",
                "USC00099999  31.0000  -87.0000   25.9 AL OTHER"
            ),
        ]
        .join("\n");
        let tgz = archive(&[
            ("ghcnd_hcn/USC00011084.dly", b"dly-one"),
            ("ghcnd_hcn/USC00022222.dly", b"dly-two"),
            ("ghcnd_hcn/readme.txt", b"not a station"),
        ]);
        let server = TestServer::start(
            vec![
                ("/daily/ghcnd-stations.txt".into(), stations.into_bytes()),
                ("/daily/ghcnd_hcn.tar.gz".into(), tgz),
            ],
            Behaviour::Normal,
        );
        let dir = temp_dir("ushcn");
        let base = format!("{}/daily/", server.base());
        download(&base, &dir, false).unwrap();
        assert_eq!(
            fs::read(dir.join("dly/USC00011084.dly")).unwrap(),
            b"dly-one"
        );
        assert!(dir.join("dly/USC00022222.dly").is_file());
        assert!(!dir.join("dly/readme.txt").exists());
        assert!(dir.join("dly").join(COMPLETE_MARKER).is_file());
        assert!(dir.join("manifest.json").is_file());

        // A rerun verifies, doesn't download and doesn't re-extract.
        fs::write(dir.join("dly/extra.dly"), b"").unwrap();
        download(&base, &dir, false).unwrap();
        assert_eq!(server.requests().len(), 2);
        assert!(dir.join("dly/extra.dly").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_archive_without_stations_is_an_error() {
        let dir = temp_dir("ushcn-empty");
        let path = dir.join("a.tar.gz");
        fs::write(&path, archive(&[("x/readme.txt", b"x")])).unwrap();
        assert!(
            extract_dly(&path, &dir.join("dly"))
                .unwrap_err()
                .contains("no .dly")
        );
        assert!(!dir.join("dly").join(COMPLETE_MARKER).exists());
        fs::write(&path, b"not gzip").unwrap();
        assert!(extract_dly(&path, &dir.join("dly")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
