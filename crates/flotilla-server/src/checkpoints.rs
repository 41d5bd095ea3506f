//! Taking and restoring checkpoints: the I/O around the core's checkpoint commands.
//!
//! A checkpoint records the state the agent last reported (from the store), the tasks it holds
//! (from the core) and, for a managed agent with a working directory, its workspace
//! ([`flotilla_runtime::checkpoint`]: a commit on a private ref in a git work tree, a tar.gz in
//! `<data-dir>/checkpoints` otherwise). The snapshot is made first, then the checkpoint is
//! recorded; snapshots of the checkpoints that retention evicts are discarded once that is
//! durable. A workspace that cannot be saved does not stop the checkpoint: the reason is kept
//! in `workspace_error`.

use std::path::PathBuf;

use flotilla_core::{AgentId, Checkpoint, CheckpointId, CheckpointTrigger, Json};
use flotilla_runtime::WorkspaceSnapshot;
use flotilla_runtime::checkpoint as ws;

use crate::error::ApiError;
use crate::state::AppState;

/// Longest description kept, in bytes.
const MAX_DESCRIPTION: usize = 1000;

/// Where archives of workspaces that are not git work trees go.
fn archive_dir(state: &AppState) -> PathBuf {
    state.data_dir.join("checkpoints")
}

/// The working directory of a managed agent, if its template names one; an error when the
/// pool's agents may share it (restoring one agent's checkpoint would undo the others' work).
///
/// With work roots, the directory is resolved as the supervisor starts the agent there
/// (inside the roots, canonical), so a snapshot or a restore never reaches outside them.
fn workdir_of(state: &AppState, agent: AgentId) -> Result<Option<PathBuf>, String> {
    let template = {
        let fleet = state.fleet.lock();
        let Some((_, pool)) = fleet.template_of(agent) else {
            return Ok(None);
        };
        let Some(template) = pool.template.as_ref().filter(|t| t.workdir.is_some()) else {
            return Ok(None);
        };
        if template.placement == flotilla_core::Placement::Hosts {
            return Err(
                "its workspace is on the host it runs on, which this coordinator cannot read: only its state and tasks are kept"
                    .to_owned(),
            );
        }
        if pool.max_agents > 1 {
            return Err(format!(
                "pool {:?} may run up to {} agents in the one working directory {}: set its max_agents to 1 (a pool per workspace) to checkpoint it",
                pool.name,
                pool.max_agents,
                template.workdir.as_deref().unwrap_or_default()
            ));
        }
        template.clone()
    };
    state.supervisor.launch().workdir_of(&template)
}

/// Takes a checkpoint of `agent`.
pub async fn take(
    state: &AppState,
    agent: AgentId,
    description: Option<String>,
    trigger: CheckpointTrigger,
) -> Result<Checkpoint, ApiError> {
    let description = description.unwrap_or_default();
    if description.len() > MAX_DESCRIPTION {
        return Err(ApiError::bad_request(format!(
            "description is {} bytes; at most {MAX_DESCRIPTION} are allowed",
            description.len()
        )));
    }
    let (name, swarm_id, tasks) = {
        let fleet = state.fleet.lock();
        let a = fleet
            .agent(agent)
            .ok_or_else(|| ApiError::not_found(format!("agent {agent} not found")))?;
        (a.name.clone(), a.swarm_id, fleet.task_context(agent)?)
    };
    let reader = state.reader.clone();
    let reported = tokio::task::spawn_blocking(move || reader.get_agent_state(agent))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let id = CheckpointId(uuid::Uuid::now_v7());
    let (workspace, workspace_error) = match workdir_of(state, agent) {
        Ok(None) => (None, None),
        Err(why) => (None, Some(why)),
        Ok(Some(dir)) => {
            let label = format!("{name}/{id}");
            let message = format!("flotilla checkpoint {id} of agent {name}: {description}");
            match ws::snapshot(&dir, &label, &archive_dir(state), &message).await {
                Ok(snap) => {
                    let value = serde_json::to_value(&snap)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    (Some(Json::from_value(&value)), None)
                }
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    let checkpoint = Checkpoint {
        id,
        agent_id: agent,
        swarm_id,
        created_at: state.now(),
        trigger,
        description,
        state: reported.map(|(s, _)| s),
        tasks,
        workspace,
        workspace_error,
    };
    let recorded = checkpoint.clone();
    let result = state
        .apply(|f, now| {
            // Taken when it is recorded, in the coordinator's clock order.
            let mut c = recorded;
            c.created_at = now;
            f.record_checkpoint(c, now).map(|evicted| (evicted, now))
        })
        .await;
    match result {
        Ok((evicted, created_at)) => {
            discard_all(evicted);
            Ok(Checkpoint {
                created_at,
                ..checkpoint
            })
        }
        Err(e) => {
            // Not recorded: its snapshot is nobody's.
            discard_all(checkpoint.workspace.into_iter().collect());
            Err(e)
        }
    }
}

/// Discards workspace snapshots in the background (a failure is logged: the snapshot is an
/// orphan ref or file, harmless).
pub fn discard_all(snapshots: Vec<Json>) {
    for s in snapshots {
        let Ok(snap) = serde_json::from_str::<WorkspaceSnapshot>(s.get()) else {
            tracing::warn!(snapshot = %s.get(), "not a workspace snapshot; left alone");
            continue;
        };
        tokio::spawn(async move {
            if let Err(e) = ws::discard(&snap).await {
                tracing::warn!(error = %e, "could not discard a checkpoint's workspace");
            }
        });
    }
}

/// Restores what a checkpoint saved: the workspace (when it has one) and the reported state.
/// The agent must not be running.
pub async fn restore(
    state: &AppState,
    agent: AgentId,
    checkpoint: CheckpointId,
) -> Result<String, String> {
    let reader = state.reader.clone();
    let found = tokio::task::spawn_blocking(move || reader.get_checkpoint(checkpoint))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("checkpoint {checkpoint} is not in the store"))?;
    if found.agent_id != agent {
        return Err(format!("checkpoint {checkpoint} belongs to another agent"));
    }
    let mut words = Vec::new();
    if let Some(w) = &found.workspace {
        let snap: WorkspaceSnapshot =
            serde_json::from_str(w.get()).map_err(|e| format!("workspace: {e}"))?;
        let dir = workdir_of(state, agent)?
            .ok_or("the agent's template has no working directory to restore into")?;
        let report = ws::restore(&dir, &snap)
            .await
            .map_err(|e| format!("workspace: {e}"))?;
        words.push(format!(
            "workspace restored ({} file(s) written, {} removed)",
            report.files_written, report.files_removed
        ));
    }
    if let Some(s) = found.state {
        state
            .apply(|f, now| f.put_agent_state(agent, s, now))
            .await
            .map_err(|e| format!("state: {}", e.message))?;
        words.push("state restored".to_owned());
    }
    if words.is_empty() {
        words.push("nothing to restore but the agent's start".to_owned());
    }
    Ok(words.join(", "))
}
