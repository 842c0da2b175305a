//! The downloaded US Historical Climatology Network data and the choice
//! between it and the shipped offline series.
//!
//! `cargo xtask data ushcn` leaves, under `data/downloads/ushcn/`:
//! - `ghcnd-stations.txt`: the GHCN-Daily station list;
//! - `ghcnd_hcn.tar.gz`: the HCN subset of GHCN-Daily, as downloaded;
//! - `manifest.json`: size and sha256 of both downloads;
//! - `dly/<station>.dly`: the archive's `.dly` files, extracted, and
//!   `dly/.complete`, written last, so a half-finished extraction is never
//!   mistaken for the data.

use std::path::{Path, PathBuf};

use crate::data::ghcn::{Network, Station, daily_precipitation, read_dly, read_stations};
use crate::data::precip::{MeanFrom, PrecipTask, day_of_year, precip_task};
use crate::data::weather::{WEATHER_CSV, pooled_weather_tasks_from, weather_tasks_from};
use crate::data::{DataError, data_dir, downloads_dir};

/// The station list inside the USHCN download folder.
pub const STATIONS_FILE: &str = "ghcnd-stations.txt";
/// The folder of extracted `.dly` files inside the USHCN download folder.
pub const DLY_DIR: &str = "dly";
/// The marker that `cargo xtask data ushcn` writes after a full extraction.
pub const COMPLETE_MARKER: &str = ".complete";

/// The default USHCN download folder: `data/downloads/ushcn/`.
pub fn ushcn_dir() -> PathBuf {
    downloads_dir().join("ushcn")
}

/// Where the precipitation experiment's tasks come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrecipSource {
    /// The downloaded USHCN stations (one task per station, all years pooled).
    Ushcn {
        /// The download folder (holding `ghcnd-stations.txt` and `dly/`).
        dir: PathBuf,
    },
    /// The shipped `data/weather.csv` (one task per city and year).
    Offline {
        /// The CSV file.
        csv: PathBuf,
        /// Why the USHCN data were not used.
        reason: String,
    },
}

impl PrecipSource {
    /// One line saying which data this is, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Ushcn { dir } => format!(
                "USHCN daily precipitation (GHCN-Daily HCN stations) from {}",
                super::shown(dir)
            ),
            Self::Offline { csv, reason } => format!(
                "offline data {} (Seattle and New York, 2012-2015): {reason}; \
                 run `cargo xtask data ushcn` for the paper's data",
                super::shown(csv)
            ),
        }
    }

    /// The tasks, at most `limit` of them (in station-ID or city-year order). With
    /// `pool_years` the shipped series give one task per city with its years pooled
    /// ([`pooled_weather_tasks_from`]); a USHCN station's task always pools its years.
    pub fn tasks(
        &self,
        mean_from: MeanFrom,
        pool_years: bool,
        limit: Option<usize>,
    ) -> Result<Vec<PrecipTask>, DataError> {
        let mut tasks = match self {
            Self::Ushcn { dir } => ushcn_tasks(dir, mean_from, limit)?,
            Self::Offline { csv, .. } if pool_years => pooled_weather_tasks_from(csv, mean_from)?,
            Self::Offline { csv, .. } => weather_tasks_from(csv, mean_from)?,
        };
        if let Some(n) = limit {
            tasks.truncate(n);
        }
        Ok(tasks)
    }
}

/// The USHCN download when it is complete, the shipped data otherwise.
pub fn precipitation_source() -> PrecipSource {
    precipitation_source_in(&ushcn_dir(), &data_dir().join(WEATHER_CSV))
}

/// [`precipitation_source`] with explicit locations.
pub fn precipitation_source_in(ushcn: &Path, offline_csv: &Path) -> PrecipSource {
    let reason = if !ushcn.join(STATIONS_FILE).is_file() {
        Some(format!(
            "{} not found",
            super::shown(&ushcn.join(STATIONS_FILE))
        ))
    } else if !ushcn.join(DLY_DIR).join(COMPLETE_MARKER).is_file() {
        Some(format!(
            "{} has no complete extraction ({} missing)",
            super::shown(ushcn),
            Path::new(DLY_DIR).join(COMPLETE_MARKER).display()
        ))
    } else {
        None
    };
    match reason {
        None => PrecipSource::Ushcn {
            dir: ushcn.to_path_buf(),
        },
        Some(reason) => PrecipSource::Offline {
            csv: offline_csv.to_path_buf(),
            reason,
        },
    }
}

/// The HCN-flagged stations of the download that have a `.dly` file, sorted
/// by ID.
pub fn ushcn_stations(dir: &Path) -> Result<Vec<Station>, DataError> {
    let mut stations: Vec<Station> = read_stations(&dir.join(STATIONS_FILE))?
        .into_iter()
        .filter(|s| s.network == Network::Hcn && dly_path(dir, &s.id).is_file())
        .collect();
    stations.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(stations)
}

/// The task of one station: its precipitation over all years, smoothed.
pub fn station_task(
    dir: &Path,
    station: &Station,
    mean_from: MeanFrom,
) -> Result<PrecipTask, DataError> {
    let records = read_dly(&dly_path(dir, &station.id))?;
    let obs: Vec<(usize, f64)> = daily_precipitation(&records)
        .into_iter()
        .filter_map(|p| day_of_year(p.month, p.day).map(|d| (d, p.mm)))
        .collect();
    let name = match &station.state {
        Some(st) => format!("{} {}, {st}", station.id, station.name),
        None => format!("{} {}", station.id, station.name),
    };
    precip_task(name, &obs, mean_from)
}

/// One task per HCN station (at most `limit`), skipping stations without a
/// single positive precipitation value; a malformed file is an error.
pub fn ushcn_tasks(
    dir: &Path,
    mean_from: MeanFrom,
    limit: Option<usize>,
) -> Result<Vec<PrecipTask>, DataError> {
    let mut tasks = Vec::new();
    for s in ushcn_stations(dir)? {
        if limit.is_some_and(|n| tasks.len() >= n) {
            break;
        }
        match station_task(dir, &s, mean_from) {
            Ok(t) => tasks.push(t),
            Err(DataError::Invalid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(tasks)
}

fn dly_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(DLY_DIR).join(format!("{id}.dly"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dly_line(id: &str, year: i32, month: u8, value: i32) -> String {
        let mut s = format!("{id:<11}{year:04}{month:02}PRCP");
        for d in 1..=31 {
            let v = if d <= 28 { value } else { -9999 };
            s.push_str(&format!("{v:>5}  7"));
        }
        s
    }

    fn station_line(id: &str, flag: &str) -> String {
        format!(
            "{id:<11} {:>8} {:>9} {:>6} {:<2} {:<30} {:<3} {:<3} {:<5}",
            "40.0", "-100.0", "500.0", "NE", "SOMEWHERE", "", flag, ""
        )
    }

    #[test]
    fn prefers_a_complete_download_and_says_why_not_otherwise() {
        let dir = std::env::temp_dir().join(format!("ntk-ushcn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let offline = data_dir().join(WEATHER_CSV);

        let src = precipitation_source_in(&dir, &offline);
        assert!(matches!(src, PrecipSource::Offline { .. }));
        assert!(src.describe().contains("not found"), "{}", src.describe());
        assert_eq!(
            src.tasks(MeanFrom::AllDays, false, Some(3)).unwrap().len(),
            3
        );

        fs::create_dir_all(dir.join(DLY_DIR)).unwrap();
        let stations = [
            station_line("USC00000001", "HCN"),
            station_line("USC00000002", ""),
            station_line("USC00000003", "HCN"),
            station_line("USC00000004", "HCN"),
        ]
        .join("\n");
        fs::write(dir.join(STATIONS_FILE), stations).unwrap();
        let src = precipitation_source_in(&dir, &offline);
        assert!(
            src.describe().contains("no complete extraction"),
            "{}",
            src.describe()
        );

        let lines: Vec<String> = (1..=12)
            .map(|m| dly_line("USC00000001", 2000, m, 25))
            .collect();
        fs::write(dly_path(&dir, "USC00000001"), lines.join("\n")).unwrap();
        fs::write(
            dly_path(&dir, "USC00000002"),
            dly_line("USC00000002", 2000, 1, 25),
        )
        .unwrap();
        let dry: Vec<String> = (1..=12)
            .map(|m| dly_line("USC00000003", 2000, m, 0))
            .collect();
        fs::write(dly_path(&dir, "USC00000003"), dry.join("\n")).unwrap();
        // USC00000004 is HCN but has no file: not a station of the download.
        fs::write(dir.join(DLY_DIR).join(COMPLETE_MARKER), "").unwrap();

        let src = precipitation_source_in(&dir, &offline);
        assert_eq!(src, PrecipSource::Ushcn { dir: dir.clone() });
        assert!(src.describe().starts_with("USHCN"));
        let ids: Vec<String> = ushcn_stations(&dir)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["USC00000001", "USC00000003"]);
        // The dry station is skipped; the other rains 2.5 mm on days 1-28 of each month.
        let tasks = src.tasks(MeanFrom::AllDays, false, None).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].name, "USC00000001 SOMEWHERE, NE");
        assert!((tasks[0].mean - 2.5).abs() < 1e-12);
        assert_eq!(tasks[0].empty_windows, 0);

        // A corrupt file is an error naming it.
        fs::write(dly_path(&dir, "USC00000001"), "garbage\n").unwrap();
        let err = src.tasks(MeanFrom::AllDays, false, None).unwrap_err();
        assert!(err.to_string().contains("USC00000001.dly:1:"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
