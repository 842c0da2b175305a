//! The offline precipitation tasks: NOAA daily series for Seattle and New York,
//! 2012–2015, shipped as `data/weather.csv` (provenance in `data/README.md`).
//!
//! Each (city, year) series is one task, built like a USHCN station's
//! ([`crate::data::precip`]): the smoothing runs within that one year's series
//! (mean of the positive values within ±21 days, wrapping), 29 February 2012
//! is dropped, the first 300 days train and the last 65 test.
//!
//! One year is a short series for a ±21-day window: Seattle's dry summer of
//! 2012 leaves 6 days whose window holds no rain; they get the documented
//! fill of 0 ([`crate::data::precip`]). The other seven series have none.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::data::precip::{MeanFrom, PrecipTask, day_of_year, precip_task};
use crate::data::{DataError, data_dir};

/// File name of the shipped series in `data/`.
pub const WEATHER_CSV: &str = "weather.csv";

#[derive(Deserialize)]
struct Row {
    location: String,
    date: String,
    precipitation: f64,
}

/// One day of one city's series.
#[derive(Debug, Clone, PartialEq)]
pub struct CityDay {
    /// City name as in the file (`Seattle`, `New York`).
    pub city: String,
    /// Calendar year.
    pub year: i32,
    /// Day of year in 0..365 (29 February has none and is dropped).
    pub day: usize,
    /// Precipitation in mm.
    pub mm: f64,
}

/// Reads the daily series from a `weather.csv`-shaped file (columns
/// `location,date,precipitation,…`, dates `YYYY-MM-DD`), dropping 29 February.
pub fn read_weather(path: &Path) -> Result<Vec<CityDay>, DataError> {
    let csv_err = |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let mut out = Vec::new();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.map_err(csv_err)?;
        let line = i + 2; // 1-based, after the header line.
        let bad = |message: String| DataError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let (year, month, day) = parse_date(&row.date)
            .ok_or_else(|| bad(format!("date `{}` is not YYYY-MM-DD", row.date)))?;
        if !row.precipitation.is_finite() || row.precipitation < 0.0 {
            return Err(bad(format!(
                "precipitation {} is not a depth",
                row.precipitation
            )));
        }
        if let Some(doy) = day_of_year(month, day) {
            out.push(CityDay {
                city: row.location,
                year,
                day: doy,
                mm: row.precipitation,
            });
        }
    }
    Ok(out)
}

/// The offline tasks from `data/weather.csv`: one per (city, year), sorted by
/// city then year (8 tasks: Seattle and New York × 2012–2015).
pub fn weather_tasks(mean_from: MeanFrom) -> Result<Vec<PrecipTask>, DataError> {
    weather_tasks_from(&data_dir().join(WEATHER_CSV), mean_from)
}

/// [`weather_tasks`] from any file of the same shape.
pub fn weather_tasks_from(path: &Path, mean_from: MeanFrom) -> Result<Vec<PrecipTask>, DataError> {
    let mut series: BTreeMap<(String, i32), Vec<(usize, f64)>> = BTreeMap::new();
    for d in read_weather(path)? {
        series
            .entry((d.city, d.year))
            .or_default()
            .push((d.day, d.mm));
    }
    if series.is_empty() {
        return Err(DataError::Invalid(format!("{}: no rows", path.display())));
    }
    series
        .into_iter()
        .map(|((city, year), obs)| precip_task(format!("{city} {year}"), &obs, mean_from))
        .collect()
}

/// One task per city with all its years pooled into one profile (as the paper pools every
/// year of a station), sorted by city and named by its years, e.g. `New York 2012–2015`.
pub fn pooled_weather_tasks_from(
    path: &Path,
    mean_from: MeanFrom,
) -> Result<Vec<PrecipTask>, DataError> {
    /// A city's first and last year, and its observations (day of year, mm).
    #[derive(Default)]
    struct Pooled {
        years: Option<(i32, i32)>,
        obs: Vec<(usize, f64)>,
    }
    let mut series: BTreeMap<String, Pooled> = BTreeMap::new();
    for d in read_weather(path)? {
        let city = series.entry(d.city).or_default();
        let (first, last) = city.years.unwrap_or((d.year, d.year));
        city.years = Some((first.min(d.year), last.max(d.year)));
        city.obs.push((d.day, d.mm));
    }
    if series.is_empty() {
        return Err(DataError::Invalid(format!("{}: no rows", path.display())));
    }
    series
        .into_iter()
        .map(|(city, pooled)| {
            let (first, last) = pooled.years.unwrap_or_default();
            precip_task(format!("{city} {first}–{last}"), &pooled.obs, mean_from)
        })
        .collect()
}

/// A task name as a file stem: `Seattle 2012` → `seattle-2012`, `New York 2013` → `new-york-2013`.
pub fn task_slug(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes every task of [`weather_tasks_from`]`(path, mean_from)` as the CSV files the `ntk`
/// command reads: `DIR/<slug>.train.csv` (300 days) and `DIR/<slug>.test.csv` (65 days), each
/// with the header `day,y`: `day` the standardized day index
/// ([`crate::data::precip::standardize_day`]) and `y` the centred smoothed profile (mm).
/// Returns the written files, train then test per task. The folder is created if needed.
pub fn export_weather_csvs(
    path: &Path,
    dir: &Path,
    mean_from: MeanFrom,
) -> Result<Vec<std::path::PathBuf>, DataError> {
    let tasks = weather_tasks_from(path, mean_from)?;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut written = Vec::new();
    for t in &tasks {
        for (split, x, y) in [
            ("train", &t.x_train, &t.y_train),
            ("test", &t.x_test, &t.y_test),
        ] {
            let mut text = String::from("day,y\n");
            for i in 0..y.len() {
                text.push_str(&format!("{},{}\n", x[(i, 0)], y[i]));
            }
            let file = dir.join(format!("{}.{split}.csv", task_slug(&t.name)));
            std::fs::write(&file, text).map_err(|e| DataError::io(&file, e))?;
            written.push(file);
        }
    }
    Ok(written)
}

/// `YYYY-MM-DD` → (year, month, day), without validating the day.
fn parse_date(s: &str) -> Option<(i32, u8, u8)> {
    let mut parts = s.trim().splitn(3, '-');
    let y = parts.next()?.parse().ok()?;
    let m = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    Some((y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::precip::DAYS_PER_YEAR;

    #[test]
    fn export_writes_the_tasks_as_cli_csvs() {
        assert_eq!(task_slug("New York 2013"), "new-york-2013");
        let dir = std::env::temp_dir().join(format!("ntk-weather-export-{}", std::process::id()));
        let files =
            export_weather_csvs(&data_dir().join(WEATHER_CSV), &dir, MeanFrom::AllDays).unwrap();
        assert_eq!(files.len(), 16);
        let tasks = weather_tasks(MeanFrom::AllDays).unwrap();
        let seattle = tasks.iter().find(|t| t.name == "Seattle 2012").unwrap();
        let text = std::fs::read_to_string(dir.join("seattle-2012.test.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("day,y"));
        let rows: Vec<(f64, f64)> = lines
            .map(|l| {
                let (a, b) = l.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 65);
        for (i, (x, y)) in rows.iter().enumerate() {
            // Written with round-trip precision.
            assert_eq!((*x, *y), (seattle.x_test[(i, 0)], seattle.y_test[i]));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_weather_gives_eight_tasks() {
        let tasks = weather_tasks(MeanFrom::AllDays).unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "New York 2012",
                "New York 2013",
                "New York 2014",
                "New York 2015",
                "Seattle 2012",
                "Seattle 2013",
                "Seattle 2014",
                "Seattle 2015"
            ]
        );
        for t in &tasks {
            assert_eq!(t.observations, 365, "{}: 29 Feb dropped, no gaps", t.name);
            assert_eq!((t.y_train.len(), t.y_test.len()), (300, 65));
            assert!(
                t.y_train
                    .iter()
                    .chain(t.y_test.iter())
                    .all(|v| v.is_finite())
            );
            // Mean daily rain on wet days is a few mm.
            assert!(t.mean > 1.0 && t.mean < 30.0, "{}: mean {}", t.name, t.mean);
        }
    }

    #[test]
    fn pooling_gives_one_task_per_city_from_all_its_years() {
        let path = data_dir().join(WEATHER_CSV);
        let pooled = pooled_weather_tasks_from(&path, MeanFrom::TrainDays).unwrap();
        let names: Vec<&str> = pooled.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["New York 2012–2015", "Seattle 2012–2015"]);
        assert!(pooled.iter().all(|t| t.observations == 4 * 365));
        // The pooled profile is the mean over all years' wet days in each window, so it lies
        // within the range of the single years' profiles on every day.
        let years = weather_tasks_from(&path, MeanFrom::TrainDays).unwrap();
        for (k, city) in pooled.iter().enumerate() {
            let own = &years[4 * k..4 * k + 4];
            for d in 0..DAYS_PER_YEAR {
                let (lo, hi) = own.iter().fold((f64::INFINITY, 0f64), |(lo, hi), t| {
                    (lo.min(t.profile[d]), hi.max(t.profile[d]))
                });
                assert!(lo - 1e-9 <= city.profile[d] && city.profile[d] <= hi + 1e-9);
            }
        }
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let dir = std::env::temp_dir().join(format!("ntk-weather-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.csv");
        std::fs::write(
            &path,
            "location,date,precipitation\nSeattle,2012-01-01,1.0\nSeattle,2012/01/02,1.0\n",
        )
        .unwrap();
        let err = weather_tasks_from(&path, MeanFrom::AllDays).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 3, .. }), "got {err}");
        std::fs::write(
            &path,
            "location,date,precipitation\nSeattle,2012-01-01,abc\n",
        )
        .unwrap();
        assert!(matches!(
            weather_tasks_from(&path, MeanFrom::AllDays),
            Err(DataError::Csv { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
