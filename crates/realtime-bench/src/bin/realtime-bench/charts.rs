//! PNG charts of a run with plotters: latency CDF, latency against N, memory per
//! connection. Text needs a font: a TrueType font found on the machine is registered at run
//! time; without one the charts are drawn without text and the markdown carries the labels.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use realtime_bench::hist::cdf_points;

use crate::report::median;
use crate::results::{RunResults, SessionResult, TargetKind};

/// Fonts tried, in order.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;
const SERVER: RGBColor = RGBColor(200, 30, 30);
const SERVER_LIGHT: RGBColor = RGBColor(240, 140, 140);
const BASE: RGBColor = RGBColor(30, 80, 200);
const BASE_LIGHT: RGBColor = RGBColor(130, 160, 240);

/// Registers a font once; whether text can be drawn.
fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_CANDIDATES.iter().any(|path| {
            std::fs::read(path).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour.
    pub color: RGBColor,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// Axis and title texts.
pub struct Texts<'a> {
    /// Title.
    pub title: &'a str,
    /// X axis.
    pub x: &'a str,
    /// Y axis.
    pub y: &'a str,
    /// Formats x tick labels.
    pub x_fmt: &'a dyn Fn(&f64) -> String,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// Draws `series` as lines into an RGB buffer of `WIDTH` × `HEIGHT`.
pub fn draw_lines(buf: &mut [u8], texts: &Texts<'_>, series: &[Series]) -> anyhow::Result<()> {
    let font = have_font();
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.08 };
    let root = BitMapBackend::with_buffer(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if font {
        builder
            .caption(texts.title, ("sans-serif", 22))
            .x_label_area_size(48)
            .y_label_area_size(72);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, 0.0..y1).map_err(|e| anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    if font {
        mesh.x_desc(texts.x)
            .y_desc(texts.y)
            .x_label_formatter(texts.x_fmt)
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| anyhow!("{e}"))?;
    for s in series {
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        let drawn = chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| anyhow!("{e}"))?;
        if font {
            let color = s.color;
            drawn.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    ShapeStyle::from(&color).stroke_width(2),
                )
            });
        }
    }
    if font {
        chart
            .configure_series_labels()
            .position(texts.legend.clone())
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Renders a line chart to a PNG file.
pub fn line_chart(path: &Path, texts: &Texts<'_>, series: &[Series]) -> anyhow::Result<()> {
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw_lines(&mut buf, texts, series)?;
    write_png(path, &buf)
}

fn write_png(path: &Path, rgb: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

fn sessions_of(results: &RunResults, kind: TargetKind) -> impl Iterator<Item = &SessionResult> {
    results.sessions.iter().filter(move |s| s.target == kind)
}

/// Per-N medians over `kind`'s sessions of `f` applied to each ramp step / memory sample.
fn per_n(
    results: &RunResults,
    kind: TargetKind,
    f: impl Fn(&SessionResult, u32) -> Option<f64>,
) -> Vec<(f64, f64)> {
    results
        .plan
        .steps()
        .into_iter()
        .filter_map(|n| {
            let values: Vec<f64> = sessions_of(results, kind).filter_map(|s| f(s, n)).collect();
            median(values).map(|v| (f64::from(n), v))
        })
        .collect()
}

/// Nearest sample to step `n` (failed handshakes make N slightly smaller than the step).
fn near<T>(items: &[T], n: u32, step: u32, n_of: impl Fn(&T) -> u32) -> Option<&T> {
    items.iter().find(|i| n_of(i).abs_diff(n) <= step / 2)
}

/// Renders the three charts into `dir`; their titles and file names.
pub fn render_all(results: &RunResults, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let step = results.plan.step;
    let kinds = [
        (TargetKind::RealtimeServer, SERVER, SERVER_LIGHT),
        (TargetKind::Baseline, BASE, BASE_LIGHT),
    ];
    let mut out = Vec::new();

    // 1. Per-delivery latency CDF at the main N (all repetitions merged).
    let mut series = Vec::new();
    for (kind, color, _) in kinds {
        let mut hist = realtime_bench::hist::new_hist();
        for s in sessions_of(results, kind) {
            if let Some(f) = &s.fanout {
                f.delivery_hist.add_to(&mut hist);
            }
        }
        if hist.is_empty() {
            continue;
        }
        let points = cdf_points(&hist, 400)
            .into_iter()
            .map(|(us, q)| ((us.max(10) as f64 / 1000.0).log10(), q))
            .collect();
        series.push(Series { name: kind.name().to_owned(), color, points });
    }
    let title = format!("Broadcast delivery latency CDF at N = {}", results.plan.n_main);
    let log_ms = |v: &f64| {
        let ms = 10f64.powf(*v);
        if ms >= 10.0 { format!("{ms:.0}") } else { format!("{ms:.2}") }
    };
    line_chart(
        &dir.join("latency_cdf.png"),
        &Texts {
            title: &title,
            x: "latency (ms, log scale)",
            y: "fraction of deliveries",
            x_fmt: &log_ms,
            legend: SeriesLabelPosition::LowerRight,
        },
        &series,
    )?;
    out.push((
        format!("{title} (red: realtime-server, blue: baseline)"),
        "latency_cdf.png".to_owned(),
    ));

    // 2. Broadcast completion p50 / p99 against N.
    let mut series = Vec::new();
    for (kind, color, light) in kinds {
        let p99 = per_n(results, kind, |s, n| {
            near(&s.steps, n, step, |x| x.n).map(|x| x.completion.p99_us as f64 / 1000.0)
        });
        let p50 = per_n(results, kind, |s, n| {
            near(&s.steps, n, step, |x| x.n).map(|x| x.completion.p50_us as f64 / 1000.0)
        });
        if !p99.is_empty() {
            series.push(Series { name: format!("{} p99", kind.name()), color, points: p99 });
            series.push(Series { name: format!("{} p50", kind.name()), color: light, points: p50 });
        }
    }
    let plain = |v: &f64| format!("{v:.0}");
    let title = "Broadcast completion (last receiver) against N";
    line_chart(
        &dir.join("latency_vs_n.png"),
        &Texts {
            title,
            x: "connections",
            y: "completion (ms)",
            x_fmt: &plain,
            legend: SeriesLabelPosition::UpperLeft,
        },
        &series,
    )?;
    out.push((
        format!("{title} (red: realtime-server, blue: baseline; dark p99, light p50)"),
        "latency_vs_n.png".to_owned(),
    ));

    // 3. RSS per connection against N.
    let mut series = Vec::new();
    for (kind, color, _) in kinds {
        let points = per_n(results, kind, |s, n| {
            near(&s.memory, n, step, |m| m.n).map(|m| m.rss_per_conn_bytes / 1024.0)
        });
        if !points.is_empty() {
            series.push(Series { name: kind.name().to_owned(), color, points });
        }
    }
    let title = "Server RSS per connection against N";
    line_chart(
        &dir.join("memory_per_conn.png"),
        &Texts {
            title,
            x: "connections",
            y: "KiB per connection",
            x_fmt: &plain,
            legend: SeriesLabelPosition::LowerRight,
        },
        &series,
    )?;
    out.push((
        format!("{title} (red: realtime-server, blue: baseline)"),
        "memory_per_conn.png".to_owned(),
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_with_and_without_points() {
        let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
        let fmt = |v: &f64| format!("{v}");
        let texts = Texts {
            title: "t",
            x: "x",
            y: "y",
            x_fmt: &fmt,
            legend: SeriesLabelPosition::UpperLeft,
        };
        let series =
            [Series { name: "a".into(), color: SERVER, points: vec![(0.0, 1.0), (2.0, 3.0)] }];
        draw_lines(&mut buf, &texts, &series).unwrap();
        assert!(buf.iter().any(|&b| b != 255), "nothing drawn");
        draw_lines(&mut buf, &texts, &[]).unwrap();
        let path =
            std::env::temp_dir().join(format!("realtime-bench-chart-{}.png", std::process::id()));
        line_chart(&path, &texts, &series).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let _ = std::fs::remove_file(path);
    }
}
