//! Dataset management: the shipped offline data and the downloads of the
//! full data sets into `data/downloads/` (see `download.rs` for resuming and
//! the manifest, `ushcn.rs` and `malaria.rs` for the sets).

use std::fs;
use std::path::PathBuf;

use clap::Subcommand;
use sha2::{Digest, Sha256};

use crate::{malaria, ushcn};

#[derive(Subcommand)]
pub enum DataCmd {
    /// List the data sets and where they are.
    List,
    /// Check the shipped data against their checksums, and downloads against manifest.json.
    Verify,
    /// Download the US Historical Climatology Network daily data (precipitation experiment).
    ///
    /// Fetches ghcnd-stations.txt and ghcnd_hcn.tar.gz (the HCN subset of
    /// GHCN-Daily) into data/downloads/ushcn/ and extracts the .dly files.
    /// Resumes an interrupted download; verifies earlier downloads against
    /// manifest.json.
    Ushcn {
        /// GHCN-Daily folder URL (a mirror, or a local server for testing).
        #[arg(long, default_value = ushcn::BASE_URL)]
        base_url: String,
        /// Download folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Delete earlier downloads and their records, and download again.
        #[arg(long)]
        force: bool,
    },
    /// Download Malaria Atlas Project parasite rate maps of Nigeria (spatial transfer experiment).
    ///
    /// Fetches P. falciparum parasite rate rasters for 2012 and 2016 (WCS,
    /// GeoTIFF) into data/downloads/malaria/ and converts them to
    /// nigeria_pfpr.csv (lon,lat,year,value).
    Malaria {
        /// WCS endpoint (MAP GeoServer `Malaria` workspace).
        #[arg(long, default_value = malaria::WCS_URL)]
        wcs_url: String,
        /// Download folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Delete earlier downloads and their records, and download again.
        #[arg(long)]
        force: bool,
        /// Also fetch the authors' cleaned HDF5 table (stored unconverted).
        #[arg(long)]
        authors_table: bool,
    },
}

/// `data/downloads/`.
fn downloads() -> PathBuf {
    crate::root().join("data").join("downloads")
}

/// The data shipped in `data/`, with their sha256 (also in `data/README.md`).
const SHIPPED: &[(&str, &str)] = &[
    (
        "weather.csv",
        "27219f1ca8dbd94c9b6f4b9f4f52ab2f1eb33dfdcf719cd9fc6481ed50b74549",
    ),
    (
        "annual-precip.json",
        "b7e8b2cc684c9cdeaef9a658f021faa27c9377e7ce85f93fe670530c0e66794d",
    ),
];

pub fn run(cmd: DataCmd) -> Result<(), String> {
    match cmd {
        DataCmd::List => {
            for (name, _) in SHIPPED {
                println!("shipped     data/{name}");
            }
            for (set, marker, cmd) in [
                ("ushcn", "dly/.complete", "cargo xtask data ushcn"),
                ("malaria", malaria::CSV, "cargo xtask data malaria"),
            ] {
                let dir = downloads().join(set);
                if dir.join(marker).is_file() {
                    println!("downloaded  {}", dir.display());
                } else {
                    println!("missing     {} (run `{cmd}`)", dir.display());
                }
            }
            Ok(())
        }
        DataCmd::Verify => {
            verify_shipped()?;
            verify_downloads()
        }
        DataCmd::Ushcn {
            base_url,
            dir,
            force,
        } => ushcn::download(
            &base_url,
            &dir.unwrap_or_else(|| downloads().join("ushcn")),
            force,
        ),
        DataCmd::Malaria {
            wcs_url,
            dir,
            force,
            authors_table,
        } => malaria::download(
            &wcs_url,
            &dir.unwrap_or_else(|| downloads().join("malaria")),
            force,
            authors_table.then_some(malaria::AUTHORS_TABLE_URL),
        ),
    }
}

/// Lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the downloaded sets that have a manifest against it (sets not
/// downloaded are skipped).
fn verify_downloads() -> Result<(), String> {
    for set in ["ushcn", "malaria"] {
        let dir = downloads().join(set);
        if dir.join(crate::download::MANIFEST).is_file() {
            let n = crate::download::verify_manifest(&dir)?;
            eprintln!("data: {n} downloaded files in {} verified", dir.display());
        }
    }
    Ok(())
}

/// Fails unless every shipped file exists with its recorded checksum.
pub fn verify_shipped() -> Result<(), String> {
    let dir = crate::root().join("data");
    for (name, want) in SHIPPED {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let got = sha256_hex(&bytes);
        if got != *want {
            return Err(format!(
                "{} has sha256 {got}, expected {want}",
                path.display()
            ));
        }
    }
    eprintln!("data: {} shipped files verified", SHIPPED.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_is_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shipped_data_matches_its_checksums() {
        verify_shipped().unwrap();
    }
}
