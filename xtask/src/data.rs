//! Dataset management: the shipped offline data and (later) the downloads.

use std::fs;

use clap::Subcommand;
use sha2::{Digest, Sha256};

#[derive(Subcommand)]
pub enum DataCmd {
    /// List the data sets and where they are.
    List,
    /// Check the shipped offline data against its recorded checksums.
    Verify,
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
                println!("shipped  data/{name}");
            }
            Ok(())
        }
        DataCmd::Verify => verify_shipped(),
    }
}

/// Lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
