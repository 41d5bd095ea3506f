//! Agent names for the tables and lines the commands print (an agent is shown by name, a
//! removed one by its id).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use flotilla_client::Client;
use flotilla_core::AgentId;

/// The names of the agents of one swarm, or of every swarm, by id.
pub async fn agent_names(client: &Client, swarm: Option<&str>) -> Result<HashMap<AgentId, String>> {
    let swarms = match swarm {
        Some(s) => vec![s.to_owned()],
        None => client
            .list_swarms()
            .await?
            .into_iter()
            .map(|s| s.swarm.id.to_string())
            .collect(),
    };
    let mut names = HashMap::new();
    for swarm in swarms {
        for a in client.list_agents(&swarm, None, None).await? {
            names.insert(a.id, a.name);
        }
    }
    Ok(names)
}

/// An agent's name, its id when unknown (removed), `-` for none.
pub fn agent_or_dash(id: Option<AgentId>, names: &HashMap<AgentId, String>) -> String {
    id.map(|a| names.get(&a).cloned().unwrap_or_else(|| a.to_string()))
        .unwrap_or_else(|| "-".to_owned())
}

/// The names of a swarm's (or every swarm's) agents, read once and again when an agent not yet
/// known appears (it joined since); ids that a fresh read did not know either (removed agents)
/// are not asked about again.
pub struct NameBook {
    swarm: Option<String>,
    pub names: HashMap<AgentId, String>,
    unknown: HashSet<AgentId>,
}

impl NameBook {
    /// A book for one swarm's agents, or every swarm's; empty until refreshed.
    pub fn new(swarm: Option<&str>) -> NameBook {
        NameBook {
            swarm: swarm.map(str::to_owned),
            names: HashMap::new(),
            unknown: HashSet::new(),
        }
    }

    /// Reads the agents' names again.
    pub async fn refresh(&mut self, client: &Client) -> Result<()> {
        self.names = agent_names(client, self.swarm.as_deref()).await?;
        Ok(())
    }

    /// Makes sure `ids` are known, reading the agents again if one is not. A failed read leaves
    /// the ids shown as they are: following goes on.
    pub async fn learn(&mut self, client: &Client, ids: impl IntoIterator<Item = AgentId>) {
        let new: Vec<AgentId> = ids
            .into_iter()
            .filter(|id| !self.names.contains_key(id) && !self.unknown.contains(id))
            .collect();
        if new.is_empty() {
            return;
        }
        if self.refresh(client).await.is_err() {
            return;
        }
        self.unknown
            .extend(new.into_iter().filter(|id| !self.names.contains_key(id)));
    }
}
