//! Alert notifications: each new alert (`alert_warning`, `alert_critical`, `alert_recovery`) is
//! POSTed as JSON to every `--alert-webhook` URL.
//!
//! - Only `http` and `https` URLs are accepted ([`parse_urls`]: anything else stops the start
//!   with one line).
//! - A watcher reads the stored event log for alerts after the last one it saw, every
//!   [`POLL`]: it sees only committed events, in order, none twice, and costs the request path
//!   nothing. It starts after the events stored before the coordinator started (no replay).
//! - Each URL has its own bounded queue and delivery task, so a slow or dead receiver delays
//!   no other and never the coordinator: when its queue is full, the alert is dropped for that
//!   URL and counted (with a warning now and then).
//! - A delivery has a connect timeout and a total timeout, follows no redirect (a 3xx is a
//!   failure: a webhook's address should not move, and a redirect could send alerts elsewhere),
//!   and is retried after a connection error, a timeout, 408, 429 or 5xx, with doubling backoff,
//!   up to [`WebhookSettings::attempts`] attempts; then it is logged as failed. A 3xx or another
//!   4xx is not retried.
//! - URLs are logged without their credentials or query.
//!
//! Body: `{"level": "warning|critical|recovery", "swarm": name, "agent": name | null, "event":
//! event}`, where `event` is the event as `GET /api/v1/alerts` lists it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_core::{Event, EventKind};
use flotilla_store::EventFilter;
use reqwest::Url;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::state::AppState;

/// How often the watcher reads the event log for new alerts.
pub const POLL: Duration = Duration::from_millis(250);

/// Alerts read from the store at once.
const PAGE: usize = 500;

/// Where and how alerts are sent.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSettings {
    /// The receivers' URLs (`http` or `https`); none by default.
    pub urls: Vec<String>,
    /// Longest wait to connect (5 s).
    pub connect_timeout: Duration,
    /// Longest wait for one whole delivery, answer included (5 s).
    pub timeout: Duration,
    /// Attempts per alert and URL, the first included (3).
    pub attempts: u32,
    /// Wait before the second attempt, doubling after each (1 s).
    pub backoff: Duration,
    /// Alerts waiting per URL before new ones are dropped (1,000).
    pub queue: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            urls: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_secs(1),
            queue: 1000,
        }
    }
}

/// Checks the URLs: each must parse and be `http` or `https` with a host. The error is one line
/// naming the URL (without its credentials).
pub fn parse_urls(urls: &[String]) -> Result<Vec<Url>, String> {
    urls.iter()
        .map(|text| {
            let url = Url::parse(text.trim()).map_err(|e| {
                format!(
                    "--alert-webhook {}: not a URL ({e}); give e.g. https://alerts.example/hook",
                    shown(text)
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "--alert-webhook {}: only http:// and https:// URLs are accepted, not {}://",
                    shown(text),
                    url.scheme()
                ));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("--alert-webhook {}: it has no host", shown(text)));
            }
            Ok(url)
        })
        .collect()
}

/// A URL as it may be logged: no credentials, no query.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A URL given on the command line, as it may be shown: redacted when it parses, else its
/// scheme and host part only.
fn shown(text: &str) -> String {
    match Url::parse(text.trim()) {
        Ok(url) => redact(&url),
        Err(_) => text.split(['@', '?']).next_back().unwrap_or("").to_owned(),
    }
}

/// Counts of what became of alerts, over all URLs, since start.
#[derive(Debug, Default)]
pub struct WebhookStats {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
}

/// A snapshot of [`WebhookStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WebhookCounts {
    /// Alerts a receiver accepted (2xx).
    pub delivered: u64,
    /// Alerts given up on after their attempts (or at once, on a 3xx or 4xx).
    pub failed: u64,
    /// Alerts dropped because a URL's queue was full.
    pub dropped: u64,
    /// HTTP requests made, retries included.
    pub attempts: u64,
}

impl WebhookStats {
    /// The counts now.
    pub fn counts(&self) -> WebhookCounts {
        WebhookCounts {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
        }
    }
}

/// The body posted for one alert.
#[derive(Serialize)]
struct AlertBody<'a> {
    level: &'static str,
    swarm: Option<String>,
    agent: Option<String>,
    event: &'a Event,
}

/// Starts the watcher and one delivery task per URL (nothing when there are none). The
/// watcher ends when the coordinator shuts down; its handle is returned to wait for that.
pub fn start(
    state: &AppState,
    settings: &WebhookSettings,
    urls: Vec<Url>,
) -> Result<(Arc<WebhookStats>, Option<tokio::task::JoinHandle<()>>), String> {
    let stats = Arc::new(WebhookStats::default());
    if urls.is_empty() {
        return Ok((stats, None));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the alert webhooks' HTTP client: {e}"))?;
    let mut queues = Vec::with_capacity(urls.len());
    for url in urls {
        let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>(settings.queue.max(1));
        tokio::spawn(deliver(
            http.clone(),
            url.clone(),
            rx,
            settings.clone(),
            stats.clone(),
        ));
        queues.push((url, tx));
    }
    let after = state.fleet.lock().next_event_seq().saturating_sub(1);
    let watcher = tokio::spawn(watch(state.clone(), after, queues, stats.clone()));
    Ok((stats, Some(watcher)))
}

/// Reads new alerts from the store and queues them for every URL, until shutdown.
async fn watch(
    state: AppState,
    mut after: u64,
    queues: Vec<(Url, mpsc::Sender<Arc<Vec<u8>>>)>,
    stats: Arc<WebhookStats>,
) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let filter = EventFilter {
            swarm: None,
            kinds: vec![
                EventKind::AlertWarning,
                EventKind::AlertCritical,
                EventKind::AlertRecovery,
            ],
            agent: None,
            task: None,
            after,
            latest: false,
        };
        let reader = state.reader.clone();
        let read = tokio::task::spawn_blocking(move || reader.list_events(&filter, PAGE)).await;
        let events = match read {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "alert webhooks: cannot read the event log");
                continue;
            }
            Err(_) => continue,
        };
        for event in &events {
            after = after.max(event.seq);
            let body = {
                let fleet = state.fleet.lock();
                AlertBody {
                    level: match event.kind {
                        EventKind::AlertCritical => "critical",
                        EventKind::AlertRecovery => "recovery",
                        _ => "warning",
                    },
                    swarm: fleet.swarm_by_id(event.swarm_id).map(|s| s.name.clone()),
                    agent: event
                        .agent_id
                        .and_then(|a| fleet.agent(a))
                        .map(|a| a.name.clone()),
                    event,
                }
            };
            let Ok(json) = serde_json::to_vec(&body) else {
                continue;
            };
            let json = Arc::new(json);
            for (url, queue) in &queues {
                if queue.try_send(json.clone()).is_err()
                    && stats
                        .dropped
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(100)
                {
                    tracing::warn!(
                        webhook = %redact(url),
                        "alert webhook queue full (the receiver is slow or down): dropping alerts"
                    );
                }
            }
        }
        if events.len() == PAGE {
            // More is stored: read on without waiting.
            tick.reset_immediately();
        }
    }
}

/// Delivers one URL's alerts, one at a time, in order.
async fn deliver(
    http: reqwest::Client,
    url: Url,
    mut queue: mpsc::Receiver<Arc<Vec<u8>>>,
    settings: WebhookSettings,
    stats: Arc<WebhookStats>,
) {
    let shown = redact(&url);
    while let Some(body) = queue.recv().await {
        let mut backoff = settings.backoff;
        let attempts = settings.attempts.max(1);
        for attempt in 1..=attempts {
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            let sent = http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-flotilla-event", "alert")
                .body(body.as_ref().clone())
                .send()
                .await;
            let (retry, reason) = match sent {
                Ok(answer) if answer.status().is_success() => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(answer) => {
                    let status = answer.status();
                    let retry = matches!(status.as_u16(), 408 | 429) || status.is_server_error();
                    let reason = if status.is_redirection() {
                        format!("answered {status} (redirects are not followed)")
                    } else {
                        format!("answered {status}")
                    };
                    (retry, reason)
                }
                Err(e) if e.is_timeout() => (true, "timed out".to_owned()),
                Err(e) => (true, root_cause(&e)),
            };
            if !retry || attempt == attempts {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    webhook = %shown,
                    attempts = attempt,
                    "alert not delivered: {reason}"
                );
                break;
            }
            tracing::debug!(webhook = %shown, attempt, "alert delivery failed ({reason}); retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(
            parse_urls(&[
                "http://127.0.0.1:9/x".into(),
                "https://h.example/a?b=c".into()
            ])
            .is_ok()
        );
        for (bad, words) in [
            ("ftp://h.example/x", "only http:// and https://"),
            ("file:///etc/passwd", "only http:// and https://"),
            ("gopher://h.example", "only http:// and https://"),
            ("not a url", "not a URL"),
        ] {
            let err = parse_urls(&[bad.to_owned()]).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // Credentials are never shown.
        let err = parse_urls(&["ftp://user:secret@h.example/x".to_owned()]).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        let url = Url::parse("https://user:secret@h.example/hook?token=abc").unwrap();
        assert_eq!(redact(&url), "https://h.example/hook");
    }
}
