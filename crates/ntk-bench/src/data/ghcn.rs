//! Parsers for NOAA's GHCN-Daily files: the per-station `.dly` records and the
//! station list `ghcnd-stations.txt` (format: GHCN-Daily `readme.txt`, §III and
//! §IV, at <https://www.ncei.noaa.gov/pub/data/ghcn/daily/>).
//!
//! Both are fixed-width ASCII. The parsers work on bytes, never panic on any
//! input, and report a malformed line with its 1-based number.

use std::path::Path;

use crate::data::DataError;

/// Days per `.dly` record (one record is one station, month and element).
pub const DAYS_PER_RECORD: usize = 31;
/// The `.dly` value meaning "missing".
pub const MISSING: i32 = -9999;
/// Length of a `.dly` line: 21 header bytes and 31 × (5 value + 3 flag bytes).
pub const DLY_LINE_LEN: usize = 21 + DAYS_PER_RECORD * 8;

/// One line of a `.dly` file: one station, month and element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlyRecord {
    /// Station identifier (columns 1–11), e.g. `USC00011084`.
    pub station: String,
    /// Year (columns 12–15).
    pub year: i32,
    /// Month, 1–12 (columns 16–17).
    pub month: u8,
    /// Element code (columns 18–21), e.g. `PRCP` (tenths of mm), `TMAX`.
    pub element: String,
    /// The 31 daily values in the element's units; `None` where the value is
    /// missing (−9999) or failed a quality check (a non-blank QFLAG).
    pub values: [Option<i32>; DAYS_PER_RECORD],
}

/// One daily precipitation observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyPrecip {
    /// Calendar year.
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31 (only days the month has).
    pub day: u8,
    /// Precipitation in mm.
    pub mm: f64,
}

/// What a lenient parse of a `.dly` file found.
#[derive(Debug, Clone, Default)]
pub struct DlyParse {
    /// The well-formed records, in file order.
    pub records: Vec<DlyRecord>,
    /// The malformed lines: 1-based line number and what is wrong.
    pub errors: Vec<(usize, String)>,
}

/// Parses one `.dly` line (without its line ending). A trailing `\r` and
/// anything after column 269 are ignored.
pub fn parse_dly_line(line: &[u8]) -> Result<DlyRecord, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < DLY_LINE_LEN {
        return Err(format!(
            "line has {} bytes, a .dly record needs {DLY_LINE_LEN}",
            line.len()
        ));
    }
    if !line[..DLY_LINE_LEN].is_ascii() {
        return Err("non-ASCII bytes in a fixed-width record".into());
    }
    let station = ascii(&line[0..11]).trim().to_string();
    if station.is_empty() {
        return Err("empty station ID (columns 1-11)".into());
    }
    let year: i32 = int_field(&line[11..15], "YEAR (columns 12-15)")?;
    let month: i32 = int_field(&line[15..17], "MONTH (columns 16-17)")?;
    if !(1..=12).contains(&month) {
        return Err(format!("MONTH {month} is not in 1-12"));
    }
    let element = ascii(&line[17..21]).to_string();
    if element.trim().is_empty() {
        return Err("empty ELEMENT (columns 18-21)".into());
    }
    let mut values = [None; DAYS_PER_RECORD];
    for (d, slot) in values.iter_mut().enumerate() {
        let start = 21 + 8 * d;
        let value: i32 = int_field(
            &line[start..start + 5],
            &format!("VALUE{} (columns {}-{})", d + 1, start + 1, start + 5),
        )?;
        let qflag = line[start + 6];
        if value != MISSING && qflag == b' ' {
            *slot = Some(value);
        }
    }
    Ok(DlyRecord {
        station,
        year,
        month: month as u8,
        element,
        values,
    })
}

/// Parses a whole `.dly` file, keeping the good records and listing the
/// malformed lines. Blank lines are skipped.
pub fn parse_dly_lenient(bytes: &[u8]) -> DlyParse {
    let mut out = DlyParse::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_dly_line(line) {
            Ok(r) => out.records.push(r),
            Err(e) => out.errors.push((i + 1, e)),
        }
    }
    out
}

/// Parses a whole `.dly` file; the first malformed line is an error naming
/// `path` and the line number.
pub fn parse_dly(bytes: &[u8], path: &Path) -> Result<Vec<DlyRecord>, DataError> {
    let parsed = parse_dly_lenient(bytes);
    match parsed.errors.into_iter().next() {
        Some((line, message)) => Err(DataError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        }),
        None => Ok(parsed.records),
    }
}

/// Reads and parses a `.dly` file (strictly, see [`parse_dly`]).
pub fn read_dly(path: &Path) -> Result<Vec<DlyRecord>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_dly(&bytes, path)
}

/// The daily precipitation (element `PRCP`, tenths of mm → mm) of `records`,
/// dropping missing and quality-flagged values and days the month lacks.
pub fn daily_precipitation(records: &[DlyRecord]) -> Vec<DailyPrecip> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.element == "PRCP") {
        let len = days_in_month(r.year, r.month);
        for (d, v) in r.values.iter().enumerate().take(len) {
            if let Some(v) = v {
                out.push(DailyPrecip {
                    year: r.year,
                    month: r.month,
                    day: d as u8 + 1,
                    mm: f64::from(*v) / 10.0,
                });
            }
        }
    }
    out
}

/// Days in `month` (1–12) of `year` (Gregorian); 0 for an invalid month.
pub fn days_in_month(year: i32, month: u8) -> usize {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The station network flag of `ghcnd-stations.txt` (columns 77–79).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// U.S. Historical Climatology Network station (`HCN`).
    Hcn,
    /// U.S. Climate Reference Network or Regional CRN station (`CRN`).
    Crn,
    /// Neither (blank).
    None,
}

/// One line of `ghcnd-stations.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    /// Station identifier (columns 1–11).
    pub id: String,
    /// Latitude in decimal degrees (columns 13–20).
    pub lat: f64,
    /// Longitude in decimal degrees (columns 22–30).
    pub lon: f64,
    /// Elevation in metres (columns 32–37); −999.9 in the file means missing.
    pub elevation: Option<f64>,
    /// U.S. postal state code (columns 39–40), where there is one.
    pub state: Option<String>,
    /// Station name (columns 42–71).
    pub name: String,
    /// Whether the station is in the GCOS Surface Network (columns 73–75).
    pub gsn: bool,
    /// HCN/CRN flag (columns 77–79).
    pub network: Network,
    /// WMO identifier (columns 81–85), where there is one.
    pub wmo: Option<String>,
}

/// Parses one line of `ghcnd-stations.txt`. Lines may stop after the
/// elevation (column 37): the optional columns after it then read as blank.
pub fn parse_station_line(line: &[u8]) -> Result<Station, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 37 {
        return Err(format!(
            "line has {} bytes, a station needs at least 37 (ID, LAT, LON, ELEV)",
            line.len()
        ));
    }
    let col = |a: usize, b: usize| -> String {
        // 1-based inclusive columns a..=b, blank past the end of the line.
        let lo = (a - 1).min(line.len());
        let hi = b.min(line.len());
        String::from_utf8_lossy(&line[lo..hi]).trim().to_string()
    };
    let id = col(1, 11);
    if id.is_empty() {
        return Err("empty station ID (columns 1-11)".into());
    }
    let lat: f64 = float_field(&col(13, 20), "LATITUDE (columns 13-20)")?;
    let lon: f64 = float_field(&col(22, 30), "LONGITUDE (columns 22-30)")?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("coordinates ({lat}, {lon}) out of range"));
    }
    let elev: f64 = float_field(&col(32, 37), "ELEVATION (columns 32-37)")?;
    let network = match col(77, 79).as_str() {
        "HCN" => Network::Hcn,
        "CRN" => Network::Crn,
        "" => Network::None,
        other => return Err(format!("unknown HCN/CRN flag `{other}` (columns 77-79)")),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Station {
        id,
        lat,
        lon,
        elevation: (elev > -999.0).then_some(elev),
        state: non_empty(col(39, 40)),
        name: col(42, 71),
        gsn: col(73, 75) == "GSN",
        network,
        wmo: non_empty(col(81, 85)),
    })
}

/// Parses `ghcnd-stations.txt`; the first malformed line is an error naming
/// `path` and the line number. Blank lines are skipped.
pub fn parse_stations(bytes: &[u8], path: &Path) -> Result<Vec<Station>, DataError> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let station = parse_station_line(line).map_err(|message| DataError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        })?;
        out.push(station);
    }
    Ok(out)
}

/// Reads and parses `ghcnd-stations.txt`.
pub fn read_stations(path: &Path) -> Result<Vec<Station>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_stations(&bytes, path)
}

/// The bytes as text; callers have checked they are ASCII, and lossy
/// conversion keeps this total anyway.
fn ascii(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn int_field(bytes: &[u8], what: &str) -> Result<i32, String> {
    let text = ascii(bytes);
    text.trim()
        .parse()
        .map_err(|_| format!("{what}: `{text}` is not an integer"))
}

fn float_field(text: &str, what: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{what}: `{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `.dly` line for `PRCP` with the given (day, value, qflag) entries;
    /// other days missing.
    pub(crate) fn dly_line(id: &str, year: i32, month: u8, days: &[(usize, i32, char)]) -> String {
        let mut s = format!("{id:<11}{year:04}{month:02}PRCP");
        for d in 1..=31 {
            match days.iter().find(|(day, _, _)| *day == d) {
                Some((_, v, q)) => s.push_str(&format!("{v:>5} {q}7")),
                None => s.push_str("-9999   "),
            }
        }
        s
    }

    #[test]
    fn parses_a_record_with_missing_and_flagged_values() {
        let line = dly_line(
            "USC00011084",
            1926,
            2,
            &[(1, 25, ' '), (2, 0, ' '), (3, 99, 'I')],
        );
        assert_eq!(line.len(), DLY_LINE_LEN);
        let r = parse_dly_line(line.as_bytes()).unwrap();
        assert_eq!(r.station, "USC00011084");
        assert_eq!((r.year, r.month, r.element.as_str()), (1926, 2, "PRCP"));
        assert_eq!(r.values[0], Some(25));
        assert_eq!(r.values[1], Some(0));
        assert_eq!(r.values[2], None, "a quality-flagged value is dropped");
        assert_eq!(r.values[3], None, "-9999 is missing");
    }

    #[test]
    fn precipitation_is_in_mm_and_skips_days_the_month_lacks() {
        let mut line = dly_line("USC00011084", 1927, 2, &[(1, 25, ' '), (28, 3, ' ')]);
        // A (bogus) value on 30 February must not become a day.
        line.replace_range(21 + 8 * 29..21 + 8 * 29 + 5, "   11");
        let records = parse_dly(line.as_bytes(), Path::new("x.dly")).unwrap();
        let p = daily_precipitation(&records);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].day, p[0].mm), (1, 2.5));
        assert_eq!((p[1].month, p[1].day, p[1].mm), (2, 28, 0.3));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_numbers() {
        let good = dly_line("USC00011084", 1930, 1, &[(1, 5, ' ')]);
        let text = format!(
            "{good}\n{good}\nshort line\n\n{}\n",
            good.replace("1930", "19x0")
        );
        let parsed = parse_dly_lenient(text.as_bytes());
        assert_eq!(parsed.records.len(), 2);
        let lines: Vec<usize> = parsed.errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 5]);
        let err = parse_dly(text.as_bytes(), Path::new("a.dly")).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 3, .. }), "got {err}");
        assert!(err.to_string().starts_with("a.dly:3:"), "got {err}");
    }

    #[test]
    fn parses_station_lines() {
        // The layout of ghcnd-stations.txt, built column by column.
        let full = format!(
            "{:<11} {:>8} {:>9} {:>6} {:<2} {:<30} {:<3} {:<3} {:<5}",
            "USC00011084",
            "31.0581",
            "-87.0547",
            "25.9",
            "AL",
            "BREWTON 3 SSE",
            "GSN",
            "HCN",
            "72227"
        );
        assert_eq!(full.len(), 85);
        let s = parse_station_line(full.as_bytes()).unwrap();
        assert_eq!(s.id, "USC00011084");
        assert_eq!((s.lat, s.lon, s.elevation), (31.0581, -87.0547, Some(25.9)));
        assert_eq!(s.state.as_deref(), Some("AL"));
        assert_eq!(s.name, "BREWTON 3 SSE");
        assert!(s.gsn);
        assert_eq!(s.network, Network::Hcn);
        assert_eq!(s.wmo.as_deref(), Some("72227"));

        let short = "ACW00011604  17.1167  -61.7833   10.1    ST JOHNS COOLIDGE FLD";
        let s = parse_station_line(short.as_bytes()).unwrap();
        assert_eq!(
            (s.state, s.network, s.gsn, s.wmo),
            (None, Network::None, false, None)
        );
        assert_eq!(s.name, "ST JOHNS COOLIDGE FLD");

        let missing_elev = "AYM00089999 -70.0000  -10.0000 -999.9    SOMEWHERE";
        assert_eq!(
            parse_station_line(missing_elev.as_bytes())
                .unwrap()
                .elevation,
            None
        );

        let text = format!("{full}\nUSC0001  xx\n");
        let err = parse_stations(text.as_bytes(), Path::new("s.txt")).unwrap_err();
        assert!(matches!(err, DataError::Parse { line: 2, .. }), "got {err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn dly_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let parsed = parse_dly_lenient(&bytes);
            let _ = daily_precipitation(&parsed.records);
            let _ = parse_dly(&bytes, Path::new("p.dly"));
        }

        #[test]
        fn dly_parser_never_panics_on_strings(s in "\\PC{0,600}") {
            let _ = parse_dly_lenient(s.as_bytes());
        }

        #[test]
        fn dly_parser_never_panics_on_near_records(
            s in "[A-Z0-9]{11}[0-9 -]{6}PRCP[0-9 IA-]{248,260}",
            cut in 0usize..280,
        ) {
            let b = s.as_bytes();
            let parsed = parse_dly_lenient(&b[..cut.min(b.len())]);
            let _ = daily_precipitation(&parsed.records);
        }

        #[test]
        fn station_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_stations(&bytes, Path::new("s.txt"));
            let _ = parse_station_line(&bytes);
        }

        #[test]
        fn well_formed_records_round_trip(
            year in 1800i32..2100,
            month in 1u8..=12,
            vals in proptest::collection::vec((1usize..=31, 0i32..99999), 0..10),
        ) {
            let days: Vec<(usize, i32, char)> = vals.iter().map(|&(d, v)| (d, v, ' ')).collect();
            let line = dly_line("USW00094728", year, month, &days);
            let r = parse_dly_line(line.as_bytes()).unwrap();
            prop_assert_eq!((r.year, r.month), (year, month));
            for (d, v, _) in &days {
                // The first entry for a day wins in `dly_line`.
                let want = days.iter().find(|(dd, _, _)| dd == d).unwrap().1;
                prop_assert_eq!(r.values[d - 1], Some(want));
                let _ = v;
            }
        }
    }
}
