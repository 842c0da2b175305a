//! The CSV table reader of the `ntk` command, [`ntk_cli::table::parse_table`], with target
//! column `y`, both as a training file (`require_target`) and as a test file.
//!
//! Checked on every accepted table: at least one row; as many input names as input columns,
//! none empty, none repeated, none the target; every input finite; one target entry per row,
//! every present one finite; and a training file's target complete.

use std::path::Path;

use ntk_cli::table::{Table, parse_table};
use rand::RngExt;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

use crate::mutate::INTERESTING_NUMBERS;

/// CSV syntax and cell values the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b"\xef\xbb\xbf",
    b" ",
    b"\t",
    b"y",
    b"x",
    b"NaN",
    b"inf",
    b"1e308",
    b"-0",
    b"#",
    b";",
];

/// Parses `data` as a training file and as a test file; checks what either accepts.
pub fn run(data: &[u8]) -> super::Outcome {
    let mut answers = Vec::with_capacity(2);
    let mut accepted = false;
    for require_target in [true, false] {
        match parse_table(data, Path::new("fuzz.csv"), "y", require_target) {
            Ok(table) => {
                check(&table, require_target);
                accepted = true;
                answers.push(format!(
                    "ok: ~2^{} inputs, ~2^{} rows, target {}",
                    super::size_class(table.inputs.ncols()),
                    super::size_class(table.inputs.nrows()),
                    match table.complete_target() {
                        Some(_) => "complete",
                        None if table.target.is_some() => "partial",
                        None => "absent",
                    }
                ));
            }
            Err(e) => answers.push(super::one_line(&e.to_string())),
        }
    }
    let answer = answers.join("\n");
    if accepted { Ok(answer) } else { Err(answer) }
}

/// The checks on an accepted table (see the module docs).
fn check(t: &Table, require_target: bool) {
    let (rows, cols) = t.inputs.shape();
    assert!(rows > 0, "a table with no rows was accepted");
    assert_eq!(cols, t.input_names.len(), "input names vs columns");
    for (c, name) in t.input_names.iter().enumerate() {
        assert!(!name.is_empty(), "input column {c} has an empty name");
        assert_ne!(name, "y", "the target column is also an input");
        assert!(
            !t.input_names[..c].contains(name),
            "input name `{name}` repeated"
        );
    }
    assert!(
        t.inputs.iter().all(|v| v.is_finite()),
        "a non-finite input was accepted"
    );
    if let Some(target) = &t.target {
        assert_eq!(target.len(), rows, "target entries vs rows");
        assert!(
            target.iter().flatten().all(|v| v.is_finite()),
            "a non-finite target was accepted"
        );
    }
    if require_target {
        assert!(
            t.complete_target().is_some(),
            "a training file without a complete target was accepted"
        );
    }
}

/// One mutation that knows CSV: a cell replaced by an interesting number or text, a column
/// added, removed or renamed to a duplicate, a row duplicated or dropped, or quoting, line
/// ends and a byte-order mark changed.
pub fn mutate(data: &mut Vec<u8>, rng: &mut SmallRng) {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut rows: Vec<Vec<String>> = text
        .split('\n')
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let n_rows = rows.len();
    let r = rng.random_range(0..n_rows);
    match rng.random_range(0..10) {
        0 | 1 => {
            let c = rng.random_range(0..rows[r].len());
            rows[r][c] = cell(rng);
        }
        2 => {
            let name = if rng.random() {
                "y".to_string()
            } else {
                cell(rng)
            };
            for (i, row) in rows.iter_mut().enumerate() {
                row.push(if i == 0 { name.clone() } else { cell(rng) });
            }
        }
        3 => {
            let c = rng.random_range(0..rows[0].len());
            for row in &mut rows {
                if c < row.len() {
                    row.remove(c);
                }
            }
        }
        4 => {
            // A header name repeated, or the target renamed.
            let header = &mut rows[0];
            let (a, b) = (
                rng.random_range(0..header.len()),
                rng.random_range(0..header.len()),
            );
            header[a] = if rng.random() {
                header[b].clone()
            } else {
                [" y", "y ", "\"y\"", "Y", "y\r", ""]
                    .choose(rng)
                    .unwrap()
                    .to_string()
            };
        }
        5 => {
            let row = rows[r].clone();
            let times = rng.random_range(1..100);
            let at = rng.random_range(0..=n_rows);
            rows.splice(at..at, std::iter::repeat_n(row, times));
        }
        6 => {
            rows.remove(r);
        }
        7 => {
            let c = rng.random_range(0..rows[r].len());
            let quoted = format!("\"{}\"", rows[r][c].replace('"', "\"\""));
            rows[r][c] = match rng.random_range(0..3) {
                0 => quoted,
                1 => format!("\"{}", rows[r][c]),
                _ => format!("\"{},{}\"", rows[r][c], cell(rng)),
            };
        }
        8 => {
            let c = rng.random_range(0..rows[r].len());
            let pad = [" ", "\t", "\r", "\u{a0}", "\u{feff}"].choose(rng).unwrap();
            rows[r][c] = if rng.random() {
                format!("{pad}{}", rows[r][c])
            } else {
                format!("{}{pad}", rows[r][c])
            };
        }
        _ => {
            let mut out = join(&rows, if rng.random() { "\r\n" } else { "\n" });
            if rng.random() {
                out.splice(0..0, *b"\xef\xbb\xbf");
            }
            *data = out;
            return;
        }
    }
    *data = join(&rows, "\n");
}

/// An interesting cell: a number at the edge of `f64`, empty, white space or text.
fn cell(rng: &mut SmallRng) -> String {
    match rng.random_range(0..8) {
        0 => String::new(),
        1 => " ".into(),
        2 => "9".repeat(rng.random_range(300..400)),
        3 => format!(
            "{}",
            rng.random::<f64>() * 10f64.powi(rng.random_range(-320..320))
        ),
        4 => ["abc", "x", "-", ".", "e5", "1e", "\"\"", "é"]
            .choose(rng)
            .unwrap()
            .to_string(),
        _ => INTERESTING_NUMBERS.choose(rng).unwrap().to_string(),
    }
}

fn join(rows: &[Vec<String>], eol: &str) -> Vec<u8> {
    rows.iter()
        .map(|r| r.join(","))
        .collect::<Vec<_>>()
        .join(eol)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn accepts_a_table_and_refuses_nan() {
        assert!(run(b"x1,x2,y\n1,2,3\n4,5,6\n").is_ok());
        let err = run(b"x,y\nNaN,1\n").unwrap_err();
        assert!(err.contains("not finite"), "{err}");
    }

    #[test]
    fn structured_mutants_stay_mostly_csv() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut parsed = 0;
        for _ in 0..500 {
            let mut data = b"x1,x2,y\n1,2,3\n4,5,6\n".to_vec();
            mutate(&mut data, &mut rng);
            parsed += usize::from(run(&data).is_ok());
        }
        assert!((50..500).contains(&parsed), "{parsed} of 500 mutants parse");
    }
}
