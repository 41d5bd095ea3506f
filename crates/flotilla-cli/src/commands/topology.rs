//! `flotilla swarm topology`: a swarm's graph as a table (or Graphviz DOT, or JSON), and
//! changing it live with `--set` / `--config`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use flotilla_client::Client;
use flotilla_core::api::TopologyChange;
use flotilla_core::topology::TopologyView;
use flotilla_core::{AgentId, Topology};

use crate::output::{self, table};

/// What `swarm topology` was asked for.
pub struct TopologyArgs {
    /// The swarm's name or id.
    pub swarm: String,
    /// `--set`.
    pub set: Option<Topology>,
    /// `--config`.
    pub config: Option<serde_json::Value>,
    /// `--dot`.
    pub dot: bool,
    /// `--json`.
    pub json: bool,
}

/// Shows the graph, after changing it if asked.
pub async fn run(client: &Client, args: TopologyArgs) -> Result<()> {
    let changed = if args.set.is_some() || args.config.is_some() {
        // Settings alone keep the topology in force.
        let topology = match args.set {
            Some(t) => t,
            None => client.topology(&args.swarm).await?.topology,
        };
        let change = TopologyChange {
            topology,
            config: args.config,
        };
        Some(client.set_topology(&args.swarm, &change).await?)
    } else {
        None
    };
    if args.dot {
        let text = match &changed {
            Some(view) => view.to_dot(),
            None => client.topology_dot(&args.swarm).await?,
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok(());
    }
    let view = match changed {
        Some(view) => view,
        None => client.topology(&args.swarm).await?,
    };
    if args.json {
        output::json(&view)
    } else {
        output::line(&describe(&view))
    }
}

/// A header line, a table of the nodes, and the connections and settings.
pub fn describe(v: &TopologyView) -> String {
    let names: HashMap<AgentId, &str> = v.nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
    let name = |id: AgentId| {
        names
            .get(&id)
            .map(|n| (*n).to_owned())
            .unwrap_or_else(|| id.to_string())
    };
    let mut header = format!(
        "swarm {}: {}, {}; leader {}",
        v.swarm,
        v.topology.as_str(),
        v.status.as_str(),
        v.leader.map(name).unwrap_or_else(|| "none".into()),
    );
    if let Some(token) = &v.token {
        match token.holder {
            Some(h) => header.push_str(&format!(
                "; token held by {} (moved {} time{})",
                name(h),
                token.passes,
                if token.passes == 1 { "" } else { "s" }
            )),
            None => header.push_str("; token held by nobody"),
        }
    }
    if let Some(version) = v.membership_version {
        header.push_str(&format!("; membership version {version}"));
    }
    if v.nodes.is_empty() {
        return format!("{header}\nno agents in the swarm yet");
    }

    let tree = matches!(v.topology, Topology::Star | Topology::Hierarchical)
        || v.nodes
            .iter()
            .any(|n| n.parent.is_some() || n.level.is_some());
    let ring = v.topology == Topology::Ring || v.nodes.iter().any(|n| n.token);
    let mesh =
        v.topology == Topology::Mesh || v.nodes.iter().any(|n| n.membership_version.is_some());
    let mut head = vec!["NAME", "ROLE", "STATUS"];
    if tree {
        head.extend(["PARENT", "LEVEL"]);
    }
    head.push("POS");
    if ring {
        head.push("TOKEN");
    }
    if mesh {
        head.push("VERSION");
    }
    let dash = || "-".to_owned();
    let rows = v
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                n.role.as_str().to_owned(),
                n.status.as_str().to_owned(),
            ];
            if tree {
                row.push(n.parent.map(name).unwrap_or_else(dash));
                row.push(n.level.map(|l| l.to_string()).unwrap_or_else(dash));
            }
            row.push(n.position.to_string());
            if ring {
                row.push(if n.token { "*".into() } else { String::new() });
            }
            if mesh {
                row.push(
                    n.membership_version
                        .map(|m| m.to_string())
                        .unwrap_or_else(dash),
                );
            }
            row
        })
        .collect();
    let connections = if v.full {
        "full mesh (every alive agent reaches every other)".to_owned()
    } else {
        let pairs: Vec<String> = v
            .edges
            .iter()
            .take(12)
            .map(|[a, b]| format!("{} – {}", name(*a), name(*b)))
            .collect();
        match v.edges.len() {
            0 => "none".to_owned(),
            n if n > pairs.len() => format!("{n}: {}, … (--dot shows them all)", pairs.join(", ")),
            _ => pairs.join(", "),
        }
    };
    format!(
        "{header}\n\n{}\n\nconnections: {connections}\nsettings: {}",
        table(&head, rows),
        serde_json::to_string(&v.config).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0190b6e4-0000-7000-8000-0000000000a1";
    const B: &str = "0190b6e4-0000-7000-8000-0000000000b2";
    const C: &str = "0190b6e4-0000-7000-8000-0000000000c3";

    fn view(fields: serde_json::Value) -> TopologyView {
        let mut v = serde_json::json!({
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002", "swarm": "default",
            "topology": "ring", "config": {"order": "load"}, "status": "active", "leader": A,
            "nodes": [
                {"id": A, "name": "alpha", "role": "leader", "status": "idle", "position": 0},
                {"id": B, "name": "bravo", "role": "worker", "status": "busy", "position": 1,
                 "token": true},
                {"id": C, "name": "charlie", "role": "worker", "status": "unhealthy", "position": 2},
            ],
            "edges": [[A, B], [B, C], [C, A]],
            "token": {"holder": B, "passes": 7},
        });
        for (k, x) in fields.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_ring_shows_its_token_and_order() {
        let text = describe(&view(serde_json::json!({})));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "swarm default: ring, active; leader alpha; token held by bravo (moved 7 times)"
        );
        assert!(
            lines[2].starts_with("NAME") && lines[2].ends_with("POS  TOKEN"),
            "{text}"
        );
        assert!(
            !lines[2].contains("PARENT") && !lines[2].contains("VERSION"),
            "{text}"
        );
        let bravo = lines.iter().find(|l| l.starts_with("bravo")).unwrap();
        assert!(
            bravo.contains("worker") && bravo.contains("busy") && bravo.ends_with('*'),
            "{text}"
        );
        assert!(
            text.contains("connections: alpha – bravo, bravo – charlie, charlie – alpha"),
            "{text}"
        );
        assert!(text.ends_with(r#"settings: {"order":"load"}"#), "{text}");
    }

    #[test]
    fn a_star_shows_parents_and_a_mesh_its_versions() {
        let star = view(serde_json::json!({
            "topology": "star", "token": null, "config": {},
            "nodes": [
                {"id": A, "name": "alpha", "role": "leader", "status": "idle", "position": 0, "level": 0},
                {"id": B, "name": "bravo", "role": "worker", "status": "idle", "position": 1,
                 "level": 1, "parent": A},
            ],
            "edges": [[A, B]],
        }));
        let text = describe(&star);
        assert!(
            text.lines().next().unwrap().ends_with("leader alpha"),
            "{text}"
        );
        let header = text.lines().nth(2).unwrap();
        assert!(
            header.contains("PARENT  LEVEL  POS") && !header.contains("TOKEN"),
            "{text}"
        );
        let bravo = text.lines().find(|l| l.starts_with("bravo")).unwrap();
        assert!(bravo.contains("alpha") && bravo.contains(" 1 "), "{text}");

        let mesh = view(serde_json::json!({
            "topology": "mesh", "token": null, "leader": null, "full": true, "edges": [],
            "membership_version": 4, "status": "degraded",
            "nodes": [
                {"id": A, "name": "alpha", "role": "worker", "status": "idle", "position": 0,
                 "membership_version": 4},
                {"id": B, "name": "bravo", "role": "worker", "status": "idle", "position": 1,
                 "membership_version": 3},
            ],
        }));
        let text = describe(&mesh);
        assert_eq!(
            text.lines().next().unwrap(),
            "swarm default: mesh, degraded; leader none; membership version 4"
        );
        assert!(
            text.lines().nth(2).unwrap().ends_with("POS  VERSION"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("bravo") && l.ends_with('3')),
            "{text}"
        );
        assert!(text.contains("connections: full mesh"), "{text}");
    }

    #[test]
    fn an_empty_swarm_says_so() {
        let text = describe(&view(serde_json::json!({
            "nodes": [], "edges": [], "leader": null, "token": {"holder": null, "passes": 0}
        })));
        assert_eq!(
            text,
            "swarm default: ring, active; leader none; token held by nobody\nno agents in the swarm yet"
        );
    }
}
