//! The GHCN-Daily parsers of `ntk-bench`: [`ghcn::parse_dly`] and [`ghcn::parse_dly_lenient`]
//! on `.dly` records, [`ghcn::daily_precipitation`] on what they accept, and
//! [`ghcn::parse_stations`] on the station list; every input goes through all of them.
//!
//! Checked: the strict and the lenient `.dly` parse agree (the same records, or the strict
//! error at the lenient parse's first malformed line); every record has a month in 1–12, a
//! trimmed non-empty station and a non-blank element, and no value −9999; every precipitation
//! day exists in its month and is finite; every station has a trimmed non-empty identifier and
//! coordinates in range.
//!
//! [`ghcn::parse_dly`]: ntk_bench::data::ghcn::parse_dly
//! [`ghcn::parse_dly_lenient`]: ntk_bench::data::ghcn::parse_dly_lenient
//! [`ghcn::daily_precipitation`]: ntk_bench::data::ghcn::daily_precipitation
//! [`ghcn::parse_stations`]: ntk_bench::data::ghcn::parse_stations

use std::path::Path;

use ntk_bench::data::DataError;
use ntk_bench::data::ghcn::{
    DLY_LINE_LEN, MISSING, daily_precipitation, days_in_month, parse_dly, parse_dly_lenient,
    parse_stations,
};
use rand::RngExt;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

/// Field values and line ends the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b"-9999",
    b"PRCP",
    b"TMAX",
    b"SNOW",
    b"HCN",
    b"CRN",
    b"GSN",
    b"\r\n",
    b"\n",
    b"  ",
    b"-999.9",
    b"USC00011084",
];

/// The `.dly` fields, as byte ranges of a record: ID, YEAR, MONTH, ELEMENT, then VALUE,
/// MFLAG, QFLAG and SFLAG of each of the 31 days.
fn dly_fields() -> Vec<(usize, usize)> {
    let mut fields = vec![(0, 11), (11, 15), (15, 17), (17, 21)];
    for d in 0..31 {
        let s = 21 + 8 * d;
        fields.extend([(s, s + 5), (s + 5, s + 6), (s + 6, s + 7), (s + 7, s + 8)]);
    }
    fields
}

/// The station-list fields, as byte ranges: ID, LATITUDE, LONGITUDE, ELEVATION, STATE, NAME,
/// GSN FLAG, HCN/CRN FLAG, WMO ID.
const STATION_FIELDS: [(usize, usize); 9] = [
    (0, 11),
    (12, 20),
    (21, 30),
    (31, 37),
    (38, 40),
    (41, 71),
    (72, 75),
    (76, 79),
    (80, 85),
];

/// Runs every parser on `data`; checks them against each other and what they accept.
pub fn run(data: &[u8]) -> super::Outcome {
    let path = Path::new("fuzz.dly");
    let lenient = parse_dly_lenient(data);
    for r in &lenient.records {
        assert!((1..=12).contains(&r.month), "month {}", r.month);
        assert!(
            !r.station.is_empty() && r.station.trim() == r.station,
            "station `{}`",
            r.station
        );
        assert!(!r.element.trim().is_empty(), "blank element");
        assert!(
            !r.values.contains(&Some(MISSING)),
            "a missing value was kept"
        );
    }
    for p in daily_precipitation(&lenient.records) {
        assert!(
            (1..=days_in_month(p.year, p.month)).contains(&usize::from(p.day)),
            "day {}-{}-{} does not exist",
            p.year,
            p.month,
            p.day
        );
        assert!(p.mm.is_finite(), "precipitation {}", p.mm);
    }
    let strict = parse_dly(data, path);
    match (&strict, lenient.errors.first()) {
        (Ok(records), None) => assert_eq!(records, &lenient.records, "strict vs lenient"),
        (Err(DataError::Parse { line, message, .. }), Some((first, first_message))) => {
            assert_eq!((line, message), (first, first_message), "strict vs lenient");
        }
        (strict, first) => {
            panic!("strict parse {strict:?} but the lenient one's first error is {first:?}")
        }
    }
    let stations = parse_stations(data, path);
    if let Ok(stations) = &stations {
        for s in stations {
            assert!(!s.id.is_empty() && s.id.trim() == s.id, "id `{}`", s.id);
            assert!(
                (-90.0..=90.0).contains(&s.lat) && (-180.0..=180.0).contains(&s.lon),
                "coordinates ({}, {})",
                s.lat,
                s.lon
            );
            assert!(
                s.elevation.is_none_or(f64::is_finite),
                "elevation {:?}",
                s.elevation
            );
        }
    }
    let answer = format!(
        "dly: {}\nlenient: ~2^{} records, ~2^{} errors\nstations: {}",
        match &strict {
            Ok(r) => format!("ok ~2^{}", super::size_class(r.len())),
            Err(e) => super::one_line(&e.to_string()),
        },
        super::size_class(lenient.records.len()),
        super::size_class(lenient.errors.len()),
        match &stations {
            Ok(s) => format!("ok ~2^{}", super::size_class(s.len())),
            Err(e) => super::one_line(&e.to_string()),
        },
    );
    if strict.is_ok() || stations.is_ok() {
        Ok(answer)
    } else {
        Err(answer)
    }
}

/// One mutation that knows the fixed-width layouts: a field of a `.dly` record or of a
/// station line overwritten with an interesting value (padded to the field's width or not),
/// or a line cut at a layout boundary, given a `\r`, or duplicated.
pub fn mutate(data: &mut Vec<u8>, rng: &mut SmallRng) {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let i = rng.random_range(0..lines.len());
    let line = &mut lines[i];
    match rng.random_range(0..8) {
        0..5 => {
            let (a, b) = if line.len() >= DLY_LINE_LEN - 20 {
                *dly_fields().choose(rng).unwrap()
            } else {
                *STATION_FIELDS.choose(rng).unwrap()
            };
            if a > line.len() {
                return;
            }
            let b = b.min(line.len());
            let value = VALUES.choose(rng).unwrap().as_bytes();
            let width = b - a;
            let padded: Vec<u8> = if value.len() < width && rng.random_ratio(3, 4) {
                let pad = vec![b' '; width - value.len()];
                if rng.random() {
                    [&pad[..], value].concat()
                } else {
                    [value, &pad[..]].concat()
                }
            } else {
                value.to_vec()
            };
            line.splice(a..b, padded);
        }
        5 => {
            let cut = *[DLY_LINE_LEN, DLY_LINE_LEN - 1, 37, 36, 21, 11, 0]
                .choose(rng)
                .unwrap();
            line.truncate(cut);
        }
        6 => line.push(b'\r'),
        _ => {
            let copy = line.clone();
            lines.insert(i, copy);
        }
    }
    *data = lines.join(&b'\n');
}

/// Field contents at the edges of what the fixed-width fields hold.
const VALUES: [&str; 30] = [
    "-9999",
    "99999",
    "-0",
    "+1",
    "0",
    "1 2",
    "1e5",
    "0x1",
    "",
    " ",
    "\t",
    "é",
    "13",
    "00",
    "-1",
    "2147483648",
    "-2147483648",
    "NaN",
    "inf",
    "-999.9",
    "90.0001",
    "-90",
    "-180.0",
    "180.5",
    "PRCP",
    "HCN",
    "CRN",
    "GSN",
    "\u{0}",
    "\u{a0}",
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn record() -> String {
        let mut s = "USC00011084192602PRCP".to_string();
        for d in 0..31 {
            s.push_str(if d % 3 == 0 { "   25  7" } else { "-9999   " });
        }
        s
    }

    #[test]
    fn a_record_and_a_station_are_accepted() {
        assert!(run(record().as_bytes()).is_ok());
        let station = "USC00011084  31.0581  -87.0547   25.9 AL BREWTON 3 SSE";
        assert!(run(station.as_bytes()).is_ok());
        assert!(run(b"short\n").is_err());
    }

    #[test]
    fn field_mutants_keep_the_layout_mostly() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut parsed = 0;
        for _ in 0..300 {
            let mut data = record().into_bytes();
            mutate(&mut data, &mut rng);
            parsed += usize::from(run(&data).is_ok());
        }
        assert!((30..300).contains(&parsed), "{parsed} of 300 mutants parse");
    }
}
