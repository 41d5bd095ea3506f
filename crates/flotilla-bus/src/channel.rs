//! Flotilla's channel names: one scheme, made and read in one place.
//!
//! Every channel belongs to a swarm and is named `swarm:{swarm}:{kind}`, so that
//! [`swarm_pattern`] (`swarm:{swarm}:*`) follows everything about one swarm. Ids are passed as
//! strings (the coordinator's UUIDs); they must not contain `:` or pattern characters (`*`, `?`,
//! `[`, `]`, `\`), which UUIDs never do, or the name would not parse back to the same channel.

use std::fmt;

/// A named channel of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Fleet-wide changes of a swarm (`swarm:{swarm}:fleet`).
    Fleet(String),
    /// Agents registering and leaving (`swarm:{swarm}:registry`).
    Registry(String),
    /// Health changes and alerts (`swarm:{swarm}:health`).
    Health(String),
    /// Task placement (`swarm:{swarm}:allocation`).
    Allocation(String),
    /// Autoscaling decisions (`swarm:{swarm}:scaling`).
    Scaling(String),
    /// Task submissions and state changes (`swarm:{swarm}:tasks`).
    Tasks(String),
    /// Finished tasks' results (`swarm:{swarm}:results`).
    Results(String),
    /// One agent's inbox: swarm, agent (`swarm:{swarm}:agent:{agent}`).
    Agent(String, String),
    /// A pool of agents of one type: swarm, pool type (`swarm:{swarm}:pool:{type}`).
    Pool(String, String),
    /// A copy of every inter-agent message, for watchers (`swarm:{swarm}:messages`).
    Messages(String),
}

impl Channel {
    /// The channel's name on the bus.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The swarm this channel belongs to.
    pub fn swarm(&self) -> &str {
        match self {
            Channel::Fleet(s)
            | Channel::Registry(s)
            | Channel::Health(s)
            | Channel::Allocation(s)
            | Channel::Scaling(s)
            | Channel::Tasks(s)
            | Channel::Results(s)
            | Channel::Agent(s, _)
            | Channel::Pool(s, _)
            | Channel::Messages(s) => s,
        }
    }

    /// Reads a channel name back; `None` if it is not one of the scheme's names.
    pub fn parse(name: &str) -> Option<Channel> {
        let rest = name.strip_prefix("swarm:")?;
        let (swarm, kind) = rest.split_once(':')?;
        if swarm.is_empty() {
            return None;
        }
        let swarm = swarm.to_owned();
        let channel = match kind {
            "fleet" => Channel::Fleet(swarm),
            "registry" => Channel::Registry(swarm),
            "health" => Channel::Health(swarm),
            "allocation" => Channel::Allocation(swarm),
            "scaling" => Channel::Scaling(swarm),
            "tasks" => Channel::Tasks(swarm),
            "results" => Channel::Results(swarm),
            "messages" => Channel::Messages(swarm),
            _ => {
                if let Some(agent) = kind.strip_prefix("agent:").filter(|a| !a.is_empty()) {
                    Channel::Agent(swarm, agent.to_owned())
                } else if let Some(pool) = kind.strip_prefix("pool:").filter(|p| !p.is_empty()) {
                    Channel::Pool(swarm, pool.to_owned())
                } else {
                    return None;
                }
            }
        };
        Some(channel)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Fleet(s) => write!(f, "swarm:{s}:fleet"),
            Channel::Registry(s) => write!(f, "swarm:{s}:registry"),
            Channel::Health(s) => write!(f, "swarm:{s}:health"),
            Channel::Allocation(s) => write!(f, "swarm:{s}:allocation"),
            Channel::Scaling(s) => write!(f, "swarm:{s}:scaling"),
            Channel::Tasks(s) => write!(f, "swarm:{s}:tasks"),
            Channel::Results(s) => write!(f, "swarm:{s}:results"),
            Channel::Agent(s, agent) => write!(f, "swarm:{s}:agent:{agent}"),
            Channel::Pool(s, pool) => write!(f, "swarm:{s}:pool:{pool}"),
            Channel::Messages(s) => write!(f, "swarm:{s}:messages"),
        }
    }
}

/// The pattern matching every channel of one swarm: `swarm:{swarm}:*`.
pub fn swarm_pattern(swarm: &str) -> String {
    format!("swarm:{swarm}:*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern_matches;

    fn every_kind(swarm: &str) -> Vec<Channel> {
        let s = || swarm.to_owned();
        vec![
            Channel::Fleet(s()),
            Channel::Registry(s()),
            Channel::Health(s()),
            Channel::Allocation(s()),
            Channel::Scaling(s()),
            Channel::Tasks(s()),
            Channel::Results(s()),
            Channel::Agent(s(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into()),
            Channel::Pool(s(), "reviewer".into()),
            Channel::Messages(s()),
        ]
    }

    #[test]
    fn names_follow_the_seed_scheme() {
        let names: Vec<String> = every_kind("s1").iter().map(Channel::name).collect();
        assert_eq!(
            names,
            [
                "swarm:s1:fleet",
                "swarm:s1:registry",
                "swarm:s1:health",
                "swarm:s1:allocation",
                "swarm:s1:scaling",
                "swarm:s1:tasks",
                "swarm:s1:results",
                "swarm:s1:agent:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                "swarm:s1:pool:reviewer",
                "swarm:s1:messages",
            ]
        );
        assert_eq!(swarm_pattern("s1"), "swarm:s1:*");
    }

    #[test]
    fn every_name_parses_back_and_matches_its_swarm_pattern() {
        for channel in every_kind("0190a1b2-0000-7000-8000-000000000001") {
            let name = channel.name();
            assert_eq!(Channel::parse(&name), Some(channel.clone()), "{name}");
            assert!(pattern_matches(&swarm_pattern(channel.swarm()), &name));
            assert!(!pattern_matches(&swarm_pattern("other"), &name));
        }
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "",
            "swarm:",
            "swarm::fleet",
            "swarm:s1",
            "swarm:s1:",
            "swarm:s1:fleets",
            "swarm:s1:agent:",
            "swarm:s1:pool:",
            "swarms:s1:fleet",
            "fleet",
        ] {
            assert_eq!(Channel::parse(name), None, "{name:?}");
        }
    }
}
