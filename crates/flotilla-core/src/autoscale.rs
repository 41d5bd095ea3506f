//! The autoscaler: decides, from a managed pool's metrics, when it should grow or shrink.
//!
//! It is pure: the driver calls [`Autoscaler::evaluate`] with the pool, its metrics
//! ([`PoolView`], computed by [`crate::Fleet::pool_view`]) and the instant, as often as it likes
//! (the server does every 100 ms); each policy is evaluated once per `evaluation_period`.
//!
//! Rules, per pool:
//! - a policy *votes up* once its metric has been at or above `scale_up_threshold` for
//!   `evaluation_periods` evaluations in a row, *down* once at or below `scale_down_threshold`
//!   as many times in a row; anything between breaks both runs;
//! - the pool grows if any enabled policy votes up (by the largest `scale_up_increment` of those
//!   that do), and shrinks only if every enabled policy votes down (by the smallest
//!   `scale_down_increment`): growing wins, as in Kubernetes' HPA;
//! - never past `min_agents`/`max_agents`; from the pool's desired size (`min_agents` when none
//!   was set);
//! - a policy does not act within its `cooldown` after the pool's last action (automatic or
//!   manual, see [`Autoscaler::record_action`]): growth needs one voting policy out of its
//!   cooldown, shrinking needs all;
//! - a growth can be vetoed (the resource manager: not enough room, memory pressure); the
//!   runs of the voting policies start again, so a veto is asked at most once per
//!   `evaluation_periods` periods;
//! - after an action every run of the pool starts again: the new size needs fresh evidence.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::api::PoolView;
use crate::ids::SwarmId;
use crate::pool::{Pool, ScalingMetric, ScalingPolicy};
use crate::time::Timestamp;

/// How far back [`WaitWindow::p95`] looks.
pub const WAIT_WINDOW: Duration = Duration::from_secs(60);

/// How many waits [`WaitWindow`] keeps.
pub const WAIT_SAMPLES: usize = 256;

/// The most recent queue waits of one pool's tasks (queued to placed or started): at most
/// [`WAIT_SAMPLES`], and only those of the last [`WAIT_WINDOW`] count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaitWindow {
    samples: VecDeque<(Timestamp, Duration)>,
}

impl WaitWindow {
    /// Records that a task, queued since `queued_at`, left the queue at `now`.
    pub fn record(&mut self, queued_at: Timestamp, now: Timestamp) {
        if self.samples.len() == WAIT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, now.since(queued_at)));
    }

    /// The 95th percentile (nearest rank) of the waits of the last [`WAIT_WINDOW`] before `now`.
    pub fn p95(&self, now: Timestamp) -> Option<Duration> {
        let since = now - WAIT_WINDOW;
        let mut waits: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, w)| *w)
            .collect();
        if waits.is_empty() {
            return None;
        }
        waits.sort_unstable();
        // Nearest rank: the smallest wait at or above which 95% of the waits lie.
        let rank = (waits.len() * 95).div_ceil(100);
        Some(waits[rank.max(1) - 1])
    }
}

/// The value of a policy's metric in a pool's view.
pub fn metric_value(metric: ScalingMetric, view: &PoolView) -> f64 {
    match metric {
        ScalingMetric::QueueDepth => view.queue.per_agent,
        ScalingMetric::AgentUtilization => view.utilization,
        ScalingMetric::ErrorRate => view.error_rate,
        ScalingMetric::LatencyP95 => view.wait_p95_ms.unwrap_or(0) as f64,
    }
}

/// Which way a pool is resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More agents.
    Up,
    /// Fewer agents.
    Down,
}

/// A resize the autoscaler decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The pool's swarm.
    pub swarm_id: SwarmId,
    /// The pool.
    pub pool: String,
    /// Up or down.
    pub direction: Direction,
    /// Its desired size before.
    pub from: u32,
    /// Its desired size after.
    pub to: u32,
    /// Why, in words: the policies, their metrics and thresholds.
    pub reason: String,
}

/// What an evaluation concluded, when it concluded something.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Resize the pool.
    Scale(Decision),
    /// The pool should grow, but the veto refused it, for this reason.
    Vetoed(Decision, String),
}

/// Where one policy stands.
#[derive(Clone, Debug, Default)]
struct PolicyState {
    last_evaluated: Option<Timestamp>,
    /// Evaluations in a row at or above the up threshold.
    above: u32,
    /// Evaluations in a row at or below the down threshold.
    below: u32,
    /// The metric at the last evaluation.
    value: f64,
    /// The metric's last values, oldest first (predictive policies).
    history: std::collections::VecDeque<f64>,
    /// The value the trend forecast at the last evaluation, when that forecast (not the value
    /// itself) made it a breach.
    forecast: Option<f64>,
}

/// Periods of history a predictive policy fits its trend to.
const TREND_PERIODS: usize = 10;

/// The metric `ahead` periods after the last of `history` (one value per period), by the
/// least-squares line through them; `None` with fewer than three values.
pub fn forecast(history: &std::collections::VecDeque<f64>, ahead: f64) -> Option<f64> {
    let n = history.len();
    if n < 3 {
        return None;
    }
    let mean_x = (n - 1) as f64 / 2.0;
    let mean_y = history.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in history.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    let slope = sxy / sxx;
    Some(mean_y + slope * ((n - 1) as f64 - mean_x + ahead))
}

#[derive(Clone, Debug, Default)]
struct PoolState {
    last_action: Option<Timestamp>,
    policies: HashMap<String, PolicyState>,
}

impl PoolState {
    fn restart_runs(&mut self) {
        for p in self.policies.values_mut() {
            p.above = 0;
            p.below = 0;
        }
    }
}

/// The autoscaler's memory of every pool: runs of breaches and the last action. It lives in the
/// driver, beside the fleet; after a restart runs start again and no cooldown holds.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    pools: HashMap<(SwarmId, String), PoolState>,
}

/// Whether `policy` may act at `now`, given the pool's last action.
fn out_of_cooldown(policy: &ScalingPolicy, last_action: Option<Timestamp>, now: Timestamp) -> bool {
    last_action.is_none_or(|at| now.since(at) >= policy.cooldown)
}

fn describe(policy: &ScalingPolicy, value: f64, op: &str, threshold: f64, runs: u32) -> String {
    let metric = serde_json::to_value(policy.metric)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "policy {:?}: {metric} {value:.2} {op} {threshold} for {runs} period(s) of {} ms",
        policy.name,
        policy.evaluation_period.as_millis()
    )
}

impl Autoscaler {
    /// An autoscaler that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a pool was resized at `now` (by hand, say): its policies' cooldowns run from
    /// here, and their runs start again.
    pub fn record_action(&mut self, swarm: SwarmId, pool: &str, now: Timestamp) {
        let state = self.pools.entry((swarm, pool.to_owned())).or_default();
        state.last_action = Some(now);
        state.restart_runs();
    }

    /// Forgets pools for which `exists` is false (deleted).
    pub fn retain(&mut self, mut exists: impl FnMut(SwarmId, &str) -> bool) {
        self.pools.retain(|(s, p), _| exists(*s, p));
    }

    /// Whether one of the pool's enabled policies is due for evaluation at `now`: the driver
    /// need not compute the pool's metrics otherwise.
    pub fn due(&self, pool: &Pool, now: Timestamp) -> bool {
        let state = self.pools.get(&(pool.swarm_id, pool.name.clone()));
        pool.scaling.iter().filter(|p| p.enabled).any(|p| {
            state
                .and_then(|s| s.policies.get(&p.name))
                .and_then(|s| s.last_evaluated)
                .is_none_or(|at| now.since(at) >= p.evaluation_period)
        })
    }

    /// Evaluates the pool's policies that are due at `now` against `view`, and says whether
    /// to resize it. `veto` is asked before a growth, with the pool and the size wanted, and
    /// refuses it by giving a reason. A verdict that is acted on must be acted on at once: the
    /// autoscaler counts it as the pool's last action.
    pub fn evaluate(
        &mut self,
        pool: &Pool,
        view: &PoolView,
        now: Timestamp,
        veto: impl FnOnce(&Pool, u32) -> Option<String>,
    ) -> Option<Verdict> {
        let enabled: Vec<&ScalingPolicy> = pool.scaling.iter().filter(|p| p.enabled).collect();
        let key = (pool.swarm_id, pool.name.clone());
        if !pool.is_managed() || enabled.is_empty() {
            self.pools.remove(&key);
            return None;
        }
        let state = self.pools.entry(key).or_default();
        state
            .policies
            .retain(|name, _| enabled.iter().any(|p| &p.name == name));
        let mut evaluated = false;
        for policy in &enabled {
            let s = state.policies.entry(policy.name.clone()).or_default();
            if s.last_evaluated
                .is_some_and(|at| now.since(at) < policy.evaluation_period)
            {
                continue;
            }
            evaluated = true;
            s.last_evaluated = Some(now);
            s.value = metric_value(policy.metric, view);
            s.forecast = None;
            if policy.predictive {
                s.history.push_back(s.value);
                while s.history.len() > TREND_PERIODS {
                    s.history.pop_front();
                }
                if s.value < policy.scale_up_threshold
                    && let Some(f) = forecast(&s.history, f64::from(policy.evaluation_periods))
                    && f >= policy.scale_up_threshold
                {
                    s.forecast = Some(f);
                }
            }
            if s.value >= policy.scale_up_threshold || s.forecast.is_some() {
                s.above += 1;
                s.below = 0;
            } else if s.value <= policy.scale_down_threshold {
                s.below += 1;
                s.above = 0;
            } else {
                s.above = 0;
                s.below = 0;
            }
        }
        if !evaluated {
            return None;
        }
        let from = pool
            .desired_agents
            .unwrap_or(pool.min_agents)
            .clamp(pool.min_agents, pool.max_agents);
        let last_action = state.last_action;
        let run = |p: &ScalingPolicy| &state.policies[&p.name];
        let up: Vec<&ScalingPolicy> = enabled
            .iter()
            .copied()
            .filter(|p| run(p).above >= p.evaluation_periods)
            .collect();
        let decision = if !up.is_empty() {
            let ready: Vec<&ScalingPolicy> = up
                .iter()
                .copied()
                .filter(|p| out_of_cooldown(p, last_action, now))
                .collect();
            let by = ready.iter().map(|p| p.scale_up_increment).max()?;
            let to = from.saturating_add(by).min(pool.max_agents);
            if to <= from {
                return None;
            }
            let reason = ready
                .iter()
                .map(|p| {
                    let r = run(p);
                    match r.forecast {
                        Some(f) => format!(
                            "{} (predicted: its trend reaches {f:.2} within {} period(s))",
                            describe(p, r.value, "rising toward", p.scale_up_threshold, r.above),
                            p.evaluation_periods
                        ),
                        None => describe(p, r.value, ">=", p.scale_up_threshold, r.above),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            Decision {
                swarm_id: pool.swarm_id,
                pool: pool.name.clone(),
                direction: Direction::Up,
                from,
                to,
                reason,
            }
        } else if enabled.iter().all(|p| run(p).below >= p.evaluation_periods) {
            if !enabled.iter().all(|p| out_of_cooldown(p, last_action, now)) {
                return None;
            }
            let by = enabled.iter().map(|p| p.scale_down_increment).min()?;
            let to = from.saturating_sub(by).max(pool.min_agents);
            if to >= from {
                return None;
            }
            let reason = enabled
                .iter()
                .map(|p| {
                    let r = run(p);
                    describe(p, r.value, "<=", p.scale_down_threshold, r.below)
                })
                .collect::<Vec<_>>()
                .join("; ");
            Decision {
                swarm_id: pool.swarm_id,
                pool: pool.name.clone(),
                direction: Direction::Down,
                from,
                to,
                reason,
            }
        } else {
            return None;
        };
        if decision.direction == Direction::Up
            && let Some(why) = veto(pool, decision.to)
        {
            for p in &up {
                if let Some(s) = state.policies.get_mut(&p.name) {
                    s.above = 0;
                }
            }
            return Some(Verdict::Vetoed(decision, why));
        }
        state.last_action = Some(now);
        state.restart_runs();
        Some(Verdict::Scale(decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PoolQueue, PoolSize};
    use crate::pool::AgentTemplate;

    const MS: i64 = 1;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms * MS)
    }

    fn policy(name: &str, metric: ScalingMetric, up: f64, down: f64) -> ScalingPolicy {
        ScalingPolicy {
            name: name.to_owned(),
            metric,
            scale_up_threshold: up,
            scale_down_threshold: down,
            scale_up_increment: 1,
            scale_down_increment: 1,
            cooldown: Duration::from_millis(1000),
            evaluation_periods: 2,
            evaluation_period: Duration::from_millis(100),
            enabled: true,
            predictive: false,
        }
    }

    fn pool(min: u32, max: u32, desired: Option<u32>, scaling: Vec<ScalingPolicy>) -> Pool {
        Pool {
            swarm_id: SwarmId(uuid::Uuid::nil()),
            name: "coder".to_owned(),
            min_agents: min,
            max_agents: max,
            capabilities: Vec::new(),
            max_concurrent_tasks: 1,
            template: Some(AgentTemplate {
                command: "true".to_owned(),
                args: Vec::new(),
                env: Default::default(),
                workdir: None,
                user: None,
                payload_env: Vec::new(),
                runtime: Default::default(),
                mode: Default::default(),
                placement: Default::default(),
                host_labels: Vec::new(),
                limits: Default::default(),
                stop_grace: Duration::from_secs(1),
            }),
            checkpoints: Default::default(),
            priority: 5,
            resources: Default::default(),
            scaling,
            desired_agents: desired,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    fn view(queue_per_agent: f64, utilization: f64) -> PoolView {
        PoolView {
            name: "coder".to_owned(),
            managed: true,
            priority: 5,
            size: PoolSize::default(),
            utilization,
            queue: PoolQueue {
                ready: 0,
                per_agent: queue_per_agent,
            },
            error_rate: 0.0,
            recent_outcomes: 0,
            wait_p95_ms: None,
            scaling_policies: 1,
        }
    }

    fn no_veto(_: &Pool, _: u32) -> Option<String> {
        None
    }

    fn scaled(v: Option<Verdict>) -> Option<(Direction, u32, u32)> {
        match v {
            Some(Verdict::Scale(d)) => Some((d.direction, d.from, d.to)),
            _ => None,
        }
    }

    fn queue_policy() -> ScalingPolicy {
        policy("queue", ScalingMetric::QueueDepth, 2.0, 0.5)
    }

    #[test]
    fn a_predictive_policy_scales_up_on_a_rising_trend_before_the_threshold() {
        let mut plain = Autoscaler::new();
        let mut predictive = Autoscaler::new();
        let mut pp = queue_policy();
        pp.scale_up_threshold = 4.0;
        let mut qp = pp.clone();
        qp.predictive = true;
        let p_plain = pool(1, 4, None, vec![pp]);
        let p_pred = pool(1, 4, None, vec![qp]);
        // The queue per agent rises by 0.5 a period, under 4 all along.
        let mut scaled_at = None;
        for (i, q) in [1.0, 1.5, 2.0, 2.5, 3.0, 3.5].into_iter().enumerate() {
            let now = at(100 * i as i64);
            assert_eq!(plain.evaluate(&p_plain, &view(q, 0.0), now, no_veto), None);
            if let Some(Verdict::Scale(d)) =
                predictive.evaluate(&p_pred, &view(q, 0.0), now, no_veto)
            {
                assert!(d.reason.contains("predicted"), "{}", d.reason);
                scaled_at.get_or_insert((i, d.from, d.to));
            }
        }
        // The trend is known from the third period and forecasts two periods ahead: 3.0, 3.5,
        // then 4.0 (a breach) and 4.5 (a second in a row): the pool grows at the sixth period,
        // while the plain policy never does.
        assert_eq!(scaled_at, Some((5, 1, 2)));
        // A flat queue under the threshold never scales, predictive or not.
        let mut flat = Autoscaler::new();
        for i in 0..8 {
            assert_eq!(
                flat.evaluate(&p_pred, &view(3.0, 0.0), at(1_000 + 100 * i), no_veto),
                None
            );
        }
        let h: std::collections::VecDeque<f64> = [1.0, 2.0, 3.0].into_iter().collect();
        assert_eq!(forecast(&h, 2.0), Some(5.0));
        assert_eq!(forecast(&h.iter().take(2).copied().collect(), 1.0), None);
    }

    #[test]
    fn scales_up_only_after_the_threshold_holds_for_every_period() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, None, vec![queue_policy()]);
        assert_eq!(a.evaluate(&p, &view(3.0, 0.0), at(0), no_veto), None);
        // Not due yet: the second breach must be a period later.
        assert_eq!(a.evaluate(&p, &view(3.0, 0.0), at(50), no_veto), None);
        let v = a.evaluate(&p, &view(2.0, 0.0), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 1, 2)));
    }

    #[test]
    fn a_policy_is_due_once_per_evaluation_period() {
        let mut a = Autoscaler::new();
        let mut slow = policy("slow", ScalingMetric::AgentUtilization, 0.8, 0.2);
        slow.evaluation_period = Duration::from_millis(300);
        let p = pool(1, 4, None, vec![queue_policy(), slow]);
        assert!(a.due(&p, at(0)));
        a.evaluate(&p, &view(1.0, 0.5), at(0), no_veto);
        assert!(!a.due(&p, at(99)));
        assert!(a.due(&p, at(100)), "the 100 ms policy");
        a.evaluate(&p, &view(1.0, 0.5), at(100), no_veto);
        assert!(!a.due(&p, at(150)));
        let off = pool(1, 4, None, Vec::new());
        assert!(!a.due(&off, at(1000)), "no policy, nothing due");
    }

    #[test]
    fn a_period_between_thresholds_breaks_the_run() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, None, vec![queue_policy()]);
        assert_eq!(a.evaluate(&p, &view(3.0, 0.0), at(0), no_veto), None);
        assert_eq!(a.evaluate(&p, &view(1.0, 0.0), at(100), no_veto), None);
        assert_eq!(a.evaluate(&p, &view(3.0, 0.0), at(200), no_veto), None);
        let v = a.evaluate(&p, &view(3.0, 0.0), at(300), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 1, 2)));
    }

    #[test]
    fn scales_down_at_or_below_the_down_threshold() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, Some(3), vec![queue_policy()]);
        assert_eq!(a.evaluate(&p, &view(0.5, 0.0), at(0), no_veto), None);
        let v = a.evaluate(&p, &view(0.0, 0.0), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Down, 3, 2)));
    }

    #[test]
    fn never_past_max_or_min() {
        let mut up = policy("q", ScalingMetric::QueueDepth, 2.0, 0.5);
        up.scale_up_increment = 5;
        up.scale_down_increment = 5;
        up.cooldown = Duration::ZERO;
        let mut a = Autoscaler::new();
        let p = pool(1, 4, Some(2), vec![up.clone()]);
        a.evaluate(&p, &view(9.0, 0.0), at(0), no_veto);
        let v = a.evaluate(&p, &view(9.0, 0.0), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 2, 4)));
        // At max: nothing more, however long the breach lasts.
        let p = pool(1, 4, Some(4), vec![up.clone()]);
        for i in 2..10 {
            assert_eq!(a.evaluate(&p, &view(9.0, 0.0), at(i * 100), no_veto), None);
        }
        let p = pool(1, 4, Some(4), vec![up.clone()]);
        let mut a = Autoscaler::new();
        a.evaluate(&p, &view(0.0, 0.0), at(0), no_veto);
        let v = a.evaluate(&p, &view(0.0, 0.0), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Down, 4, 1)));
        let p = pool(1, 4, Some(1), vec![up]);
        for i in 2..10 {
            assert_eq!(a.evaluate(&p, &view(0.0, 0.0), at(i * 100), no_veto), None);
        }
    }

    #[test]
    fn nothing_during_the_cooldown_after_an_action() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, None, vec![queue_policy()]);
        a.evaluate(&p, &view(3.0, 0.0), at(0), no_veto);
        assert!(scaled(a.evaluate(&p, &view(3.0, 0.0), at(100), no_veto)).is_some());
        let p = pool(1, 4, Some(2), vec![queue_policy()]);
        // Breaches go on, but the cooldown (1 s) holds until 1100.
        for t in (200..1100).step_by(100) {
            assert_eq!(
                a.evaluate(&p, &view(3.0, 0.0), at(t), no_veto),
                None,
                "at {t}"
            );
        }
        let v = a.evaluate(&p, &view(3.0, 0.0), at(1100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 2, 3)));
    }

    #[test]
    fn a_manual_action_starts_the_cooldown_too() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, Some(3), vec![queue_policy()]);
        a.record_action(p.swarm_id, &p.name, at(0));
        a.evaluate(&p, &view(0.0, 0.0), at(100), no_veto);
        assert_eq!(a.evaluate(&p, &view(0.0, 0.0), at(200), no_veto), None);
        a.evaluate(&p, &view(0.0, 0.0), at(900), no_veto);
        let v = a.evaluate(&p, &view(0.0, 0.0), at(1000), no_veto);
        assert_eq!(scaled(v), Some((Direction::Down, 3, 2)));
    }

    #[test]
    fn up_wins_if_any_policy_says_up() {
        let mut a = Autoscaler::new();
        let mut big = policy("util", ScalingMetric::AgentUtilization, 0.8, 0.2);
        big.scale_up_increment = 3;
        let p = pool(1, 10, Some(2), vec![queue_policy(), big]);
        // Queue says down, utilisation says up: up, by the larger increment of those voting.
        a.evaluate(&p, &view(0.0, 0.9), at(0), no_veto);
        let v = a.evaluate(&p, &view(0.0, 0.9), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 2, 5)));
    }

    #[test]
    fn down_only_if_every_policy_says_down() {
        let mut a = Autoscaler::new();
        let util = policy("util", ScalingMetric::AgentUtilization, 0.8, 0.2);
        let p = pool(1, 10, Some(4), vec![queue_policy(), util]);
        // Queue says down, utilisation is in between: nothing.
        for t in 0..5 {
            assert_eq!(a.evaluate(&p, &view(0.0, 0.5), at(t * 100), no_veto), None);
        }
        a.evaluate(&p, &view(0.0, 0.1), at(500), no_veto);
        let v = a.evaluate(&p, &view(0.0, 0.1), at(600), no_veto);
        assert_eq!(scaled(v), Some((Direction::Down, 4, 3)));
    }

    #[test]
    fn disabled_policies_do_not_vote() {
        let mut a = Autoscaler::new();
        let mut off = policy("util", ScalingMetric::AgentUtilization, 0.8, 0.2);
        off.enabled = false;
        let p = pool(1, 10, Some(4), vec![queue_policy(), off]);
        a.evaluate(&p, &view(0.0, 0.5), at(0), no_veto);
        let v = a.evaluate(&p, &view(0.0, 0.5), at(100), no_veto);
        assert_eq!(scaled(v), Some((Direction::Down, 4, 3)));
        let p = pool(1, 10, Some(4), vec![]);
        assert_eq!(a.evaluate(&p, &view(9.0, 0.0), at(5000), no_veto), None);
    }

    #[test]
    fn a_veto_refuses_growth_with_its_reason_and_starts_the_run_again() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, None, vec![queue_policy()]);
        let refuse = |_: &Pool, to: u32| Some(format!("no room for agent {to}"));
        a.evaluate(&p, &view(3.0, 0.0), at(0), refuse);
        match a.evaluate(&p, &view(3.0, 0.0), at(100), refuse) {
            Some(Verdict::Vetoed(d, why)) => {
                assert_eq!((d.from, d.to), (1, 2));
                assert_eq!(why, "no room for agent 2");
                assert!(d.reason.contains("queue_depth 3.00 >= 2"), "{}", d.reason);
            }
            other => panic!("expected a veto, got {other:?}"),
        }
        // The run starts again: the next period alone does not ask again.
        assert_eq!(a.evaluate(&p, &view(3.0, 0.0), at(200), refuse), None);
        // A veto is not an action: no cooldown once the veto lifts.
        let v = a.evaluate(&p, &view(3.0, 0.0), at(300), no_veto);
        assert_eq!(scaled(v), Some((Direction::Up, 1, 2)));
    }

    #[test]
    fn shrinking_is_never_vetoed() {
        let mut a = Autoscaler::new();
        let p = pool(1, 4, Some(2), vec![queue_policy()]);
        let refuse = |_: &Pool, _: u32| Some("never".to_owned());
        a.evaluate(&p, &view(0.0, 0.0), at(0), refuse);
        let v = a.evaluate(&p, &view(0.0, 0.0), at(100), refuse);
        assert_eq!(scaled(v), Some((Direction::Down, 2, 1)));
    }

    #[test]
    fn each_metric_reads_its_own_figure() {
        let mut v = view(1.5, 0.25);
        v.error_rate = 0.5;
        v.wait_p95_ms = Some(700);
        assert_eq!(metric_value(ScalingMetric::QueueDepth, &v), 1.5);
        assert_eq!(metric_value(ScalingMetric::AgentUtilization, &v), 0.25);
        assert_eq!(metric_value(ScalingMetric::ErrorRate, &v), 0.5);
        assert_eq!(metric_value(ScalingMetric::LatencyP95, &v), 700.0);
        v.wait_p95_ms = None;
        assert_eq!(metric_value(ScalingMetric::LatencyP95, &v), 0.0);
    }

    #[test]
    fn wait_window_p95_is_bounded_in_count_and_time() {
        let mut w = WaitWindow::default();
        assert_eq!(w.p95(at(0)), None);
        // 100 waits of 1..=100 ms: the 95th is 95 ms.
        for i in 1..=100 {
            w.record(at(10_000 - i), at(10_000));
        }
        assert_eq!(w.p95(at(10_000)), Some(Duration::from_millis(95)));
        // Only the last WAIT_SAMPLES are kept.
        for _ in 0..WAIT_SAMPLES {
            w.record(at(20_000), at(20_000));
        }
        assert_eq!(w.p95(at(20_000)), Some(Duration::ZERO));
        // Older than the window: forgotten.
        let later = at(20_000) + WAIT_WINDOW + Duration::from_millis(1);
        assert_eq!(w.p95(later), None);
    }
}
