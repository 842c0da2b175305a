//! Figures, written as both PNG and SVG with plotters.
//!
//! Text is drawn with an embedded subset of DejaVu Sans (`assets/DejaVuSans-subset.ttf`, licence
//! in `assets/FONT-LICENSE.md`) through plotters' `ab_glyph` backend, so no system font or
//! fontconfig is needed.
//!
//! - [`PanelGrid`]: a grid of panels, each with curves (a mean line and an optional shaded
//!   band such as $\mu \pm 2\sigma$) and scatter points (context or training data).
//! - [`ErrorBarChart`]: lines with error bars, e.g. a metric against the number of points $m$.
//! - [`MapGrid`]: maps of values at scattered 2-D locations (grid cells), coloured with a
//!   viridis-like scale and a colour bar per panel.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::RunContext;

/// The embedded font (a subset of DejaVu Sans; Bitstream Vera licence).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
/// The family name text styles use.
const FAMILY: &str = "sans-serif";

/// Line colours (the Tableau 10 palette), used in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The `i`-th colour of the palette (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The PNG and SVG files of one figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FigureFiles {
    /// The raster version.
    pub png: PathBuf,
    /// The vector version.
    pub svg: PathBuf,
}

/// A line with an optional shaded band around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// Abscissae, increasing.
    pub x: Vec<f64>,
    /// The line's values.
    pub y: Vec<f64>,
    /// Lower and upper edges of the shaded band, if any.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
}

impl Curve {
    /// A plain line.
    pub fn line(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Self {
            label: label.into(),
            x,
            y,
            band: None,
        }
    }

    /// A predictive mean with the band $\mu \pm 2\sqrt{v}$ from variances `var`
    /// (negative variances are treated as 0).
    pub fn mean_two_sd(label: impl Into<String>, x: Vec<f64>, mean: Vec<f64>, var: &[f64]) -> Self {
        let sd = var.iter().map(|v| v.max(0.0).sqrt());
        let (lower, upper) = mean
            .iter()
            .zip(sd)
            .map(|(m, s)| (m - 2.0 * s, m + 2.0 * s))
            .unzip();
        Self {
            label: label.into(),
            x,
            y: mean,
            band: Some((lower, upper)),
        }
    }
}

/// Points drawn as dots.
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Legend label.
    pub label: String,
    /// Abscissae.
    pub x: Vec<f64>,
    /// Ordinates.
    pub y: Vec<f64>,
}

/// One panel of a [`PanelGrid`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// Lines (with bands), coloured in order.
    pub curves: Vec<Curve>,
    /// Point sets, drawn over the lines (the first in black).
    pub points: Vec<Scatter>,
}

/// A grid of panels sharing axis labels, with a figure title.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelGrid {
    /// The figure's title.
    pub title: String,
    /// The x-axis label of every panel.
    pub x_label: String,
    /// The y-axis label of every panel.
    pub y_label: String,
    /// Panels per row (at least 1).
    pub columns: usize,
    /// Size of one panel in pixels (width, height).
    pub panel_size: (u32, u32),
    /// The panels, row by row.
    pub panels: Vec<Panel>,
}

impl PanelGrid {
    /// A grid of `panels` in `columns` columns of 560 × 320 pixel panels (each with its legend
    /// to the right of its axes, off the data).
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        columns: usize,
        panels: Vec<Panel>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            columns,
            panel_size: (420 + LEGEND_WIDTH, 320),
            panels,
        }
    }

    /// The whole figure's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        (
            self.panel_size.0 * cols as u32,
            self.panel_size.1 * rows as u32 + TITLE_HEIGHT,
        )
    }

    /// Draws the figure to `<stem>.png` and `<stem>.svg` in the run's output folder.
    pub fn write(&self, ctx: &mut RunContext, stem: &str) -> Result<FigureFiles, BenchError> {
        self.check()?;
        write_both(ctx, stem, self)
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.panels.is_empty() || self.columns == 0 {
            return Err(BenchError::invalid(
                "panel grid",
                "needs at least one panel and one column",
            ));
        }
        for p in &self.panels {
            for c in &p.curves {
                check_series(&c.label, &c.x, &[&c.y])?;
                if let Some((lo, hi)) = &c.band {
                    check_series(&c.label, &c.x, &[lo, hi])?;
                }
            }
            for s in &p.points {
                check_series(&s.label, &s.x, &[&s.y])?;
            }
            if p.curves.is_empty() && p.points.is_empty() {
                return Err(BenchError::invalid(
                    "panel",
                    format!("`{}` is empty", p.title),
                ));
            }
        }
        Ok(())
    }
}

impl Figure for PanelGrid {
    fn size(&self) -> (u32, u32) {
        PanelGrid::size(self)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let cols = self.columns.min(self.panels.len());
        let rows = self.panels.len().div_ceil(cols);
        let body = root
            .titled(&self.title, (FAMILY, 22))
            .map_err(|e| e.to_string())?;
        for (panel, area) in self.panels.iter().zip(body.split_evenly((rows, cols))) {
            draw_panel(panel, &area, &self.x_label, &self.y_label).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Height of the figure title strip, in pixels.
const TITLE_HEIGHT: u32 = 40;

/// Width of the legend strip to the right of each panel's axes, in pixels.
const LEGEND_WIDTH: u32 = 140;

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
    x_label: &str,
    y_label: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xs = panel
        .curves
        .iter()
        .map(|c| c.x.as_slice())
        .chain(panel.points.iter().map(|s| s.x.as_slice()));
    let ys = panel
        .curves
        .iter()
        .flat_map(|c| {
            let band = c
                .band
                .iter()
                .flat_map(|(l, u)| [l.as_slice(), u.as_slice()]);
            std::iter::once(c.y.as_slice()).chain(band)
        })
        .chain(panel.points.iter().map(|s| s.y.as_slice()));
    let (x_range, y_range) = (padded_range(xs, 0.0), padded_range(ys, 0.05));

    // The legend goes in a strip beside the axes, so that it never hides data.
    let width = area.dim_in_pixel().0;
    let (area, legend) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    let mut chart = ChartBuilder::on(&area)
        .caption(&panel.title, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    let mut entries: Vec<(String, RGBColor, bool)> = Vec::new();
    for (i, c) in panel.curves.iter().enumerate() {
        let col = color(i);
        entries.push((c.label.clone(), col, true));
        if let Some((lo, hi)) = &c.band {
            let outline: Vec<(f64, f64)> =
                c.x.iter()
                    .zip(hi)
                    .map(|(x, y)| (*x, *y))
                    .chain(c.x.iter().zip(lo).rev().map(|(x, y)| (*x, *y)))
                    .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                col.mix(0.2).filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            c.x.iter().copied().zip(c.y.iter().copied()),
            col.stroke_width(2),
        ))?;
    }
    for (i, s) in panel.points.iter().enumerate() {
        let col = if i == 0 {
            BLACK
        } else {
            color(panel.curves.len() + i)
        };
        entries.push((s.label.clone(), col, false));
        chart.draw_series(
            s.x.iter()
                .zip(&s.y)
                .map(|(x, y)| Circle::new((*x, *y), 3, col.filled())),
        )?;
    }
    // One row per series, from the top of the axes: a line (curves) or a dot (points).
    for (k, (label, col, line)) in entries.into_iter().enumerate() {
        let y = 40 + 18 * k as i32;
        if line {
            legend.draw(&PathElement::new([(2, y), (20, y)], col.stroke_width(2)))?;
        } else {
            legend.draw(&Circle::new((11, y), 3, col.filled()))?;
        }
        legend.draw(&Text::new(label, (26, y - 7), (FAMILY, 12)))?;
    }
    Ok(())
}

/// One line of an [`ErrorBarChart`]: means with symmetric error bars.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSeries {
    /// Legend label.
    pub label: String,
    /// Abscissae, increasing.
    pub x: Vec<f64>,
    /// Means.
    pub mean: Vec<f64>,
    /// Half-widths of the error bars (e.g. standard errors).
    pub err: Vec<f64>,
}

/// A line chart with error bars, e.g. a metric against the number of context points.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBarChart {
    /// The figure's title.
    pub title: String,
    /// The x-axis label.
    pub x_label: String,
    /// The y-axis label.
    pub y_label: String,
    /// Logarithmic x axis (every x must then be $> 0$).
    pub log_x: bool,
    /// Size in pixels (width, height).
    pub size: (u32, u32),
    /// The lines.
    pub series: Vec<ErrorSeries>,
}

impl ErrorBarChart {
    /// A 640 × 440 pixel chart with a linear x axis.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<ErrorSeries>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            size: (640, 440),
            series,
        }
    }

    /// Draws the chart to `<stem>.png` and `<stem>.svg` in the run's output folder.
    pub fn write(&self, ctx: &mut RunContext, stem: &str) -> Result<FigureFiles, BenchError> {
        if self.series.is_empty() {
            return Err(BenchError::invalid("error-bar chart", "no series"));
        }
        for s in &self.series {
            check_series(&s.label, &s.x, &[&s.mean, &s.err])?;
            if self.log_x && s.x.iter().any(|x| *x <= 0.0) {
                return Err(BenchError::invalid(
                    "error-bar chart",
                    format!("`{}` has x ≤ 0 on a log axis", s.label),
                ));
            }
        }
        write_both(ctx, stem, self)
    }

    fn draw_on<DB, X>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x_spec: X,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let lows: Vec<Vec<f64>> = self
            .series
            .iter()
            .map(|s| {
                s.mean
                    .iter()
                    .zip(&s.err)
                    .map(|(m, e)| m - e.abs())
                    .collect()
            })
            .collect();
        let highs: Vec<Vec<f64>> = self
            .series
            .iter()
            .map(|s| {
                s.mean
                    .iter()
                    .zip(&s.err)
                    .map(|(m, e)| m + e.abs())
                    .collect()
            })
            .collect();
        let y = padded_range(lows.iter().chain(&highs).map(Vec::as_slice), 0.08);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_spec, y)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let col = color(i);
            chart
                .draw_series(LineSeries::new(
                    s.x.iter().copied().zip(s.mean.iter().copied()),
                    col.stroke_width(2),
                ))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(2)));
            chart.draw_series(s.x.iter().zip(&s.mean).zip(&s.err).map(|((x, m), e)| {
                ErrorBar::new_vertical(*x, m - e.abs(), *m, m + e.abs(), col.stroke_width(1), 8)
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.5))
            .draw()
    }
}

impl Figure for ErrorBarChart {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let xs = self.series.iter().map(|s| s.x.as_slice());
        let x = padded_range(xs, if self.log_x { 0.0 } else { 0.03 });
        if self.log_x {
            self.draw_on(root, ((x.start * 0.9)..(x.end * 1.1)).log_scale())
        } else {
            self.draw_on(root, x)
        }
        .map_err(|e| e.to_string())
    }
}

/// One map of a [`MapGrid`]: a value at each location, drawn as a filled cell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapPanel {
    /// The panel's title.
    pub title: String,
    /// Horizontal coordinates.
    pub x: Vec<f64>,
    /// Vertical coordinates.
    pub y: Vec<f64>,
    /// The values, coloured from the low to the high end of `range`.
    pub value: Vec<f64>,
    /// The colour scale's range (`None`: the values' own range).
    pub range: Option<(f64, f64)>,
    /// Locations marked with black dots (e.g. the adaptation points).
    pub marks: Vec<(f64, f64)>,
}

/// A grid of maps sharing axis labels, with a figure title.
#[derive(Debug, Clone, PartialEq)]
pub struct MapGrid {
    /// The figure's title.
    pub title: String,
    /// The x-axis label of every panel.
    pub x_label: String,
    /// The y-axis label of every panel.
    pub y_label: String,
    /// Panels per row (at least 1).
    pub columns: usize,
    /// Size of one panel in pixels (width, height).
    pub panel_size: (u32, u32),
    /// The maps, row by row.
    pub panels: Vec<MapPanel>,
}

/// Anchors of the colour scale (viridis at 0, 1/4, 1/2, 3/4, 1).
const VIRIDIS: [(u8, u8, u8); 5] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
];

/// The colour of `t` in $[0, 1]$ (clamped) on the viridis-like scale, by linear interpolation
/// between its anchors.
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The smallest positive gap between sorted distinct values (the cell size of a regular grid);
/// `fallback` if there is none.
fn cell_size(values: &[f64], fallback: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 1e-12)
        .fold(f64::INFINITY, f64::min)
        .min(fallback.max(f64::MIN_POSITIVE))
}

impl MapGrid {
    /// A grid of `panels` in `columns` columns of 400 × 360 pixel panels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        columns: usize,
        panels: Vec<MapPanel>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            columns,
            panel_size: (400, 360),
            panels,
        }
    }

    /// The whole figure's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        (
            self.panel_size.0 * cols as u32,
            self.panel_size.1 * rows as u32 + TITLE_HEIGHT,
        )
    }

    /// Draws the figure to `<stem>.png` and `<stem>.svg` in the run's output folder.
    pub fn write(&self, ctx: &mut RunContext, stem: &str) -> Result<FigureFiles, BenchError> {
        if self.panels.is_empty() || self.columns == 0 {
            return Err(BenchError::invalid(
                "map grid",
                "needs at least one panel and one column",
            ));
        }
        for p in &self.panels {
            check_series(&p.title, &p.x, &[&p.y, &p.value])?;
            if let Some((lo, hi)) = p.range
                && !(lo.is_finite() && hi.is_finite() && lo <= hi)
            {
                return Err(BenchError::invalid(
                    "map grid",
                    format!("`{}` has colour range {lo} … {hi}", p.title),
                ));
            }
        }
        write_both(ctx, stem, self)
    }
}

impl Figure for MapGrid {
    fn size(&self) -> (u32, u32) {
        MapGrid::size(self)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let cols = self.columns.min(self.panels.len());
        let rows = self.panels.len().div_ceil(cols);
        let body = root
            .titled(&self.title, (FAMILY, 22))
            .map_err(|e| e.to_string())?;
        // One extent for every panel, so maps of different sets line up.
        let x_range = padded_range(self.panels.iter().map(|p| p.x.as_slice()), 0.02);
        let y_range = padded_range(self.panels.iter().map(|p| p.y.as_slice()), 0.02);
        for (panel, area) in self.panels.iter().zip(body.split_evenly((rows, cols))) {
            draw_map(
                panel,
                &area,
                (&self.x_label, &self.y_label),
                (x_range.clone(), y_range.clone()),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn draw_map<DB: DrawingBackend>(
    panel: &MapPanel,
    area: &DrawingArea<DB, Shift>,
    labels: (&str, &str),
    ranges: (Range<f64>, Range<f64>),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (lo, hi) = panel.range.unwrap_or_else(|| {
        let r = padded_range(std::iter::once(panel.value.as_slice()), 0.0);
        (r.start, r.end)
    });
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    let (w, _) = area.dim_in_pixel();
    let (map_area, bar_area) = area.split_horizontally(w.saturating_sub(66));
    let (x_range, y_range) = ranges;
    let dx = cell_size(&panel.x, 0.02 * (x_range.end - x_range.start));
    let dy = cell_size(&panel.y, 0.02 * (y_range.end - y_range.start));
    let mut chart = ChartBuilder::on(&map_area)
        .caption(&panel.title, (FAMILY, 15))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(44)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(labels.0)
        .y_desc(labels.1)
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 12))
        .disable_mesh()
        .draw()?;
    chart.draw_series(
        panel
            .x
            .iter()
            .zip(&panel.y)
            .zip(&panel.value)
            .map(|((x, y), v)| {
                Rectangle::new(
                    [(x - dx / 2.0, y - dy / 2.0), (x + dx / 2.0, y + dy / 2.0)],
                    viridis((v - lo) / width).filled(),
                )
            }),
    )?;
    chart.draw_series(
        panel
            .marks
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 2, BLACK.filled())),
    )?;
    // The colour bar: 64 steps from lo (bottom) to hi (top).
    let mut bar = ChartBuilder::on(&bar_area)
        .margin_top(30)
        .margin_bottom(42)
        .margin_left(2)
        .right_y_label_area_size(46)
        .build_cartesian_2d(0.0..1.0, lo..lo + width)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .label_style((FAMILY, 10))
        .draw()?;
    let steps = 64;
    bar.draw_series((0..steps).map(|k| {
        let (a, b) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
        Rectangle::new(
            [(0.0, lo + a * width), (1.0, lo + b * width)],
            viridis((a + b) / 2.0).filled(),
        )
    }))?;
    Ok(())
}

/// Registers the embedded font with plotters, once per process.
fn ensure_font() -> Result<(), BenchError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(BenchError::Plot {
            path: PathBuf::from("assets/DejaVuSans-subset.ttf"),
            message: "the embedded font failed to load".to_string(),
        })
    }
}

/// Something drawn the same way on any backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `fig` to `<stem>.png` and `<stem>.svg` in the run's output folder.
fn write_both<F: Figure>(
    ctx: &mut RunContext,
    stem: &str,
    fig: &F,
) -> Result<FigureFiles, BenchError> {
    ensure_font()?;
    let png = ctx.path(&format!("{stem}.png"))?;
    let svg = ctx.path(&format!("{stem}.svg"))?;
    render(
        &png,
        fig,
        BitMapBackend::new(&png, fig.size()).into_drawing_area(),
    )?;
    render(
        &svg,
        fig,
        SVGBackend::new(&svg, fig.size()).into_drawing_area(),
    )?;
    ctx.record(&png);
    ctx.record(&svg);
    Ok(FigureFiles { png, svg })
}

fn render<F: Figure, DB: DrawingBackend>(
    path: &Path,
    fig: &F,
    root: DrawingArea<DB, Shift>,
) -> Result<(), BenchError> {
    let plot_err = |message: String| BenchError::Plot {
        path: path.to_path_buf(),
        message,
    };
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    fig.draw(&root).map_err(plot_err)?;
    root.present().map_err(|e| plot_err(e.to_string()))
}

/// Fails unless `x` and each of `ys` have the same, non-zero length and finite values.
fn check_series(label: &str, x: &[f64], ys: &[&[f64]]) -> Result<(), BenchError> {
    if x.is_empty() || ys.iter().any(|y| y.len() != x.len()) {
        return Err(BenchError::invalid(
            "figure data",
            format!("series `{label}` is empty or its lengths differ"),
        ));
    }
    if x.iter()
        .chain(ys.iter().flat_map(|y| y.iter()))
        .any(|v| !v.is_finite())
    {
        return Err(BenchError::invalid(
            "figure data",
            format!("series `{label}` has a non-finite value"),
        ));
    }
    Ok(())
}

/// The range of all values, widened by `pad` of its width on each side (by 1 if all are equal).
fn padded_range<'a>(values: impl Iterator<Item = &'a [f64]>, pad: f64) -> Range<f64> {
    let (lo, hi) = values
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let w = hi - lo;
    if w <= 0.0 {
        return (lo - 1.0)..(hi + 1.0);
    }
    (lo - pad * w)..(hi + pad * w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Profile;

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    fn ctx(root: &Path) -> RunContext {
        RunContext::new(root, "plots", 0, Profile::Quick).unwrap()
    }

    #[test]
    fn error_bar_chart_writes_png_and_svg() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = ctx(root.path());
        let m = [10.0, 100.0, 1000.0];
        let mut chart = ErrorBarChart::new(
            "RMSE vs m",
            "context points m",
            "RMSE",
            vec![
                ErrorSeries {
                    label: "NTK GP".into(),
                    x: m.to_vec(),
                    mean: vec![0.5, 0.2, 0.1],
                    err: vec![0.05, 0.02, 0.01],
                },
                ErrorSeries {
                    label: "RBF GP".into(),
                    x: m.to_vec(),
                    mean: vec![0.7, 0.4, 0.2],
                    err: vec![0.1, 0.05, 0.02],
                },
            ],
        );
        chart.log_x = true;
        let files = chart.write(&mut ctx, "rmse_vs_m").unwrap();
        let png = std::fs::read(&files.png).unwrap();
        assert_eq!(png_size(&png), (640, 440));
        assert!(png.len() > 5_000);
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("RMSE vs m") && svg.contains("NTK GP"));
        assert_eq!(ctx.outputs().len(), 2);
    }

    #[test]
    fn panel_grid_writes_png_and_svg() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = ctx(root.path());
        let x: Vec<f64> = (0..50).map(|i| i as f64 / 10.0).collect();
        let panel = |k: f64| Panel {
            title: format!("k = {k}"),
            curves: vec![Curve::mean_two_sd(
                "mean ± 2σ",
                x.clone(),
                x.iter().map(|x| (k * x).sin()).collect(),
                &[0.01; 50],
            )],
            points: vec![Scatter {
                label: "context".into(),
                x: vec![1.0, 2.0],
                y: vec![k.sin(), (2.0 * k).sin()],
            }],
        };
        let grid = PanelGrid::new(
            "Grid",
            "x",
            "y",
            2,
            vec![panel(1.0), panel(2.0), panel(3.0)],
        );
        assert_eq!(
            grid.size(),
            (2 * (420 + LEGEND_WIDTH), 2 * 320 + TITLE_HEIGHT)
        );
        let files = grid.write(&mut ctx, "grid").unwrap();
        let png = std::fs::read(&files.png).unwrap();
        assert_eq!(png_size(&png), grid.size());
        assert!(png.len() > 10_000);
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("k = 3") && svg.contains("<polygon"));
    }

    #[test]
    fn map_grid_writes_png_and_svg_and_checks_its_data() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = ctx(root.path());
        let (mut x, mut y, mut v) = (vec![], vec![], vec![]);
        for i in 0..20 {
            for j in 0..10 {
                x.push(i as f64 * 0.05);
                y.push(j as f64 * 0.1);
                v.push((i * j) as f64);
            }
        }
        let panel = |title: &str, range| MapPanel {
            title: title.into(),
            x: x.clone(),
            y: y.clone(),
            value: v.clone(),
            range,
            marks: vec![(0.5, 0.5)],
        };
        let grid = MapGrid::new(
            "Maps",
            "lon",
            "lat",
            2,
            vec![panel("own range", None), panel("fixed", Some((0.0, 100.0)))],
        );
        let files = grid.write(&mut ctx, "maps").unwrap();
        let png = std::fs::read(&files.png).unwrap();
        assert_eq!(png_size(&png), (800, 360 + TITLE_HEIGHT));
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("own range") && svg.contains("<rect"));
        assert!((cell_size(&x, 1.0) - 0.05).abs() < 1e-12);
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(2.0), RGBColor(253, 231, 37));
        let bad = MapGrid::new("t", "x", "y", 1, vec![panel("r", Some((1.0, 0.0)))]);
        assert!(bad.write(&mut ctx, "bad").is_err());
        let mut short = panel("s", None);
        short.value.pop();
        assert!(
            MapGrid::new("t", "x", "y", 1, vec![short])
                .write(&mut ctx, "bad")
                .is_err()
        );
    }

    #[test]
    fn bad_figure_data_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = ctx(root.path());
        let nan = Panel {
            title: "nan".into(),
            curves: vec![Curve::line("l", vec![0.0, 1.0], vec![0.0, f64::NAN])],
            points: vec![],
        };
        let grid = PanelGrid::new("t", "x", "y", 1, vec![nan]);
        assert!(matches!(
            grid.write(&mut ctx, "f"),
            Err(BenchError::Invalid { .. })
        ));
        let short = Curve::mean_two_sd("m", vec![0.0, 1.0], vec![0.0], &[1.0]);
        let grid = PanelGrid::new(
            "t",
            "x",
            "y",
            1,
            vec![Panel {
                curves: vec![short],
                ..Panel::default()
            }],
        );
        assert!(grid.write(&mut ctx, "f").is_err());
        assert!(
            PanelGrid::new("t", "x", "y", 2, vec![])
                .write(&mut ctx, "f")
                .is_err()
        );
        let mut log = ErrorBarChart::new(
            "t",
            "x",
            "y",
            vec![ErrorSeries {
                label: "s".into(),
                x: vec![0.0, 1.0],
                mean: vec![1.0, 1.0],
                err: vec![0.1, 0.1],
            }],
        );
        log.log_x = true;
        assert!(log.write(&mut ctx, "f").is_err());
        assert!(ctx.outputs().is_empty());
    }
}
