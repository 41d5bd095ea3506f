//! `flotilla top`: a live view of the fleet in the terminal (for people who live in tmux).
//!
//! Three parts: [`fetch`] reads one snapshot through the client, [`model`] keeps the state
//! without I/O (rows, throughput, focus, scroll, the swarm in view), [`render`] draws it with
//! ratatui. This module runs them: it takes over the terminal (raw mode, the alternate screen)
//! and gives it back however it ends, panics included; a task reads the coordinator every
//! interval while the loop answers keys at once.

pub mod fetch;
pub mod model;
pub mod render;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use flotilla_client::{Client, ClientError};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::{mpsc, watch};

use crate::cli::{GlobalArgs, TopArgs};
use crate::config;
use crate::output::now;
use fetch::Snapshot;
use model::{Action, Input, Model, ReadError};
use render::{Clock, Palette};

/// The shortest refresh interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How often ages on screen are redrawn between reads.
const REDRAW: Duration = Duration::from_secs(1);

/// How long a read may take at least before it counts as failed (twice the interval if that
/// is longer).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `flotilla top` until the user quits.
pub async fn run(global: &GlobalArgs, args: TopArgs) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "flotilla top needs a terminal (its output is not one); for a snapshot, use \
             `flotilla swarm list`, `flotilla agent list`, `flotilla task list` or \
             `flotilla events`, each with --json for machines"
        );
    }
    if args.interval < MIN_INTERVAL {
        bail!("--interval must be at least 100ms");
    }
    let client = config::client(global)?;
    let mut model = Model::new(client.base_url(), args.interval, args.swarm.clone());
    let palette = Palette::new(std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()));

    let mut terminal = TerminalGuard::enter()?;
    let (wanted_tx, wanted_rx) = watch::channel(Wanted {
        swarm: model.swarm.clone(),
        paused: false,
        refresh: 0,
    });
    let (read_tx, mut reads) = mpsc::channel(4);
    let reader = tokio::spawn(read_loop(client, args.interval, wanted_rx, read_tx));
    let result = ui_loop(&mut terminal, &mut model, palette, &wanted_tx, &mut reads).await;
    reader.abort();
    drop(terminal);
    result.map(|()| ExitCode::SUCCESS)
}

/// What the reading task is asked to read.
#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    /// The swarm in view.
    swarm: Option<String>,
    /// Reads are stopped.
    paused: bool,
    /// Bumped to ask for a read at once (also while paused).
    refresh: u64,
}

/// Reads a snapshot every `interval` unless paused, and at once when asked (a refresh, another
/// swarm, a resume), sending each outcome with the instant it finished.
async fn read_loop(
    client: Client,
    interval: Duration,
    mut wanted: watch::Receiver<Wanted>,
    reads: mpsc::Sender<(Result<Snapshot, ReadError>, Instant)>,
) {
    let mut refreshed = 0;
    loop {
        let asked = wanted.borrow_and_update().clone();
        if !asked.paused || asked.refresh != refreshed {
            refreshed = asked.refresh;
            // A coordinator that hangs (stopped, overloaded) is reported like one that is down,
            // long before the client's own timeout.
            let patience = (interval * 2).max(READ_TIMEOUT);
            let read = match tokio::time::timeout(
                patience,
                fetch::snapshot(&client, asked.swarm.as_deref()),
            )
            .await
            {
                Ok(read) => read.map_err(|e| ReadError {
                    // No answer at all, as against an error answer.
                    unreachable: matches!(e, ClientError::Http { .. }),
                    message: e.to_string(),
                }),
                Err(_) => Err(ReadError {
                    message: format!(
                        "no answer from {} within {}",
                        client.base_url(),
                        crate::output::millis(patience.as_millis() as u64)
                    ),
                    unreachable: true,
                }),
            };
            if reads.send((read, Instant::now())).await.is_err() {
                return;
            }
        }
        // The next read after the interval, or at once when something else is asked for
        // (another swarm, a refresh, a resume); while paused, only then.
        let changed = async {
            if wanted.changed().await.is_err() {
                // The loop is gone: nothing more to read for.
                std::future::pending::<()>().await;
            }
        };
        if asked.paused {
            changed.await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = changed => {}
            }
        }
    }
}

/// Draws, and answers keys, reads and resizes, until the user quits.
async fn ui_loop(
    terminal: &mut TerminalGuard,
    model: &mut Model,
    palette: Palette,
    wanted: &watch::Sender<Wanted>,
    reads: &mut mpsc::Receiver<(Result<Snapshot, ReadError>, Instant)>,
) -> Result<()> {
    let mut keys = EventStream::new();
    // A SIGTERM (a closed tmux pane, a kill) ends it like q, terminal restored.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let clock = Clock {
            wall: now(),
            mono: Instant::now(),
        };
        terminal
            .terminal
            .draw(|frame| render::draw(frame, model, palette, clock))?;
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => {
                    let Some(input) = input_for(key) else { continue };
                    let action = model.input(input);
                    if action == Action::Quit {
                        return Ok(());
                    }
                    let fetch = action == Action::Fetch;
                    wanted.send_if_modified(|w| {
                        let changed = fetch || w.swarm != model.swarm || w.paused != model.paused;
                        w.swarm.clone_from(&model.swarm);
                        w.paused = model.paused;
                        if fetch {
                            w.refresh += 1;
                        }
                        changed
                    });
                }
                Some(Ok(_)) => {} // a resize, a focus change, a paste: draw again
                Some(Err(e)) => bail!("cannot read the terminal: {e}"),
                None => return Ok(()),
            },
            Some((read, at)) = reads.recv() => model.apply(read, at),
            _ = term.recv() => return Ok(()),
            _ = redraw.tick() => {}
        }
    }
}

/// The input a key asks for, if any.
pub fn input_for(key: KeyEvent) -> Option<Input> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Input::Quit,
        _ if ctrl => return None,
        KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
        KeyCode::Tab => Input::NextPane,
        KeyCode::BackTab => Input::PrevPane,
        KeyCode::Up | KeyCode::Char('k') => Input::Up,
        KeyCode::Down | KeyCode::Char('j') => Input::Down,
        KeyCode::PageUp => Input::PageUp,
        KeyCode::PageDown => Input::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Input::Top,
        KeyCode::End | KeyCode::Char('G') => Input::Bottom,
        KeyCode::Char('s') => Input::CycleSwarm,
        KeyCode::Char('p') => Input::TogglePause,
        KeyCode::Char('r') => Input::Refresh,
        KeyCode::Char('?') => Input::ToggleHelp,
        _ => return None,
    })
}

/// The terminal, taken over: raw mode (keys come one by one, unechoed), the alternate screen
/// (what was on screen comes back afterwards), the cursor hidden. Dropping it gives all of that
/// back; so does a panic, through the hook [`TerminalGuard::enter`] installs.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        install_panic_hook();
        let entered = (|| -> std::io::Result<Terminal<CrosstermBackend<std::io::Stdout>>> {
            crossterm::terminal::enable_raw_mode()?;
            crossterm::execute!(
                std::io::stdout(),
                crossterm::terminal::EnterAlternateScreen,
                crossterm::cursor::Hide
            )?;
            Terminal::new(CrosstermBackend::new(std::io::stdout()))
        })();
        match entered {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore_terminal();
                bail!("cannot take over the terminal: {e}")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Gives the terminal back: each step is tried even if another failed.
fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Makes a panic restore the terminal before its message is printed (on the alternate screen,
/// in raw mode, it would be lost or garbled).
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_map_to_inputs() {
        let none = KeyModifiers::NONE;
        assert_eq!(input_for(key(KeyCode::Char('q'), none)), Some(Input::Quit));
        assert_eq!(input_for(key(KeyCode::Esc, none)), Some(Input::Quit));
        assert_eq!(
            input_for(key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Quit)
        );
        assert_eq!(input_for(key(KeyCode::Char('c'), none)), None);
        assert_eq!(
            input_for(key(KeyCode::Char('s'), KeyModifiers::CONTROL)),
            None
        );
        assert_eq!(input_for(key(KeyCode::Tab, none)), Some(Input::NextPane));
        assert_eq!(
            input_for(key(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(Input::PrevPane)
        );
        assert_eq!(input_for(key(KeyCode::Char('j'), none)), Some(Input::Down));
        assert_eq!(input_for(key(KeyCode::Up, none)), Some(Input::Up));
        assert_eq!(
            input_for(key(KeyCode::Char('s'), none)),
            Some(Input::CycleSwarm)
        );
        assert_eq!(
            input_for(key(KeyCode::Char('p'), none)),
            Some(Input::TogglePause)
        );
        assert_eq!(
            input_for(key(KeyCode::Char('?'), none)),
            Some(Input::ToggleHelp)
        );
        let mut release = key(KeyCode::Char('q'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(input_for(release), None);
    }
}
