//! Reading the CSV tables: a header, then numeric rows; the target column by name.

use std::path::Path;

use nalgebra::{DMatrix, DVector};

use crate::error::CliError;

/// A data table split into inputs and an optional target.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Input column names, in header order.
    pub input_names: Vec<String>,
    /// Inputs, one row per data row.
    pub inputs: DMatrix<f64>,
    /// The target column, if the file has it: one entry per row, `None` where a test file
    /// leaves the cell empty (a training file must fill every cell).
    pub target: Option<Vec<Option<f64>>>,
}

impl Table {
    /// The target column when every row has a value (always so for a training file).
    pub fn complete_target(&self) -> Option<DVector<f64>> {
        let t = self.target.as_ref()?;
        t.iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(DVector::from_vec)
    }
}

/// Reads `path`: the column named `target` (if present) is the target, every other column
/// an input in header order. See [`parse_table`] for what is accepted.
pub fn read_table(path: &Path, target: &str, require_target: bool) -> Result<Table, CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_table(&bytes, path, target, require_target)
}

/// Parses CSV `bytes` (read from `path`, which names the file in messages).
///
/// Accepted: a header and numeric rows; quoting, CRLF line ends, a UTF-8 byte-order mark,
/// cells padded with white space, and blank or white-space-only lines (skipped). With
/// `require_target` (a training file) every row needs a target; otherwise (a test file) a
/// target cell may be empty, and that row is predicted but not scored.
///
/// Refused, naming line and column: an empty file, duplicate column names, a non-numeric
/// cell, NaN or Inf, a row with the wrong number of fields, an empty input cell, and a
/// missing target column or cell when `require_target`.
pub fn parse_table(
    bytes: &[u8],
    path: &Path,
    target: &str,
    require_target: bool,
) -> Result<Table, CliError> {
    parse_lines(bytes, path, target, require_target, 0)
}

/// [`parse_table`] of a header and some of a file's data lines: `lines_skipped` lines of the
/// file were left out between the header and `bytes`' first data line (messages name the
/// file's line numbers).
fn parse_lines(
    bytes: &[u8],
    path: &Path,
    target: &str,
    require_target: bool,
    lines_skipped: u64,
) -> Result<Table, CliError> {
    let bad = |message: String| CliError::Csv {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad(format!("cannot read the header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(bad("the file is empty (no header)".into()));
    }
    for (c, h) in headers.iter().enumerate() {
        if h.is_empty() {
            return Err(bad(format!("header: column {} has no name", c + 1)));
        }
        if let Some(first) = headers[..c].iter().position(|g| g == h) {
            return Err(bad(format!(
                "header: column `{h}` appears twice (columns {} and {})",
                first + 1,
                c + 1
            )));
        }
    }
    let target_col = headers.iter().position(|h| h == target);
    if require_target && target_col.is_none() {
        return Err(bad(format!(
            "no target column `{target}` in the header ({})",
            headers.join(",")
        )));
    }
    let input_cols: Vec<usize> = (0..headers.len())
        .filter(|&c| Some(c) != target_col)
        .collect();
    if input_cols.is_empty() {
        return Err(bad("there are no input columns besides the target".into()));
    }
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line()) + lines_skipped;
        if record.iter().all(str::is_empty) {
            continue; // a blank or white-space-only line
        }
        if record.len() != headers.len() {
            return Err(bad(format!(
                "line {line}: {} fields, the header has {}",
                record.len(),
                headers.len()
            )));
        }
        let cell = |c: usize| -> Result<f64, CliError> {
            let text = &record[c];
            if text.is_empty() {
                return Err(bad(format!("line {line}, column `{}`: empty", headers[c])));
            }
            let v: f64 = text.parse().map_err(|_| {
                bad(format!(
                    "line {line}, column `{}`: `{text}` is not a number",
                    headers[c]
                ))
            })?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(bad(format!(
                    "line {line}, column `{}`: {text} is not finite",
                    headers[c]
                )))
            }
        };
        for &c in &input_cols {
            inputs.push(cell(c)?);
        }
        if let Some(t) = target_col {
            targets.push(if !require_target && record[t].is_empty() {
                None
            } else {
                Some(cell(t)?)
            });
        }
    }
    let n = inputs.len() / input_cols.len();
    if n == 0 {
        return Err(bad("the file has a header but no data rows".into()));
    }
    Ok(Table {
        input_names: input_cols.iter().map(|&c| headers[c].clone()).collect(),
        inputs: DMatrix::from_row_slice(n, input_cols.len(), &inputs),
        target: target_col.map(|_| targets),
    })
}

/// One rank's share of a CSV file: the header line, and the data lines whose first byte lies
/// in the rank's part of the bytes after the header (the bytes split into equal parts, one
/// per rank). A rank reads its part and at most one line beyond it, never the whole file.
#[derive(Debug, Clone)]
pub struct TableShare {
    header: Vec<u8>,
    lines: Vec<u8>,
    rank: usize,
    ranks: usize,
}

impl TableShare {
    /// Reads the share of `rank` among `ranks` (the shares of all ranks hold every data line
    /// once, in order).
    pub fn read(path: &Path, rank: usize, ranks: usize) -> Result<Self, CliError> {
        use std::io::{BufRead, Seek, SeekFrom};
        let io = |source| CliError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = std::io::BufReader::new(file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header).map_err(io)?;
        let h = header.len() as u64;
        let bound = |r: usize| h + ((len - h) as u128 * r as u128 / ranks.max(1) as u128) as u64;
        let (start, end) = (bound(rank), bound(rank + 1));
        // The first line that starts at or after `start`: skip the rest of the line that
        // holds byte start − 1 (it belongs to the rank before).
        let mut pos = start;
        if start > h {
            reader.seek(SeekFrom::Start(start - 1)).map_err(io)?;
            let mut rest = Vec::new();
            pos = start - 1 + reader.read_until(b'\n', &mut rest).map_err(io)? as u64;
        }
        let mut lines = Vec::new();
        while pos < end {
            let read = reader.read_until(b'\n', &mut lines).map_err(io)?;
            if read == 0 {
                break;
            }
            pos += read as u64;
        }
        Ok(Self {
            header,
            lines,
            rank,
            ranks,
        })
    }

    /// The number of line ends in this share: the sum over the ranks before gives the
    /// `lines_before` of [`parse`](Self::parse).
    pub fn line_ends(&self) -> usize {
        self.lines.iter().filter(|&&b| b == b'\n').count()
    }

    /// Parses the header and this share's lines as [`parse_table`] does, naming the file's
    /// line numbers in messages: `lines_before` data lines (counted by their line ends) lie
    /// in the shares of the ranks before this one. A share without data rows is refused.
    pub fn parse(
        &self,
        path: &Path,
        target: &str,
        require_target: bool,
        lines_before: usize,
    ) -> Result<Table, CliError> {
        if self.lines.iter().all(u8::is_ascii_whitespace) {
            return Err(CliError::Csv {
                path: path.to_path_buf(),
                message: format!(
                    "rank {} of {} holds no data rows: the file has fewer data lines than \
                     ranks (use fewer ranks)",
                    self.rank, self.ranks
                ),
            });
        }
        let mut bytes = self.header.clone();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&self.lines);
        parse_lines(&bytes, path, target, require_target, lines_before as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile_like::Temp {
        tempfile_like::Temp::new(text)
    }

    /// A tiny temporary file helper (no extra dependency).
    mod tempfile_like {
        use super::*;
        pub struct Temp(pub std::path::PathBuf);
        impl Temp {
            pub fn new(text: &str) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "ntk-cli-table-{}-{}.csv",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::File::create(&path)
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                Temp(path)
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn splits_inputs_and_target_in_header_order() {
        let f = file("a,y,b\n1,10,2\n3,30,4\n");
        let t = read_table(&f.0, "y", true).unwrap();
        assert_eq!(t.input_names, vec!["a", "b"]);
        assert_eq!(
            t.inputs,
            DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(t.complete_target().unwrap().as_slice(), &[10.0, 30.0]);
        let t = read_table(&f.0, "b", true).unwrap();
        assert_eq!(t.input_names, vec!["a", "y"]);
    }

    #[test]
    fn every_bad_input_names_its_place() {
        let msg = |text: &str, need: bool| {
            read_table(&file(text).0, "y", need)
                .unwrap_err()
                .to_string()
        };
        assert!(
            msg("x,y\n1,2\n3,abc\n", true).contains("line 3, column `y`: `abc` is not a number")
        );
        assert!(msg("x,y\n1,NaN\n", true).contains("line 2, column `y`: NaN is not finite"));
        assert!(msg("x,y\ninf,1\n", true).contains("not finite"));
        assert!(msg("", true).contains("empty"));
        assert!(msg("x,y\n", true).contains("no data rows"));
        assert!(msg("x,z\n1,2\n", true).contains("no target column `y`"));
        assert!(msg("x,y\n1,2,3\n", true).contains("line 2"));
        assert!(msg("y\n1\n", true).contains("no input columns"));
        let missing = read_table(Path::new("/nonexistent/t.csv"), "y", true).unwrap_err();
        assert!(matches!(missing, CliError::Io { .. }));
        // Without a required target, a file lacking it is inputs only.
        let t = read_table(&file("x,z\n1,2\n").0, "y", false).unwrap();
        assert!(t.target.is_none() && t.inputs.ncols() == 2);
    }

    #[test]
    fn duplicate_column_names_are_refused() {
        let m = read_table(&file("x1,y,y\n1,2,3\n").0, "y", true)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("column `y` appears twice (columns 2 and 3)"),
            "{m}"
        );
        let m = read_table(&file("x,,y\n1,2,3\n").0, "y", true)
            .unwrap_err()
            .to_string();
        assert!(m.contains("column 2 has no name"), "{m}");
    }

    #[test]
    fn blank_and_white_space_lines_are_skipped() {
        for text in [
            "x,y\n1,2\n3,4\n   \n",
            "x,y\n1,2\n\t\n3,4\n",
            "x,y\r\n1,2\r\n3,4\r\n \r\n",
        ] {
            let t = read_table(&file(text).0, "y", true).unwrap();
            assert_eq!(t.inputs.as_slice(), &[1.0, 3.0], "{text:?}");
            assert_eq!(t.complete_target().unwrap().as_slice(), &[2.0, 4.0]);
        }
    }

    /// The shares of 1–7 ranks hold every row once, in order, whatever the line lengths,
    /// line ends and blank lines; messages name the file's line numbers.
    #[test]
    fn shares_split_the_rows_in_order_and_name_the_files_lines() {
        for text in [
            "x,y\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n13,14\n",
            "x,y\r\n1.25,2\r\n\r\n3,4.5\r\n-5e-3,6\r\n100000,7",
            "x,y\n1,1\n22222222222,2\n3,3\n",
        ] {
            let f = file(text);
            let whole = read_table(&f.0, "y", true).unwrap();
            for ranks in 1..=7 {
                let shares: Vec<TableShare> = (0..ranks)
                    .map(|r| TableShare::read(&f.0, r, ranks).unwrap())
                    .collect();
                let (mut xs, mut ys, mut before) = (Vec::new(), Vec::new(), 0);
                for s in &shares {
                    match s.parse(&f.0, "y", true, before) {
                        Ok(t) => {
                            assert_eq!(t.input_names, whole.input_names);
                            xs.extend(t.inputs.iter().copied());
                            ys.extend(t.complete_target().unwrap().iter().copied());
                        }
                        Err(e) => assert!(e.to_string().contains("holds no data rows"), "{e}"),
                    }
                    before += s.line_ends();
                }
                assert_eq!(xs, whole.inputs.as_slice(), "{text:?}, {ranks} ranks");
                assert_eq!(ys, whole.complete_target().unwrap().as_slice());
            }
        }
        // A bad cell is named by its line in the file, whichever rank reads it.
        let f = file("x,y\n1,2\n3,4\n5,6\n7,oops\n");
        let ranks = 2;
        let mut before = 0;
        let mut msgs = Vec::new();
        for r in 0..ranks {
            let s = TableShare::read(&f.0, r, ranks).unwrap();
            if let Err(e) = s.parse(&f.0, "y", true, before) {
                msgs.push(e.to_string());
            }
            before += s.line_ends();
        }
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("line 5, column `y`: `oops`"),
            "{}",
            msgs[0]
        );
    }

    #[test]
    fn a_test_file_may_leave_target_cells_empty_but_a_training_file_may_not() {
        let f = file("x,y\n1,2\n3,\n5,6\n");
        let t = read_table(&f.0, "y", false).unwrap();
        assert_eq!(t.target, Some(vec![Some(2.0), None, Some(6.0)]));
        assert_eq!(t.complete_target(), None);
        let m = read_table(&f.0, "y", true).unwrap_err().to_string();
        assert!(m.contains("line 3, column `y`: empty"), "{m}");
        let m = read_table(&file("x,y\n,2\n").0, "y", false)
            .unwrap_err()
            .to_string();
        assert!(m.contains("line 2, column `x`: empty"), "{m}");
    }
}
