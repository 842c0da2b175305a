//! Memory sizes: `--max-memory` values, what the machine has available, and the peak
//! resident memory a run reached.

/// Parses a size: bytes (`1500000`), or a number with a decimal (`kB`, `MB`, `GB`, `TB`)
/// or binary (`KiB`, `MiB`, `GiB`, `TiB`) unit; case-insensitive, space allowed.
///
/// ```
/// use ntk_cli::memory::parse_size;
/// assert_eq!(parse_size("4GiB"), Ok(4.0 * 1024f64.powi(3)));
/// assert_eq!(parse_size("500 MB"), Ok(5e8));
/// assert!(parse_size("-1GB").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "size `{text}`: unknown unit `{other}` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * factor),
        _ => Err(format!(
            "size `{text}` must be a positive number of bytes, optionally with a unit (4GiB)"
        )),
    }
}

/// Bytes as a short human-readable size (`1.37 GiB`).
pub fn format_bytes(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

/// The memory available to a new allocation now (`MemAvailable` of `/proc/meminfo`), or
/// `None` where that is not known (not Linux).
pub fn available_bytes() -> Option<f64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

/// The peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), or
/// `None` where that is not known.
pub fn peak_rss_bytes() -> Option<f64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// A `NAME:  123 kB` field of a `/proc` file, in bytes.
fn meminfo_field(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: f64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_unit_and_bad_ones_say_why() {
        assert_eq!(parse_size("1500000"), Ok(1.5e6));
        assert_eq!(parse_size("2kB"), Ok(2e3));
        assert_eq!(parse_size("1.5 GiB"), Ok(1.5 * 1024f64.powi(3)));
        assert_eq!(parse_size("3tb"), Ok(3e12));
        for bad in ["", "GB", "0", "-4GB", "4 parsecs", "nan", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(
            parse_size("4 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            meminfo_field(text, "MemAvailable:"),
            Some(20_000_000.0 * 1024.0)
        );
        assert_eq!(meminfo_field(text, "VmHWM:"), None);
        assert_eq!(format_bytes(1.5 * 1024f64.powi(3)), "1.50 GiB");
        assert_eq!(format_bytes(512.0), "512 B");
        #[cfg(target_os = "linux")]
        assert!(peak_rss_bytes().unwrap() > 1e6 && available_bytes().unwrap() > 1e6);
    }
}
