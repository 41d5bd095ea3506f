//! Identifiers of swarms, agents and tasks.
//!
//! Each is a UUID wrapped in its own type so that a task id can never be passed where an agent
//! id is expected. The core never generates ids (that needs randomness or a clock); callers do,
//! which keeps the core deterministic and lets simulations use a seeded generator.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                $name(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = crate::error::CoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name).map_err(|_| {
                    crate::error::CoreError::invalid(format!(
                        concat!("'{}' is not a valid ", $what, " id (expected a UUID)"),
                        s
                    ))
                })
            }
        }
    };
}

id_type!(
    /// Identifies a swarm.
    SwarmId,
    "swarm"
);
id_type!(
    /// Identifies an agent.
    AgentId,
    "agent"
);
id_type!(
    /// Identifies a task.
    TaskId,
    "task"
);
id_type!(
    /// Identifies a checkpoint of an agent.
    CheckpointId,
    "checkpoint"
);
id_type!(
    /// Identifies a message between agents.
    MessageId,
    "message"
);
