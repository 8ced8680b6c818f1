//! PNG plots of the size sweeps and of W3 over time, drawn with plotters.

use std::error::Error;

use codeheap_bench::memory::Sample;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Fonts tried, in order: the bitmap backend needs one to draw text.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> Result<()> {
    let bytes = FONTS
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .ok_or("no DejaVu Sans font found (apt-get install fonts-dejavu-core)")?;
    register_font("sans-serif", FontStyle::Normal, Vec::leak(bytes))
        .map_err(|_| "the font could not be read")?;
    Ok(())
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Nanoseconds per step against block size, log-log, one line per row.
pub fn sizes(
    path: &str,
    title: &str,
    rows: &[String],
    sizes: &[usize],
    by_size: &[Vec<f64>],
) -> Result<()> {
    load_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = by_size.iter().flatten().copied();
    let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (sizes[0] as f64..*sizes.last().expect("sizes") as f64).log_scale(),
            (lo * 0.7..hi * 1.4).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("block size (bytes)")
        .y_desc("ns per step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (r, name) in rows.iter().enumerate() {
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .zip(by_size)
            .map(|(&size, values)| (size as f64, values[r]))
            .collect();
        let style = color(r).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color(r).filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// W3: committed / live and PSS / live against steps, one line pair per row.
pub fn memory_over_time(path: &str, series: &[(String, Vec<Sample>)]) -> Result<()> {
    load_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let steps = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.step))
        .max()
        .unwrap_or(1) as f64;
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().flat_map(|x| [x.committed_ratio(), x.pss_ratio()]))
        .fold(1.2f64, f64::max)
        .min(8.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "W3: memory over live bytes during the churn (solid: committed, dashed: PSS)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..steps, 0.8f64..top * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("W1 steps")
        .y_desc("bytes / live requested bytes")
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(0.0, 1.15), (steps, 1.15)],
        BLACK.mix(0.5).stroke_width(1),
    ))?;
    for (r, (name, samples)) in series.iter().enumerate() {
        let style = color(r).stroke_width(2);
        let committed: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.step as f64, s.committed_ratio().min(top)))
            .collect();
        chart
            .draw_series(LineSeries::new(committed, style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        let pss: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.step as f64, s.pss_ratio().min(top)))
            .collect();
        chart.draw_series(DashedLineSeries::new(pss, 6, 4, color(r).stroke_width(2)))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
