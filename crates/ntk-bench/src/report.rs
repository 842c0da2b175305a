//! The Markdown report of an experiment: `results/<name>/report.md`, linking its tables and
//! figures and saying how to reproduce it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::BenchError;
use crate::harness::{DEFAULT_SEED, Profile, RunContext};
use crate::metrics::MeanStderr;
use crate::plot::FigureFiles;

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, written as is (with `|` escaped).
    Text(String),
    /// A number, written with the report's significant digits.
    Num(f64),
    /// An integer.
    Int(i64),
    /// A mean ± standard error.
    MeanErr(MeanStderr),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Self::Num(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<MeanStderr> for Cell {
    fn from(v: MeanStderr) -> Self {
        Self::MeanErr(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Block {
    Heading(String),
    Paragraph(String),
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Figure {
        caption: String,
        png: String,
        svg: String,
    },
    Links(Vec<(String, String)>),
}

/// A Markdown report, built block by block and written with [`Report::write`].
///
/// ```
/// use ntk_bench::report::Report;
/// let mut r = Report::new("Sinusoid");
/// r.paragraph("RBF baseline on 3 tasks.")
///     .table(&["method", "RMSE"], [vec!["rbf".into(), 0.123456.into()]]);
/// let md = r.render();
/// assert!(md.starts_with("# Sinusoid\n"));
/// assert!(md.contains("| rbf | 0.1235 |"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    title: String,
    digits: usize,
    blocks: Vec<Block>,
    reproduce: Option<String>,
}

impl Report {
    /// An empty report titled `title`; numbers are written with 4 significant digits.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            digits: 4,
            blocks: Vec::new(),
            reproduce: None,
        }
    }

    /// Writes numbers with `digits` significant digits (at least 1).
    pub fn digits(&mut self, digits: usize) -> &mut Self {
        self.digits = digits.max(1);
        self
    }

    /// A second-level heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    /// A paragraph of Markdown text.
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// A table; rows shorter than the header are padded with empty cells.
    pub fn table<R>(&mut self, headers: &[&str], rows: R) -> &mut Self
    where
        R: IntoIterator<Item = Vec<Cell>>,
    {
        self.blocks.push(Block::Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: rows.into_iter().collect(),
        });
        self
    }

    /// A figure: the PNG inline, with a link to the SVG.
    pub fn figure(&mut self, caption: impl Into<String>, files: &FigureFiles) -> &mut Self {
        self.blocks.push(Block::Figure {
            caption: caption.into(),
            png: file_name(&files.png),
            svg: file_name(&files.svg),
        });
        self
    }

    /// A bulleted list of links to output files (`label`, file path in the output folder).
    pub fn links<'a>(&mut self, links: impl IntoIterator<Item = (&'a str, &'a Path)>) -> &mut Self {
        let links = links
            .into_iter()
            .map(|(label, path)| (label.to_string(), file_name(path)))
            .collect();
        self.blocks.push(Block::Links(links));
        self
    }

    /// Ends the report with "how to reproduce" and the exact command.
    pub fn reproduce(&mut self, command: impl Into<String>) -> &mut Self {
        self.reproduce = Some(command.into());
        self
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let mut md = format!("# {}\n", self.title);
        for block in &self.blocks {
            md.push('\n');
            match block {
                Block::Heading(h) => {
                    let _ = writeln!(md, "## {h}");
                }
                Block::Paragraph(p) => {
                    let _ = writeln!(md, "{p}");
                }
                Block::Table { headers, rows } => {
                    let _ = writeln!(
                        md,
                        "| {} |",
                        headers
                            .iter()
                            .map(|h| escape(h))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    );
                    let _ = writeln!(md, "|{}", "---|".repeat(headers.len()));
                    for row in rows {
                        let cells: Vec<String> = (0..headers.len())
                            .map(|i| row.get(i).map_or(String::new(), |c| self.cell(c)))
                            .collect();
                        let _ = writeln!(md, "| {} |", cells.join(" | "));
                    }
                }
                Block::Figure { caption, png, svg } => {
                    let _ = writeln!(
                        md,
                        "![{caption}]({png})\n\n*{caption}* ([SVG]({svg}), [PNG]({png}))"
                    );
                }
                Block::Links(links) => {
                    for (label, file) in links {
                        let _ = writeln!(md, "- [{label}]({file})");
                    }
                }
            }
        }
        if let Some(cmd) = &self.reproduce {
            let _ = write!(md, "\n## How to reproduce\n\n```sh\n{cmd}\n```\n");
        }
        md
    }

    /// Writes [`Report::render`] to `report.md` in the run's output folder.
    pub fn write(&self, ctx: &mut RunContext) -> Result<PathBuf, BenchError> {
        ctx.write_text("report.md", &self.render())
    }

    fn cell(&self, cell: &Cell) -> String {
        match cell {
            Cell::Text(t) => escape(t),
            Cell::Num(v) => format_number(*v, self.digits),
            Cell::Int(i) => i.to_string(),
            Cell::MeanErr(m) if m.n == 1 => format_number(m.mean, self.digits),
            Cell::MeanErr(m) => format!(
                "{} ± {}",
                format_number(m.mean, self.digits),
                format_number(m.stderr, 2)
            ),
        }
    }
}

/// The command that reproduces a run of `name` with `profile` and `seed`.
pub fn reproduce_command(name: &str, profile: Profile, seed: u64) -> String {
    let mut cmd = format!("cargo run --release -p ntk-bench -- reproduce {name}");
    match profile {
        Profile::Quick => cmd.push_str(" --quick"),
        Profile::Full => cmd.push_str(" --full"),
        Profile::Standard => {}
    }
    if seed != DEFAULT_SEED {
        let _ = write!(cmd, " --seed {seed}");
    }
    cmd
}

/// `value` with `digits` significant digits: fixed notation for magnitudes in
/// $[10^{-3}, 10^{6})$, scientific otherwise; `NaN` and `±inf` as words.
pub fn format_number(value: f64, digits: usize) -> String {
    let digits = digits.max(1);
    if !value.is_finite() {
        return value.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    if (-3..6).contains(&magnitude) {
        let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
        format!("{value:.decimals$}")
    } else {
        format!("{value:.prec$e}", prec = digits - 1)
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_significant_digits() {
        assert_eq!(format_number(0.123456, 4), "0.1235");
        assert_eq!(format_number(12.3456, 4), "12.35");
        assert_eq!(format_number(1234.0, 2), "1234");
        assert_eq!(format_number(2.5e-5, 3), "2.50e-5");
        assert_eq!(format_number(1.5e7, 3), "1.50e7");
        assert_eq!(format_number(0.0, 3), "0");
        assert_eq!(format_number(f64::NAN, 3), "NaN");
    }

    #[test]
    fn renders_tables_figures_and_command() {
        let mut r = Report::new("T");
        r.heading("Results")
            .table(
                &["a|b", "n", "rmse"],
                [vec![
                    "x".into(),
                    3usize.into(),
                    MeanStderr::of(&[1.0, 2.0, 3.0]).unwrap().into(),
                ]],
            )
            .figure(
                "Fits",
                &FigureFiles {
                    png: "/tmp/out/fits.png".into(),
                    svg: "/tmp/out/fits.svg".into(),
                },
            )
            .links([("tasks (CSV)", Path::new("/tmp/out/tasks.csv"))])
            .reproduce(reproduce_command("sinusoid", Profile::Quick, 3));
        let md = r.render();
        assert!(md.contains("| a\\|b | n | rmse |\n|---|---|---|\n| x | 3 | 2.000 ± 0.58 |"));
        assert!(md.contains("![Fits](fits.png)"));
        assert!(md.contains("[SVG](fits.svg)"));
        assert!(md.contains("- [tasks (CSV)](tasks.csv)"));
        assert!(md.ends_with(
            "```sh\ncargo run --release -p ntk-bench -- reproduce sinusoid --quick --seed 3\n```\n"
        ));
    }
}
