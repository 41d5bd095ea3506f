//! Drawing `flotilla top` with ratatui: a header of totals, the swarms, the agents, the queue
//! and the newest events, a line of keys, and the help on top when asked. Tables build only
//! the rows that fit, so a frame costs the same with 10 agents or 10,000.

use std::time::Instant;

use flotilla_core::{AgentStatus, HealthState, SwarmStatus, Timestamp};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};

use super::model::{Link, Model, Pane, View};
use crate::output::{age, ellipsize, millis};

/// Colours, or none at all (`NO_COLOR`).
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    color: bool,
}

impl Palette {
    /// Colours when `color`, plain text (bold and reverse only) otherwise.
    pub fn new(color: bool) -> Palette {
        Palette { color }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn agent_status(self, s: AgentStatus) -> Style {
        self.fg(match s {
            AgentStatus::Busy => Color::Green,
            AgentStatus::Idle => Color::Reset,
            AgentStatus::Pending | AgentStatus::Starting | AgentStatus::Paused => Color::Cyan,
            AgentStatus::Recovering => Color::Yellow,
            AgentStatus::Unhealthy | AgentStatus::Failed => Color::Red,
            AgentStatus::Stopped => Color::DarkGray,
        })
    }

    fn health(self, h: HealthState) -> Style {
        self.fg(match h {
            HealthState::Healthy => Color::Reset,
            HealthState::Degraded => Color::Yellow,
            HealthState::Unhealthy => Color::Red,
        })
    }

    fn swarm_status(self, s: SwarmStatus) -> Style {
        self.fg(match s {
            SwarmStatus::Active => Color::Green,
            SwarmStatus::Degraded => Color::Yellow,
            _ => Color::Reset,
        })
    }
}

/// The wall clock and the monotonic one, read once per frame.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// For the ages of what the coordinator timestamped.
    pub wall: Timestamp,
    /// For the ages of reads.
    pub mono: Instant,
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, model: &Model, palette: Palette, clock: Clock) {
    let area = frame.area();
    let swarm_rows = model.view.as_ref().map_or(1, |v| v.swarms.len().max(1));
    // A line more while the coordinator is unreachable: its error may take two.
    let header_lines = 6 + u16::from(matches!(model.link, Link::Down { .. }));
    let [header, swarms, agents, bottom, footer] = Layout::vertical([
        Constraint::Length(header_lines),
        Constraint::Length(swarm_rows.min(5) as u16 + 3),
        Constraint::Min(6),
        Constraint::Length(12),
        Constraint::Length(1),
    ])
    .areas(area);
    let [queue, events] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom);

    draw_header(frame, header, model, palette, clock);
    match &model.view {
        Some(view) => {
            draw_swarms(frame, swarms, model, view, palette);
            draw_agents(frame, agents, model, view, palette, clock);
            draw_queue(frame, queue, model, view, clock);
            draw_events(frame, events, model, view, clock);
        }
        None => {
            for (pane, rect) in [
                (Pane::Swarms, swarms),
                (Pane::Agents, agents),
                (Pane::Queue, queue),
                (Pane::Events, events),
            ] {
                let block = pane_block(model, pane, title(pane).to_owned());
                frame.render_widget(
                    Paragraph::new("waiting for the first read…").block(block),
                    rect,
                );
            }
        }
    }
    draw_footer(frame, footer, model);
    if model.help {
        draw_help(frame, area);
    }
}

fn title(pane: Pane) -> &'static str {
    match pane {
        Pane::Swarms => "Swarms",
        Pane::Agents => "Agents",
        Pane::Queue => "Queue",
        Pane::Events => "Events",
    }
}

/// A pane's frame: bold with a marker when it has the focus.
fn pane_block(model: &Model, pane: Pane, text: String) -> Block<'static> {
    let focused = model.pane == pane;
    let block = Block::bordered();
    if focused {
        block
            .title(Span::styled(
                format!("▶ {text} "),
                Style::new().add_modifier(Modifier::BOLD),
            ))
            .border_style(Style::new().add_modifier(Modifier::BOLD))
    } else {
        block.title(format!(" {text} "))
    }
}

/// The rows of `len` to show in `height` lines, scrolled to `scroll` (the last page is kept
/// full), and the title's `a–b of n`.
fn window(len: usize, height: usize, scroll: usize) -> (std::ops::Range<usize>, String) {
    let start = scroll.min(len.saturating_sub(height));
    let end = (start + height).min(len);
    let text = if len == 0 {
        "none".to_owned()
    } else if start == 0 && end == len {
        len.to_string()
    } else {
        format!("{}–{} of {len}", start + 1, end)
    };
    (start..end, text)
}

fn draw_header(frame: &mut Frame, area: Rect, model: &Model, palette: Palette, clock: Clock) {
    let mut lines = Vec::new();
    let scope = match &model.swarm {
        Some(s) => format!("swarm {s}"),
        None => "all swarms".to_owned(),
    };
    let mut first = vec![Span::raw(format!(
        "{}  ·  showing {scope}  ·  every {}",
        model.url,
        millis(model.interval.as_millis() as u64)
    ))];
    if let Some(v) = &model.view {
        first.push(Span::raw(format!(
            "  ·  v{} up {}  ·  bus {}",
            v.info.version,
            millis(v.info.uptime_ms),
            v.info.bus
        )));
    }
    if model.paused {
        first.push(Span::styled(
            "  PAUSED (p resumes)",
            Style::new().add_modifier(Modifier::REVERSED),
        ));
    }
    lines.push(Line::from(first));
    if let Some(v) = &model.view {
        lines.push(agents_line(v));
        lines.push(tasks_line(model, v));
    }
    lines.push(link_line(model, palette, clock));
    let block = Block::bordered().title(Span::styled(
        " flotilla top ",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    frame.render_widget(
        Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
        area,
    );
}

fn agents_line(v: &View) -> Line<'static> {
    let t = &v.totals;
    let by_status: Vec<String> = t
        .agents
        .by_status
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    let by_status = if by_status.is_empty() {
        String::new()
    } else {
        format!(": {}", by_status.join(" · "))
    };
    Line::raw(format!(
        "swarms {}   agents {}{by_status}",
        t.swarms, t.agents.total
    ))
}

fn tasks_line(model: &Model, v: &View) -> Line<'static> {
    let q = &v.totals.tasks;
    let oldest = v
        .totals
        .oldest_queued_ms
        .map_or_else(String::new, |ms| format!("   oldest waits {}", millis(ms)));
    let rate = match model.throughput.rate() {
        Some(r) => format!(
            "   throughput {} done · {} failed (last {})",
            per_min(r.done_per_min),
            per_min(r.failed_per_min),
            millis(r.over.as_millis() as u64)
        ),
        None => "   throughput measuring…".to_owned(),
    };
    Line::raw(format!(
        "queue {} ready · {} delayed · {} running · {} assigned · {} blocked{oldest}{rate}",
        q.queued, q.delayed, q.running, q.assigned, q.blocked
    ))
}

fn per_min(n: f64) -> String {
    if n >= 100.0 {
        format!("{n:.0}/min")
    } else {
        format!("{n:.1}/min")
    }
}

fn link_line(model: &Model, palette: Palette, clock: Clock) -> Line<'static> {
    let every = millis(model.interval.as_millis() as u64);
    match &model.link {
        Link::Connecting => Line::raw(format!("connecting to {}…", model.url)),
        Link::Up(at) => Line::styled(
            format!(
                "updated {} ago",
                millis(clock.mono.saturating_duration_since(*at).as_millis() as u64)
            ),
            palette.fg(Color::DarkGray),
        ),
        Link::Down {
            error,
            unreachable,
            since,
            failures,
        } => {
            let kept = if model.view.is_some() {
                " — showing the last good read"
            } else {
                ""
            };
            let what = if *unreachable {
                "coordinator unreachable"
            } else {
                "cannot read the fleet"
            };
            Line::styled(
                format!(
                    "{what} for {} ({failures} failed reads), retrying every \
                     {every}: {error}{kept}",
                    millis(clock.mono.saturating_duration_since(*since).as_millis() as u64)
                ),
                palette.fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        }
    }
}

fn draw_swarms(frame: &mut Frame, area: Rect, model: &Model, v: &View, palette: Palette) {
    let height = area.height.saturating_sub(3) as usize;
    let (range, count) = window(v.swarms.len(), height, model.scroll(Pane::Swarms));
    let opt = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows = v.swarms[range].iter().map(|s| {
        Row::new(vec![
            Span::raw(s.name.clone()),
            Span::styled(s.status.as_str(), palette.swarm_status(s.status)),
            Span::raw(s.topology),
            Span::raw(s.agents.to_string()),
            Span::raw(opt(s.busy)),
            Span::raw(s.queue_depth.to_string()),
            Span::raw(opt(s.running)),
            Span::raw(s.oldest_queued_ms.map_or_else(|| "-".to_owned(), millis)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(24),
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(header_row(&[
        "NAME",
        "STATUS",
        "TOPOLOGY",
        "AGENTS",
        "BUSY",
        "QUEUE",
        "RUNNING",
        "OLDEST WAIT",
    ]))
    .block(pane_block(model, Pane::Swarms, format!("Swarms {count}")));
    frame.render_widget(table, area);
}

fn draw_agents(
    frame: &mut Frame,
    area: Rect,
    model: &Model,
    v: &View,
    palette: Palette,
    clock: Clock,
) {
    let height = area.height.saturating_sub(3) as usize;
    let (range, count) = window(v.agents.len(), height, model.scroll(Pane::Agents));
    let rows = v.agents[range].iter().map(|a| {
        Row::new(vec![
            Span::raw(ellipsize(&a.name, 28)),
            Span::raw(ellipsize(&a.swarm, 16)),
            Span::styled(a.status.as_str(), palette.agent_status(a.status)),
            Span::styled(ellipsize(&a.health_text, 26), palette.health(a.health)),
            Span::raw(ellipsize(&a.task, 30)),
            Span::raw(
                a.cpu_percent
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
            ),
            Span::raw(
                a.memory_mb
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.0} MiB")),
            ),
            Span::raw(age(a.last_heartbeat_at, clock.wall)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(28),
            Constraint::Length(16),
            Constraint::Length(10),
            Constraint::Length(26),
            Constraint::Length(30),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(header_row(&[
        "NAME",
        "SWARM",
        "STATUS",
        "HEALTH",
        "CURRENT TASK",
        "CPU",
        "MEMORY",
        "HEARTBEAT",
    ]))
    .block(pane_block(model, Pane::Agents, format!("Agents {count}")));
    frame.render_widget(table, area);
}

fn draw_queue(frame: &mut Frame, area: Rect, model: &Model, v: &View, clock: Clock) {
    let block = pane_block(model, Pane::Queue, "Queue".to_owned());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let q = &v.totals.tasks;
    let note = if v.queued_complete {
        format!(
            "oldest {} of {} queued",
            v.oldest_queued.len(),
            v.queued_read
        )
    } else {
        format!(
            "oldest of the newest {} queued (more wait{})",
            v.queued_read,
            v.totals
                .oldest_queued_ms
                .map_or_else(String::new, |ms| format!("; the oldest for {}", millis(ms)))
        )
    };
    let [counts, list] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    frame.render_widget(
        Paragraph::new(vec![
            Line::raw(format!(
                "{} ready  {} delayed  {} running  {} assigned  {} blocked",
                q.queued, q.delayed, q.running, q.assigned, q.blocked
            )),
            Line::styled(note, Style::new().add_modifier(Modifier::DIM)),
        ]),
        counts,
    );
    let height = list.height.saturating_sub(1) as usize;
    let (range, _) = window(v.oldest_queued.len(), height, model.scroll(Pane::Queue));
    let rows = v.oldest_queued[range].iter().map(|t| {
        let waits = match t.run_after {
            Some(after) if after > clock.wall => format!("retry {}", age(after, clock.wall)),
            _ => millis(clock.wall.since(t.queued_at).as_millis() as u64),
        };
        Row::new(vec![
            waits,
            t.priority.to_string(),
            ellipsize(&t.task_type, 20),
            ellipsize(&t.swarm, 12),
            super::model::short_id(t.id.0),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(3),
            Constraint::Length(20),
            Constraint::Length(12),
            Constraint::Fill(1),
        ],
    )
    .header(header_row(&["WAITING", "PRI", "TYPE", "SWARM", "TASK"]));
    frame.render_widget(table, list);
}

fn draw_events(frame: &mut Frame, area: Rect, model: &Model, v: &View, clock: Clock) {
    let height = area.height.saturating_sub(3) as usize;
    let (range, count) = window(v.events.len(), height, model.scroll(Pane::Events));
    let rows = v.events[range].iter().map(|e| {
        Row::new(vec![
            age(e.at, clock.wall),
            e.kind.as_str().to_owned(),
            ellipsize(&e.agent, 20),
            e.detail.clone(),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(22),
            Constraint::Length(20),
            Constraint::Fill(1),
        ],
    )
    .header(header_row(&["WHEN", "TYPE", "AGENT", "WHAT"]))
    .block(pane_block(
        model,
        Pane::Events,
        format!("Events, newest first {count}"),
    ));
    frame.render_widget(table, area);
}

fn header_row(names: &[&'static str]) -> Row<'static> {
    Row::new(names.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn draw_footer(frame: &mut Frame, area: Rect, model: &Model) {
    let swarm = model.swarm.as_deref().unwrap_or("all");
    let pause = if model.paused { "resume" } else { "pause" };
    frame.render_widget(
        Paragraph::new(format!(
            " q quit  Tab pane  ↑↓/jk scroll  s swarm ({swarm})  p {pause}  r refresh  ? help"
        ))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// The keys, in a box over the middle of the screen.
fn draw_help(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::raw("q, Esc, Ctrl-C   quit"),
        Line::raw("Tab, Shift-Tab   next, previous pane"),
        Line::raw("↑ ↓, k j         scroll the pane a row"),
        Line::raw("PgUp PgDn        scroll a page"),
        Line::raw("Home End, g G    first, last row"),
        Line::raw("s                show the next swarm alone, then all"),
        Line::raw("p                pause or resume the refresh"),
        Line::raw("r                refresh now"),
        Line::raw("?                show or hide this help"),
    ];
    let box_area = area.centered(
        Constraint::Length(58),
        Constraint::Length(text.len() as u16 + 2),
    );
    frame.render_widget(Clear, box_area);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" keys ")),
        box_area,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::commands::top::model::tests::{NOW, snapshot};
    use crate::commands::top::model::{Input, Model, ReadError};

    fn clock(at: Instant) -> Clock {
        Clock {
            wall: Timestamp::from_millis(NOW),
            mono: at,
        }
    }

    /// The screen as text, a line per row.
    fn screen(model: &Model, at: Instant, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, model, Palette::new(true), clock(at)))
            .unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_screen_shows_totals_swarms_agents_queue_and_events() {
        let t0 = Instant::now();
        let mut m = Model::new("http://127.0.0.1:7171", Duration::from_secs(1), None);
        m.apply(Ok(snapshot(0)), t0);
        let s = screen(&m, t0 + Duration::from_millis(300), 160, 48);
        for want in [
            "flotilla top",
            "http://127.0.0.1:7171",
            "showing all swarms",
            "swarms 2",
            "agents 3: 1 idle · 1 busy · 1 unhealthy",
            "7 ready · 2 delayed · 3 running",
            "oldest waits 1m35s",
            "throughput measuring",
            "updated 300ms ago",
            // swarms
            "alpha",
            "beta",
            "star",
            // agents
            "coder-10",
            "busy",
            "unhealthy",
            "compile …",
            "12.5%",
            "64 MiB",
            "3s ago",
            // queue
            "oldest 3 of 3 queued",
            "review-0",
            "1m",
            // events
            "agent_failed",
            "missed 3 heartbeats",
            "q quit",
        ] {
            assert!(s.contains(want), "{want:?} not on screen:\n{s}");
        }
        let idle = s.find("coder-2").unwrap();
        let busy = s.find("coder-10").unwrap();
        assert!(idle < busy, "natural order:\n{s}");
        let newest = s.find("agent_failed").unwrap();
        let older = s.find("agent_joined").unwrap();
        assert!(newest < older, "newest event first:\n{s}");
    }

    #[test]
    fn an_unreachable_coordinator_is_in_the_header() {
        let t0 = Instant::now();
        let mut m = Model::new("http://127.0.0.1:9", Duration::from_secs(2), None);
        m.apply(
            Err(ReadError {
                message: "cannot reach http://127.0.0.1:9: connection refused".into(),
                unreachable: true,
            }),
            t0,
        );
        let s = screen(&m, t0 + Duration::from_secs(4), 140, 40);
        assert!(s.contains("coordinator unreachable for 4s"), "{s}");
        assert!(s.contains("retrying every 2s"), "{s}");
        assert!(s.contains("connection refused"), "{s}");
        assert!(s.contains("waiting for the first read"), "{s}");
        // With an earlier read, its view stays.
        m.apply(Ok(snapshot(0)), t0);
        m.apply(
            Err(ReadError {
                message: "no swarm named \"gone\" (404 not_found)".into(),
                unreachable: false,
            }),
            t0 + Duration::from_secs(1),
        );
        let s = screen(&m, t0 + Duration::from_secs(2), 160, 48);
        assert!(s.contains("cannot read the fleet for 1s"), "{s}");
        assert!(s.contains("showing the last good read"), "{s}");
        assert!(s.contains("coder-10"), "{s}");
    }

    #[test]
    fn scrolling_pausing_and_help_show() {
        let t0 = Instant::now();
        let mut m = Model::new("http://x", Duration::from_secs(1), None);
        m.apply(Ok(snapshot(200)), t0);
        let s = screen(&m, t0, 160, 48);
        assert!(s.contains("Agents 1–"), "{s}");
        assert!(s.contains("of 203"), "{s}");
        assert!(!s.contains("bulk-150"), "{s}");
        m.input(Input::Bottom);
        let s = screen(&m, t0, 160, 48);
        assert!(s.contains("bulk-199"), "{s}");
        assert!(s.contains("–203 of 203"), "{s}");
        assert!(
            !s.contains("coder-10"),
            "scrolled past the first rows:\n{s}"
        );
        m.input(Input::TogglePause);
        m.input(Input::ToggleHelp);
        let s = screen(&m, t0, 160, 48);
        assert!(s.contains("PAUSED"), "{s}");
        assert!(s.contains("pause or resume the refresh"), "{s}");
        assert!(s.contains("p resume"), "{s}");
        // A tiny terminal does not break the drawing.
        let _ = screen(&m, t0, 20, 5);
    }
}
