//! Pressure detection: how close each resource is to exhaustion, where it is heading, and
//! what the coordinator does about it.
//!
//! Pure: the driver samples usage (as a fraction of what is available, 0 to 1) and feeds it
//! with the time of the sample to [`PressureMonitor::observe`]. Each signal keeps
//! - an exponentially weighted moving average (`alpha` 0.3 by default), which levels are judged
//!   on, so one noisy sample does not move them;
//! - a least-squares line through the last `window` raw samples (20), whose slope predicts when
//!   the resource runs out ([`SignalState::exhaustion_in`]);
//! - a level with hysteresis: it rises as soon as the average reaches a threshold, and falls
//!   only once the average is `hysteresis` (0.05) below it. A predicted exhaustion within
//!   `horizon` (60 s) raises an `elevated` signal to `high`.
//!
//! [`ResponsePolicy`] says at which level each automatic response starts; the driver enacts
//! [`ResponsePolicy::active`]'s difference from what it enacted before.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::time::Timestamp;

/// How pressed a resource is.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(as = PressureLevel)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below `elevated`.
    #[default]
    Normal,
    /// Worth watching.
    Elevated,
    /// Act: stop growing, warn.
    High,
    /// Act harder: pause, shed.
    Critical,
}

impl Level {
    /// Its name in flags and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Elevated => "elevated",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "normal" => Ok(Level::Normal),
            "elevated" => Ok(Level::Elevated),
            "high" => Ok(Level::High),
            "critical" => Ok(Level::Critical),
            other => Err(CoreError::invalid(format!(
                "unknown pressure level {other:?}; expected elevated, high or critical"
            ))),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is measured.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The machine's CPU, busy time over all cores.
    MachineCpu,
    /// The machine's memory in use (total minus available).
    MachineMemory,
    /// The data directory's file system, used space.
    MachineDisk,
    /// CPU used by managed agents, over the resource manager's CPU capacity.
    FleetCpu,
    /// Memory (RSS) of managed agents, over the resource manager's memory capacity.
    FleetMemory,
}

impl Signal {
    /// Whether it measures CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Signal::MachineCpu | Signal::FleetCpu)
    }

    /// Its name in the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MachineCpu => "machine_cpu",
            Signal::MachineMemory => "machine_memory",
            Signal::MachineDisk => "machine_disk",
            Signal::FleetCpu => "fleet_cpu",
            Signal::FleetMemory => "fleet_memory",
        }
    }
}

/// Thresholds, smoothing and prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {
    /// Average at or above which a signal is `elevated` (0.70).
    pub elevated: f64,
    /// … `high` (0.85).
    pub high: f64,
    /// … `critical` (0.95).
    pub critical: f64,
    /// How far below a threshold the average must fall to leave its level (0.05).
    pub hysteresis: f64,
    /// Weight of a new sample in the average (0.3).
    pub alpha: f64,
    /// Raw samples the trend is fitted to (20).
    pub window: usize,
    /// A predicted exhaustion within this raises `elevated` to `high` (60 s).
    #[serde(rename = "horizon_ms", with = "crate::time::serde_ms")]
    #[schema(value_type = u64)]
    pub horizon: Duration,
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            elevated: 0.70,
            high: 0.85,
            critical: 0.95,
            hysteresis: 0.05,
            alpha: 0.3,
            window: 20,
            horizon: Duration::from_secs(60),
        }
    }
}

impl PressureConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        let ok = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        let ordered = self.elevated < self.high && self.high < self.critical;
        if !(ok(self.elevated) && ok(self.high) && ok(self.critical) && ordered) {
            return Err(CoreError::invalid(
                "pressure thresholds must satisfy 0 < elevated < high < critical <= 1",
            ));
        }
        if !self.hysteresis.is_finite() || !(0.0..0.5).contains(&self.hysteresis) {
            return Err(CoreError::invalid(
                "pressure hysteresis must be at least 0 and below 0.5",
            ));
        }
        if !ok(self.alpha) {
            return Err(CoreError::invalid(
                "pressure alpha must be above 0 and at most 1",
            ));
        }
        if !(3..=1000).contains(&self.window) {
            return Err(CoreError::invalid(
                "pressure window must be between 3 and 1000 samples",
            ));
        }
        Ok(())
    }

    /// The level a value reaches, the thresholds lowered by `slack`.
    fn level_of(&self, value: f64, slack: f64) -> Level {
        if value >= self.critical - slack {
            Level::Critical
        } else if value >= self.high - slack {
            Level::High
        } else if value >= self.elevated - slack {
            Level::Elevated
        } else {
            Level::Normal
        }
    }
}

/// A signal's recent samples: (when, value). A named type, for the OpenAPI derive, which
/// cannot read a tuple type even in a field it skips.
type Samples = VecDeque<(Timestamp, f64)>;

/// One signal's history and judgement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalState {
    /// The last raw sample.
    pub last: f64,
    /// The moving average.
    pub smoothed: f64,
    /// The trend, in fraction per second (positive: rising).
    pub slope_per_sec: f64,
    /// When the fitted trend reaches 1, from the last sample; `None` when not rising.
    #[serde(rename = "exhaustion_in_ms", with = "crate::time::serde_ms::option")]
    #[schema(value_type = Option<u64>)]
    pub exhaustion_in: Option<Duration>,
    /// Its level.
    pub level: Level,
    /// Why it is at that level, in words.
    pub reason: String,
    #[serde(skip)]
    #[schema(ignore)]
    samples: Samples,
}

impl SignalState {
    /// Takes a sample (clamped to 0..=1) and judges again; returns the level before.
    fn observe(&mut self, at: Timestamp, value: f64, config: &PressureConfig) -> Level {
        let value = if value.is_finite() {
            value.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.smoothed = if self.samples.is_empty() {
            value
        } else {
            config.alpha * value + (1.0 - config.alpha) * self.smoothed
        };
        self.last = value;
        self.samples.push_back((at, value));
        while self.samples.len() > config.window {
            self.samples.pop_front();
        }
        let (slope, fitted_now) = trend(&self.samples).unwrap_or((0.0, value));
        self.slope_per_sec = slope;
        self.exhaustion_in = (slope > 1e-6)
            .then(|| Duration::from_secs_f64(((1.0 - fitted_now).max(0.0) / slope).min(1e9)));
        let before = self.level;
        let by_value = config.level_of(self.smoothed, 0.0);
        let predicted =
            self.exhaustion_in.is_some_and(|d| d <= config.horizon) && by_value == Level::Elevated;
        let raised = if predicted { Level::High } else { by_value };
        self.level = if raised >= before {
            raised
        } else {
            // Leaving a level needs the average clearly below its threshold (and no
            // prediction holding it up).
            let held = config.level_of(self.smoothed, config.hysteresis);
            raised.max(held.min(before))
        };
        self.reason = format!(
            "{:.0}% averaged ({:.0}% last){}",
            self.smoothed * 100.0,
            value * 100.0,
            match self.exhaustion_in {
                Some(d) if predicted => format!(", exhausted in ~{}s at this rate", d.as_secs()),
                _ => String::new(),
            }
        );
        before
    }
}

/// The least-squares line through `(time, value)` samples: its slope per second and its value
/// at the last sample. `None` with fewer than 3 samples or no time between them.
fn trend(samples: &VecDeque<(Timestamp, f64)>) -> Option<(f64, f64)> {
    if samples.len() < 3 {
        return None;
    }
    let t0 = samples.front()?.0;
    let xs: Vec<f64> = samples
        .iter()
        .map(|(t, _)| t.since(t0).as_secs_f64())
        .collect();
    let n = samples.len() as f64;
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = samples.iter().map(|(_, v)| v).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(samples.iter())
        .map(|(x, (_, y))| (x - mean_x) * (y - mean_y))
        .sum();
    let slope = sxy / sxx;
    let last_x = *xs.last()?;
    Some((slope, mean_y + slope * (last_x - mean_x)))
}

/// A change of a signal's level.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelChange {
    /// The signal.
    pub signal: Signal,
    /// Its level before.
    pub from: Level,
    /// Its level now.
    pub to: Level,
    /// Why, in words.
    pub reason: String,
}

/// Every signal's state.
#[derive(Clone, Debug, Default)]
pub struct PressureMonitor {
    config: PressureConfig,
    signals: BTreeMap<Signal, SignalState>,
}

impl PressureMonitor {
    /// A monitor with these settings (checked).
    pub fn new(config: PressureConfig) -> Result<Self, CoreError> {
        config.validate()?;
        Ok(PressureMonitor {
            config,
            signals: BTreeMap::new(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &PressureConfig {
        &self.config
    }

    /// Takes one sample of each signal given, at `at`; returns the level changes.
    pub fn observe(&mut self, at: Timestamp, samples: &[(Signal, f64)]) -> Vec<LevelChange> {
        let mut changes = Vec::new();
        for &(signal, value) in samples {
            let state = self.signals.entry(signal).or_default();
            let from = state.observe(at, value, &self.config);
            if from != state.level {
                changes.push(LevelChange {
                    signal,
                    from,
                    to: state.level,
                    reason: state.reason.clone(),
                });
            }
        }
        changes
    }

    /// Each signal's state.
    pub fn signals(&self) -> &BTreeMap<Signal, SignalState> {
        &self.signals
    }

    /// The highest level of the signals that drive responses (CPU ones only with
    /// `with_cpu`: a saturated CPU slows work down, exhausted memory or disk breaks it), with
    /// the signal and its reason.
    pub fn level(&self, with_cpu: bool) -> (Level, Option<(Signal, String)>) {
        self.signals
            .iter()
            .filter(|(sig, _)| with_cpu || !sig.is_cpu())
            .max_by_key(|(_, s)| s.level)
            .filter(|(_, s)| s.level > Level::Normal)
            .map(|(sig, s)| (s.level, Some((*sig, s.reason.clone()))))
            .unwrap_or((Level::Normal, None))
    }
}

/// At which level each automatic response starts (`None`: never).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsePolicy {
    /// Emit an alert (warning below `critical`, critical at it) and its recovery (`high`).
    pub alert: Option<Level>,
    /// Refuse scale-up (`high`).
    pub stop_scale_up: Option<Level>,
    /// Pause the managed agents of the lowest-priority pools (`critical`).
    pub pause_low_priority: Option<Level>,
    /// Refuse new tasks below [`ResponsePolicy::shed_below`] (`critical`).
    pub shed: Option<Level>,
    /// Task priority below which submissions are shed (3).
    pub shed_below: u8,
    /// Hold back dispatch of tasks below [`ResponsePolicy::delay_below`] (`high`).
    pub delay: Option<Level>,
    /// Task priority below which dispatch is delayed (5).
    pub delay_below: u8,
    /// Whether CPU signals drive responses too (false: they are measured and shown only).
    pub cpu_responds: bool,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        ResponsePolicy {
            alert: Some(Level::High),
            stop_scale_up: Some(Level::High),
            pause_low_priority: Some(Level::Critical),
            shed: Some(Level::Critical),
            shed_below: 3,
            delay: Some(Level::High),
            delay_below: 5,
            cpu_responds: false,
        }
    }
}

/// The responses in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Responses {
    /// An alert is raised.
    pub alert: bool,
    /// Scale-up is refused.
    pub stop_scale_up: bool,
    /// The lowest-priority managed agents are paused.
    pub pause_low_priority: bool,
    /// Submissions below this priority are refused.
    pub shed_below: Option<u8>,
    /// Dispatch below this priority is held back.
    pub delay_below: Option<u8>,
}

impl ResponsePolicy {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), CoreError> {
        for (name, level) in [
            ("alert", self.alert),
            ("stop_scale_up", self.stop_scale_up),
            ("pause_low_priority", self.pause_low_priority),
            ("shed", self.shed),
            ("delay", self.delay),
        ] {
            if level == Some(Level::Normal) {
                return Err(CoreError::invalid(format!(
                    "pressure response {name} cannot start at the normal level; use elevated, high, critical or off"
                )));
            }
        }
        if !(1..=10).contains(&self.shed_below) || !(1..=10).contains(&self.delay_below) {
            return Err(CoreError::invalid(
                "shed_below and delay_below are task priorities, 1 to 10",
            ));
        }
        Ok(())
    }

    /// The responses in force at `level`.
    pub fn active(&self, level: Level) -> Responses {
        let on = |at: Option<Level>| at.is_some_and(|at| level >= at);
        Responses {
            alert: on(self.alert),
            stop_scale_up: on(self.stop_scale_up),
            pause_low_priority: on(self.pause_low_priority),
            shed_below: on(self.shed).then_some(self.shed_below),
            delay_below: on(self.delay).then_some(self.delay_below),
        }
    }
}

/// Which agents to pause under pressure: among `(agent, pool priority)` of running managed
/// agents, those of the lowest priority level, unless every one is at that level (pausing
/// everything would stop the fleet, not relieve it).
pub fn lowest_priority<T: Copy>(running: &[(T, u8)]) -> Vec<T> {
    let Some(lowest) = running.iter().map(|&(_, p)| p).min() else {
        return Vec::new();
    };
    if running.iter().all(|&(_, p)| p == lowest) {
        return Vec::new();
    }
    running
        .iter()
        .filter(|&&(_, p)| p == lowest)
        .map(|&(a, _)| a)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_millis((secs * 1000.0) as i64)
    }

    fn monitor() -> PressureMonitor {
        PressureMonitor::new(PressureConfig::default()).unwrap()
    }

    /// Feeds `values` every 2 s from t = 0; returns every level seen after each sample.
    fn feed(m: &mut PressureMonitor, start: f64, values: &[f64]) -> Vec<Level> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                m.observe(at(start + 2.0 * i as f64), &[(Signal::FleetMemory, v)]);
                m.signals()[&Signal::FleetMemory].level
            })
            .collect()
    }

    #[test]
    fn a_steady_rise_predicts_when_the_resource_runs_out() {
        let mut m = monitor();
        // 1 % per second from 20 %: at t = 38 s it is at 58 %, so 42 s are left.
        let values: Vec<f64> = (0..20).map(|i| 0.20 + 0.02 * i as f64).collect();
        feed(&mut m, 0.0, &values);
        let s = &m.signals()[&Signal::FleetMemory];
        assert!((s.slope_per_sec - 0.01).abs() < 1e-9, "{s:?}");
        let left = s.exhaustion_in.expect("rising").as_secs_f64();
        assert!((left - 42.0).abs() < 0.01, "{left}");
    }

    #[test]
    fn flat_or_falling_usage_predicts_no_exhaustion() {
        let mut m = monitor();
        feed(&mut m, 0.0, &[0.5; 10]);
        assert_eq!(m.signals()[&Signal::FleetMemory].exhaustion_in, None);
        feed(&mut m, 20.0, &[0.45, 0.4, 0.35, 0.3]);
        let s = &m.signals()[&Signal::FleetMemory];
        assert!(s.slope_per_sec < 0.0 && s.exhaustion_in.is_none(), "{s:?}");
    }

    #[test]
    fn levels_rise_through_each_threshold() {
        let mut m = monitor();
        let levels = feed(&mut m, 0.0, &[0.5; 5]);
        assert!(levels.iter().all(|&l| l == Level::Normal));
        let levels = feed(&mut m, 10.0, &[0.99; 12]);
        // The average climbs through elevated and high to critical, in that order, never down.
        assert!(levels.windows(2).all(|w| w[0] <= w[1]), "{levels:?}");
        assert!(levels.contains(&Level::Elevated) || levels.contains(&Level::High));
        assert_eq!(*levels.last().unwrap(), Level::Critical);
        let (level, why) = m.level(false);
        assert_eq!(level, Level::Critical);
        assert_eq!(why.unwrap().0, Signal::FleetMemory);
    }

    #[test]
    fn noise_around_a_threshold_does_not_flap() {
        let mut m = monitor();
        // Settle just above `high` (0.85), then jitter ±4 points around it.
        feed(&mut m, 0.0, &[0.87; 10]);
        assert_eq!(m.signals()[&Signal::FleetMemory].level, Level::High);
        let noisy: Vec<f64> = (0..60)
            .map(|i| 0.85 + if i % 2 == 0 { 0.04 } else { -0.04 })
            .collect();
        let levels = feed(&mut m, 20.0, &noisy);
        assert!(levels.iter().all(|&l| l == Level::High), "{levels:?}");
    }

    #[test]
    fn falling_usage_recovers_step_by_step_after_the_hysteresis() {
        let mut m = monitor();
        feed(&mut m, 0.0, &[0.97; 15]);
        assert_eq!(m.signals()[&Signal::FleetMemory].level, Level::Critical);
        // Just under critical (0.95) but within the hysteresis: stays critical.
        feed(&mut m, 30.0, &[0.93; 15]);
        assert_eq!(m.signals()[&Signal::FleetMemory].level, Level::Critical);
        let levels = feed(&mut m, 60.0, &[0.1; 20]);
        assert!(levels.windows(2).all(|w| w[0] >= w[1]), "{levels:?}");
        assert_eq!(*levels.last().unwrap(), Level::Normal);
        assert_eq!(m.level(false).0, Level::Normal);
        // CPU signals count only when asked.
        m.observe(at(200.0), &[(Signal::MachineCpu, 1.0)]);
        assert_eq!(m.level(false).0, Level::Normal);
        assert_eq!(m.level(true).0, Level::Critical);
    }

    #[test]
    fn a_fast_rise_raises_elevated_to_high_before_the_threshold() {
        // 72 % and rising 2 % per second: out in ~14 s, within the 60 s horizon.
        let values: Vec<f64> = (0..4).map(|i| 0.66 + 0.04 * i as f64).collect();
        // Judge the raw value, to isolate the prediction.
        let cfg = PressureConfig {
            alpha: 1.0,
            ..PressureConfig::default()
        };
        let mut m = PressureMonitor::new(cfg).unwrap();
        let levels = feed(&mut m, 0.0, &values);
        assert_eq!(levels[..2], [Level::Normal, Level::Elevated]);
        assert_eq!(*levels.last().unwrap(), Level::High, "{levels:?}");
        assert!(
            m.signals()[&Signal::FleetMemory]
                .reason
                .contains("exhausted in")
        );
    }

    #[test]
    fn responses_follow_the_policy() {
        let p = ResponsePolicy::default();
        assert_eq!(p.active(Level::Elevated), Responses::default());
        let high = p.active(Level::High);
        assert!(high.alert && high.stop_scale_up && !high.pause_low_priority);
        assert_eq!((high.shed_below, high.delay_below), (None, Some(5)));
        let critical = p.active(Level::Critical);
        assert!(critical.pause_low_priority);
        assert_eq!(critical.shed_below, Some(3));
        let off = ResponsePolicy {
            pause_low_priority: None,
            ..p
        };
        assert!(!off.active(Level::Critical).pause_low_priority);
        assert!(
            ResponsePolicy {
                alert: Some(Level::Normal),
                ..ResponsePolicy::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn only_the_lowest_priority_agents_are_paused_and_never_all() {
        assert_eq!(lowest_priority(&[(1, 5), (2, 2), (3, 9), (4, 2)]), [2, 4]);
        assert!(lowest_priority(&[(1, 5), (2, 5)]).is_empty());
        assert!(lowest_priority::<u8>(&[]).is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = PressureConfig {
            high: 0.6,
            ..PressureConfig::default()
        };
        assert!(PressureMonitor::new(bad).is_err());
        assert!(
            PressureMonitor::new(PressureConfig {
                window: 1,
                ..PressureConfig::default()
            })
            .is_err()
        );
    }
}
