//! `flotilla apply FILE` and `flotilla up FILE`: fleet files, applied to a coordinator
//! elsewhere or to one started in this process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use flotilla_client::Client;
use flotilla_core::api::{FleetApplied, FleetChange, FleetSpec};
use flotilla_core::{Agent, DEFAULT_SWARM, RuntimeKind, SwarmId};

use crate::cli::{ApplyArgs, GlobalArgs, UpArgs};
use crate::commands::agent::agent_table;
use crate::commands::worker::Shutdown;
use crate::config;
use crate::fleet_file;
use crate::output::{self, table};

/// Runs `flotilla apply`.
pub async fn apply(global: &GlobalArgs, args: ApplyArgs) -> Result<ExitCode> {
    let Some(spec) = load(&args.file) else {
        return Ok(ExitCode::FAILURE);
    };
    let client = config::client(global)?;
    let applied = client
        .apply_fleet(&spec)
        .await
        .with_context(|| format!("applying {}", args.file.display()))?;
    if args.out.json {
        output::json(&applied)?;
    } else {
        output::line(&changes_text(&applied))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `flotilla up`.
pub async fn up(global: &GlobalArgs, args: UpArgs) -> Result<ExitCode> {
    // From the start: a SIGTERM while the fleet is applied still shuts it down gracefully.
    let signals = Shutdown::listen();
    let Some(spec) = load(&args.file) else {
        return Ok(ExitCode::FAILURE);
    };
    let data_dir = config::data_dir(global)?;
    let server = flotilla_server::start(args.serve.config(data_dir.clone()))
        .await
        .map_err(|e| anyhow!("cannot start the coordinator: {e}"))?;
    if args.serve.log_format == crate::cli::LogFormat::Text {
        for warning in &server.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let url = server.url();
    // Its own certificate is what this client trusts (or --ca-cert), on loopback.
    let mut options = config::client_options(global);
    if options.ca_cert.is_none() {
        options.ca_cert = args.serve.security.tls_cert.clone();
    }
    let client = Client::with_options(&server.local_url(), server.admin_token.clone(), &options)?;
    let applied = match client.apply_fleet(&spec).await {
        Ok(applied) => applied,
        Err(e) => {
            let _ = server.shutdown().await;
            return Err(anyhow!(e).context(format!("applying {}", args.file.display())));
        }
    };
    output::line(&format!(
        "flotilla coordinator listening on {url}; applied {}:",
        args.file.display()
    ))?;
    output::line(&changes_text(&applied))?;
    let agents = match agents_of(&client, &spec).await {
        Ok(agents) => agents,
        Err(e) => {
            tracing::warn!("cannot list the agents: {e}");
            Vec::new()
        }
    };
    if !agents.is_empty() {
        let names: BTreeMap<SwarmId, String> = agents
            .iter()
            .map(|(swarm, a)| (a.swarm_id, swarm.clone()))
            .collect();
        let list: Vec<Agent> = agents.into_iter().map(|(_, a)| a).collect();
        output::line("")?;
        output::line(&agent_table(&list, |id| {
            names.get(&id).cloned().unwrap_or_else(|| id.to_string())
        }))?;
        output::line("")?;
        print_next_steps(
            &args,
            &spec,
            &url,
            &data_dir,
            &server.admin_token_path,
            &list,
        )?;
    } else {
        output::line("")?;
        print_next_steps(&args, &spec, &url, &data_dir, &server.admin_token_path, &[])?;
    }
    signals.wait().await;
    output::line("shutting down")?;
    server
        .shutdown()
        .await
        .map_err(|e| anyhow!("the coordinator stopped: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn print_next_steps(
    args: &UpArgs,
    spec: &FleetSpec,
    url: &str,
    data_dir: &Path,
    admin_token_path: &Path,
    agents: &[Agent],
) -> Result<()> {
    // Tasks go to the default swarm unless the file does not describe it.
    let swarm = match spec.swarms.iter().any(|s| s.name == DEFAULT_SWARM) {
        true => None,
        false => spec.swarms.first().map(|s| s.name.as_str()),
    };
    output::line(&next_steps(&NextSteps {
        fleet_file: &args.file,
        swarm,
        url,
        listen_is_default: args.serve.listen.to_string() == flotilla_server::DEFAULT_LISTEN,
        data_dir,
        data_dir_is_default: config::default_data_dir().as_deref() == Some(data_dir),
        admin_token_path,
        agents,
    }))
}

/// Reads and checks a fleet file; prints each error (`error: FILE:LINE:COL: key: …`) and
/// answers `None` when there is any.
fn load(path: &Path) -> Option<FleetSpec> {
    match fleet_file::load(path) {
        Ok(spec) => Some(spec),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            None
        }
    }
}

/// The agents of the fleet file's swarms, with their swarm's name, in file order.
async fn agents_of(client: &Client, spec: &FleetSpec) -> Result<Vec<(String, Agent)>> {
    let mut all = Vec::new();
    for s in &spec.swarms {
        for a in client.list_agents(&s.name, None, None).await? {
            all.push((s.name.clone(), a));
        }
    }
    Ok(all)
}

/// The changes as a table, and a one-line summary.
pub fn changes_text(applied: &FleetApplied) -> String {
    if applied.changes.is_empty() {
        return "nothing to apply".to_owned();
    }
    let rows = applied
        .changes
        .iter()
        .map(|c: &FleetChange| {
            vec![
                c.kind.clone(),
                c.name.clone(),
                c.action.clone(),
                c.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &applied.changes {
        *counts.entry(c.action.as_str()).or_default() += 1;
    }
    let mut summary: Vec<String> = ["created", "updated", "unchanged", "spawned"]
        .iter()
        .filter_map(|a| counts.remove(a).map(|n| format!("{n} {a}")))
        .collect();
    summary.extend(counts.iter().map(|(a, n)| format!("{n} {a}")));
    format!(
        "{}\n{}",
        table(&["KIND", "NAME", "ACTION", "DETAIL"], rows),
        summary.join(", ")
    )
}

/// What `flotilla up` tells about where things are and what to do next.
pub struct NextSteps<'a> {
    /// The fleet file, as given.
    pub fleet_file: &'a Path,
    /// The swarm to submit tasks to, when not the default one.
    pub swarm: Option<&'a str>,
    /// The coordinator's URL.
    pub url: &'a str,
    /// Whether it listens where the CLI looks by default.
    pub listen_is_default: bool,
    /// The data directory.
    pub data_dir: &'a Path,
    /// Whether it is the one the CLI uses by default.
    pub data_dir_is_default: bool,
    /// The admin token's file.
    pub admin_token_path: &'a Path,
    /// The fleet's agents.
    pub agents: &'a [Agent],
}

/// The text printed by `flotilla up` once the fleet is applied.
pub fn next_steps(n: &NextSteps<'_>) -> String {
    let mut env = Vec::new();
    if !n.data_dir_is_default {
        env.push(format!(
            "FLOTILLA_DATA_DIR={}",
            shell_quote(&n.data_dir.display().to_string())
        ));
    }
    if !n.listen_is_default {
        env.push(format!("FLOTILLA_URL={}", n.url));
    }
    let prefix = if env.is_empty() {
        String::new()
    } else {
        format!("{} ", env.join(" "))
    };
    // The quick start's tasks.jsonl beside the fleet file is for the default swarm.
    let tasks = tasks_file_near(n.fleet_file)
        .filter(|_| n.swarm.is_none())
        .map(|p| shell_quote(&p.display().to_string()))
        .unwrap_or_else(|| "TASKS.jsonl".to_owned());
    let run = match n.swarm {
        Some(s) => format!("run --swarm {} {tasks}", shell_quote(s)),
        None => format!("run {tasks}"),
    };
    let mut out = vec![
        format!(
            "Data directory: {} (admin token in {})",
            n.data_dir.display(),
            n.admin_token_path.display()
        ),
        String::new(),
        "From another terminal:".to_owned(),
        format!("  {prefix}flotilla {run}          # submit tasks and follow them"),
        format!("  {prefix}flotilla agent list"),
    ];
    if let Some(a) = n.agents.iter().find(|a| a.managed.is_some()) {
        out.push(format!("  {prefix}flotilla agent logs {} --follow", a.name));
    }
    if let Some(a) = n.agents.iter().find(|a| {
        a.managed
            .as_ref()
            .is_some_and(|m| m.runtime == RuntimeKind::Tmux)
    }) {
        out.push(format!("  {prefix}flotilla agent attach {}", a.name));
    }
    out.push(format!(
        "  {prefix}flotilla top                     # watch it live"
    ));
    let metrics = match n.swarm {
        Some(s) => format!("metrics {}", shell_quote(s)),
        None => "metrics".to_owned(),
    };
    out.push(format!(
        "  {prefix}flotilla {metrics:<24}# throughput and latency per minute"
    ));
    out.push(String::new());
    out.push(format!(
        "Dashboard: {}/ (sign in with the admin token)",
        n.url.trim_end_matches('/')
    ));
    out.push(String::new());
    out.push("Press Ctrl-C to stop the coordinator and its agents.".to_owned());
    out.join("\n")
}

/// `tasks.jsonl` beside the fleet file, if there is one.
fn tasks_file_near(fleet_file: &Path) -> Option<PathBuf> {
    let candidate = fleet_file.with_file_name("tasks.jsonl");
    candidate.is_file().then_some(candidate)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str, name: &str, action: &str, detail: Option<&str>) -> FleetChange {
        FleetChange {
            kind: kind.into(),
            name: name.into(),
            action: action.into(),
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn changes_are_a_table_and_a_summary() {
        let text = changes_text(&FleetApplied {
            changes: vec![
                change("swarm", "default", "unchanged", None),
                change("pool", "default/wordcount", "created", None),
                change("agent", "wordcount-1", "spawned", Some("pid 12")),
                change("agent", "wordcount-2", "spawned", None),
            ],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("KIND"), "{text}");
        assert!(lines[3].contains("pid 12"), "{text}");
        assert_eq!(lines[5], "1 created, 1 unchanged, 2 spawned", "{text}");
        assert_eq!(
            changes_text(&FleetApplied { changes: vec![] }),
            "nothing to apply"
        );
    }

    #[test]
    fn next_steps_say_how_to_reach_this_coordinator() {
        let text = next_steps(&NextSteps {
            fleet_file: Path::new("/nonexistent/fleet.toml"),
            swarm: None,
            url: "http://127.0.0.1:9000",
            listen_is_default: false,
            data_dir: Path::new("/tmp/my data"),
            data_dir_is_default: false,
            admin_token_path: Path::new("/tmp/my data/admin.token"),
            agents: &[],
        });
        assert!(
            text.contains(
                "FLOTILLA_DATA_DIR='/tmp/my data' FLOTILLA_URL=http://127.0.0.1:9000 flotilla run TASKS.jsonl"
            ),
            "{text}"
        );
        assert!(
            text.contains("Dashboard: http://127.0.0.1:9000/ (sign in with the admin token)"),
            "{text}"
        );
        assert!(text.contains("flotilla metrics "), "{text}");
        assert!(
            text.contains("admin token in /tmp/my data/admin.token"),
            "{text}"
        );
        let text = next_steps(&NextSteps {
            fleet_file: Path::new("/nonexistent/fleet.toml"),
            swarm: Some("code"),
            url: "http://127.0.0.1:7171",
            listen_is_default: true,
            data_dir: Path::new("/d"),
            data_dir_is_default: true,
            admin_token_path: Path::new("/d/admin.token"),
            agents: &[],
        });
        assert!(
            text.contains("\n  flotilla run --swarm code TASKS.jsonl"),
            "{text}"
        );
    }

    #[test]
    fn the_quick_start_suggests_its_own_tasks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let found = tasks_file_near(&dir.join("quickstart.toml"));
        assert_eq!(found, Some(dir.join("tasks.jsonl")));
    }
}
