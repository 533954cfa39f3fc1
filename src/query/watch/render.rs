//! Drawing one [`Snapshot`] with ratatui: the header, the progress tree,
//! the memory and CPU charts, the latest errors (with the selected one's
//! traceback in a scrollable window) and the log tail. Pure: what is drawn
//! depends only on the snapshot and the [`View`], so a test backend can
//! check every panel. Every stored string goes through `escape_text`, so no
//! control character a program printed reaches the terminal.

use super::snapshot::Snapshot;
use crate::query::metrics::human;
use crate::query::output::local_time;
use crate::query::rows::LogRow;
use crate::query::rows::ProgressRow;
use pmon_core::options::Panel;
use pmon_core::run::RunState;
use pmon_core::text::signal_name;
use pmon_core::text::{escape_text, first_line, humanize_duration};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Clear, Dataset, GraphType, LineGauge, List, ListItem, ListState,
    Paragraph, Wrap,
};
use ratatui::Frame;
use std::time::Duration;

/// What the user has chosen to look at.
#[derive(Debug, Clone)]
pub struct View {
    pub focus: Panel,
    /// `--panel`: this panel alone, full size.
    pub only: Option<Panel>,
    /// The selected error (0: the newest).
    pub selected_error: usize,
    /// The selected error's traceback is open, scrolled this far.
    pub traceback: Option<u16>,
    /// Lines the log tail is scrolled up from its end (0: follows the end).
    pub log_scroll: usize,
    /// Tasks the progress panel is scrolled down.
    pub progress_scroll: usize,
    /// `NO_COLOR` unset.
    pub color: bool,
}

impl View {
    pub fn new(only: Option<Panel>, color: bool) -> View {
        View {
            focus: only.unwrap_or(Panel::Progress),
            only,
            selected_error: 0,
            traceback: None,
            log_scroll: 0,
            progress_scroll: 0,
            color,
        }
    }

    fn style(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }
}

pub fn draw(frame: &mut Frame, snap: &Snapshot, view: &View) {
    let area = frame.area();
    let [header, body] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(header_lines(snap, view)), header);
    if let Some(waiting) = &snap.waiting {
        let text = Paragraph::new(escape_text(waiting))
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" pmon "));
        frame.render_widget(text, body);
        return;
    }
    match view.only {
        Some(panel) => draw_panel(frame, panel, body, snap, view),
        None => {
            let [top, bottom] =
                Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(body);
            let [progress, charts] =
                Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(top);
            let [errors, logs] =
                Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(bottom);
            draw_panel(frame, Panel::Progress, progress, snap, view);
            draw_panel(frame, Panel::Memory, charts, snap, view);
            draw_panel(frame, Panel::Errors, errors, snap, view);
            draw_panel(frame, Panel::Logs, logs, snap, view);
        }
    }
    if let Some(scroll) = view.traceback {
        draw_traceback(frame, body, snap, view, scroll);
    }
}

fn draw_panel(frame: &mut Frame, panel: Panel, area: Rect, snap: &Snapshot, view: &View) {
    match panel {
        Panel::Progress => draw_progress(frame, area, snap, view),
        Panel::Memory => draw_charts(frame, area, snap, view),
        Panel::Errors => draw_errors(frame, area, snap, view),
        Panel::Logs => draw_logs(frame, area, snap, view),
    }
}

fn block(title: &str, panel: Panel, view: &View) -> Block<'static> {
    let focused = view.focus == panel && view.only.is_none();
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "));
    if focused {
        block = block.border_style(view.style(Color::Cyan).add_modifier(Modifier::BOLD));
    }
    block
}

/// `experiment x · run 3 of 3 (01J…) · running · 5m 03s · pid 123 · host h`,
/// then the keys.
fn header_lines(snap: &Snapshot, view: &View) -> Vec<Line<'static>> {
    let mut first = vec![Span::styled(
        format!("pmon  {}", escape_text(&snap.experiment)),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(run) = &snap.run {
        let state_color = match run.state {
            RunState::Running => Color::Green,
            RunState::Paused => Color::Yellow,
            RunState::Succeeded => Color::Green,
            _ => Color::Red,
        };
        first.push(Span::raw(format!(
            "  run {} of {}  ",
            run.ordinal, snap.runs
        )));
        first.push(Span::styled(state_text(snap), view.style(state_color)));
        if let Some(elapsed) = snap.elapsed() {
            first.push(Span::raw(format!(
                "  {}",
                humanize_duration(Duration::from_secs_f64(elapsed))
            )));
        }
        if let Some(pid) = run.child_pid {
            first.push(Span::raw(format!("  pid {pid}")));
        }
        first.push(Span::raw(format!("  host {}", escape_text(&run.host))));
        // Last: on a narrow terminal it is what gets cut.
        first.push(Span::styled(
            format!("  {}", escape_text(&run.run_id)),
            view.style(Color::DarkGray),
        ));
    }
    let keys = if view.traceback.is_some() {
        "↑↓ PgUp PgDn: scroll   Enter/Esc: close   q: quit"
    } else {
        "Tab/←→: panel   ↑↓: select/scroll   Enter: traceback   q/Esc: quit"
    };
    vec![
        Line::from(first),
        Line::from(Span::styled(keys, view.style(Color::DarkGray))),
    ]
}

/// `failed (exit 1)`, `crashed (SIGKILL)`, `running`.
fn state_text(snap: &Snapshot) -> String {
    let Some(run) = &snap.run else {
        return String::new();
    };
    let state = run.state.as_str();
    if let Some(stalled) =
        crate::query::status::stalled_words(snap.stalled_since.as_deref(), snap.at)
    {
        return format!("{state} ({stalled})");
    }
    match (run.signal, run.exit_code) {
        (Some(signal), _) => format!("{state} ({})", signal_name(signal)),
        (None, Some(code)) if run.state != RunState::Succeeded => {
            format!("{state} (exit {code})")
        }
        _ => state.to_string(),
    }
}

fn draw_progress(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let outer = block("progress", Panel::Progress, view);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if snap.progress.is_empty() {
        frame.render_widget(Paragraph::new("no progress reported yet"), inner);
        return;
    }
    let rows = inner.height as usize;
    let skip = view
        .progress_scroll
        .min(snap.progress.len().saturating_sub(1));
    for (i, task) in snap.progress.iter().skip(skip).take(rows).enumerate() {
        let row = Rect {
            y: inner.y + i as u16,
            height: 1,
            ..inner
        };
        draw_task(frame, row, task, view);
    }
}

/// `  batch  ━━━━━━──── 66%  312/469 it  9.41 it/s  ETA 17s`.
fn draw_task(frame: &mut Frame, row: Rect, task: &ProgressRow, view: &View) {
    let depth = task.task.matches('/').count();
    let name = task.task.rsplit('/').next().unwrap_or(&task.task);
    let label = format!("{}{}", "  ".repeat(depth), escape_text(name));
    let name_width = (row.width / 4).clamp(8, 24);
    let [name_area, rest] =
        Layout::horizontal([Constraint::Length(name_width), Constraint::Min(0)]).areas(row);
    frame.render_widget(Paragraph::new(label), name_area);
    let figures = task_figures(task);
    let figures_width = (figures.chars().count() as u16 + 1).min(rest.width.saturating_sub(6));
    let [gauge_area, text_area] =
        Layout::horizontal([Constraint::Min(6), Constraint::Length(figures_width)]).areas(rest);
    match task.total.filter(|t| *t > 0.0) {
        Some(total) => {
            let ratio = (task.current / total).clamp(0.0, 1.0);
            let gauge = LineGauge::default()
                .ratio(ratio)
                .label(format!("{:>3.0}%", (ratio * 100.0).floor()))
                .filled_style(view.style(Color::Green))
                .line_set(symbols::line::THICK);
            frame.render_widget(gauge, gauge_area);
        }
        None => frame.render_widget(Paragraph::new("   ?"), gauge_area),
    }
    frame.render_widget(Paragraph::new(format!(" {figures}")), text_area);
}

fn task_figures(task: &ProgressRow) -> String {
    let unit = task.unit.as_deref().map(escape_text);
    let mut text = pmon_core::record::short_number(task.current);
    if let Some(total) = task.total {
        text.push('/');
        text.push_str(&pmon_core::record::short_number(total));
    }
    if let Some(unit) = &unit {
        text.push(' ');
        text.push_str(unit);
    }
    if let Some(rate) = task.rate {
        text.push_str(&format!("  {}/s", pmon_core::record::short_number(rate)));
    }
    if let Some(eta) = task.eta_s.filter(|e| *e > 0.0 && e.is_finite()) {
        let eta = Duration::from_secs_f64(eta.min(1e9).ceil());
        text.push_str(&format!("  ETA {}", humanize_duration(eta)));
    }
    text
}

fn draw_charts(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let [memory, cpu] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let last_memory = snap.memory.last().map(|(_, v)| human(*v, Some("bytes")));
    let title = match (&last_memory, snap.limit) {
        (Some(now), Some(limit)) => format!("memory {now} of {}", human(limit, Some("bytes"))),
        (Some(now), None) => format!("memory {now}"),
        (None, _) => "memory".to_string(),
    };
    let limit_line: Vec<(f64, f64)> = match (snap.limit, x_max(snap)) {
        (Some(limit), x) => vec![(0.0, limit), (x, limit)],
        _ => Vec::new(),
    };
    let peak = snap
        .memory
        .iter()
        .map(|(_, v)| *v)
        .chain(snap.limit)
        .fold(0.0, f64::max);
    let mut datasets = vec![dataset("rss", &snap.memory, view.style(Color::Magenta))];
    if !limit_line.is_empty() {
        datasets.push(dataset("limit", &limit_line, view.style(Color::Red)));
    }
    draw_chart(
        frame,
        memory,
        (&title, Panel::Memory),
        datasets,
        snap,
        view,
        (peak * 1.1).max(1.0),
        |v| human(v, Some("bytes")),
    );
    let last_cpu = snap.cpu.last().map(|(_, v)| format!("cpu {v:.0}%"));
    let cpu_max = snap.cpu.iter().map(|(_, v)| *v).fold(100.0, f64::max);
    draw_chart(
        frame,
        cpu,
        (last_cpu.as_deref().unwrap_or("cpu"), Panel::Memory),
        vec![dataset("cpu", &snap.cpu, view.style(Color::Blue))],
        snap,
        view,
        cpu_max,
        |v| format!("{v:.0}%"),
    );
}

fn dataset<'a>(name: &'a str, points: &'a [(f64, f64)], style: Style) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(symbols::Marker::Braille)
        .graph_type(GraphType::Line)
        .style(style)
        .data(points)
}

/// The x axis spans the run (while it is live, at least a minute, so a new
/// run's first samples are not stretched across the whole width).
fn x_max(snap: &Snapshot) -> f64 {
    let last = snap
        .memory
        .iter()
        .chain(&snap.cpu)
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    let span = snap.elapsed().unwrap_or(last).max(last);
    let live = snap.run.as_ref().is_some_and(|r| r.state.is_live());
    if live {
        span.max(60.0)
    } else {
        span.max(1.0)
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_chart(
    frame: &mut Frame,
    area: Rect,
    (title, panel): (&str, Panel),
    datasets: Vec<Dataset<'_>>,
    snap: &Snapshot,
    view: &View,
    y_max: f64,
    y_label: impl Fn(f64) -> String,
) {
    // The span goes in the title: an x axis with labels would take two of
    // the few rows a chart has at 80x24.
    let x = x_max(snap);
    let title = format!(
        "{title} · last {}",
        humanize_duration(Duration::from_secs_f64(x))
    );
    let chart = Chart::new(datasets)
        .block(block(&title, panel, view))
        .x_axis(Axis::default().bounds([0.0, x]))
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels([Span::raw(y_label(0.0)), Span::raw(y_label(y_max))]),
        )
        .hidden_legend_constraints((Constraint::Ratio(0, 1), Constraint::Ratio(0, 1)));
    frame.render_widget(chart, area);
}

fn draw_errors(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let title = format!("errors ({})", snap.errors.len());
    let outer = block(&title, Panel::Errors, view);
    if snap.errors.is_empty() {
        frame.render_widget(Paragraph::new("no errors").block(outer), area);
        return;
    }
    let items: Vec<ListItem> = snap
        .errors
        .iter()
        .map(|e| {
            ListItem::new(Line::from(vec![
                Span::styled(time_of(e), view.style(Color::DarkGray)),
                Span::raw(" "),
                Span::styled(
                    escape_text(first_line(&e.error_summary())),
                    view.style(Color::Red),
                ),
            ]))
        })
        .collect();
    let mut state =
        ListState::default().with_selected(Some(view.selected_error.min(snap.errors.len() - 1)));
    let list = List::new(items)
        .block(outer)
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, area, &mut state);
}

/// `10:00:03` in local time.
fn time_of(row: &LogRow) -> String {
    let full = local_time(&row.timestamp, false);
    full.rsplit(' ').next().unwrap_or(&full).to_string()
}

fn level_color(level: &str) -> Color {
    match level {
        "ERROR" | "CRITICAL" => Color::Red,
        "WARNING" => Color::Yellow,
        "DEBUG" => Color::DarkGray,
        _ => Color::Reset,
    }
}

fn draw_logs(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let outer = block("logs", Panel::Logs, view);
    let inner = outer.inner(area);
    let rows = inner.height as usize;
    let end = snap
        .logs
        .len()
        .saturating_sub(view.log_scroll.min(snap.logs.len()));
    let start = end.saturating_sub(rows);
    let lines: Vec<Line> = snap.logs[start..end]
        .iter()
        .map(|r| {
            let logger = r
                .logger
                .as_deref()
                .map(|l| format!("{}: ", escape_text(l)))
                .unwrap_or_default();
            Line::from(vec![
                Span::styled(time_of(r), view.style(Color::DarkGray)),
                Span::raw(" "),
                Span::styled(format!("{:<8}", r.level), view.style(level_color(&r.level))),
                Span::raw(format!("{logger}{}", escape_text(&r.message))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(outer), area);
}

/// The selected error's whole traceback, over the panels.
fn draw_traceback(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View, scroll: u16) {
    let Some(error) = snap.errors.get(view.selected_error) else {
        return;
    };
    let text: Vec<Line> = match &error.traceback {
        Some(tb) => tb.lines().map(|l| Line::raw(escape_text(l))).collect(),
        None => vec![
            Line::raw(escape_text(&error.message)),
            Line::raw("(no traceback)"),
        ],
    };
    let popup = Rect {
        x: area.x + 1,
        y: area.y,
        width: area.width.saturating_sub(2),
        height: area.height,
    };
    let title = format!(
        " {} {} ",
        time_of(error),
        escape_text(first_line(&error.error_summary()))
    );
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text)
            .block(Block::default().borders(Borders::ALL).title(title))
            .scroll((scroll, 0)),
        popup,
    );
}
