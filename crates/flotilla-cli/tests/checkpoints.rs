//! Checkpoints and rollback end to end: a managed agent working in a real git repository (the
//! user's branch, index and stash must not move) and one in a plain directory (an archive),
//! through the CLI and the API.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use flotilla_core::EventKind;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "User")
        .env("GIT_AUTHOR_EMAIL", "user@example.com")
        .env("GIT_COMMITTER_NAME", "User")
        .env("GIT_COMMITTER_EMAIL", "user@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the user's git state is: HEAD, branch, staged diff, stash, branches.
fn user_git_state(repo: &Path) -> Vec<String> {
    vec![
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["symbolic-ref", "HEAD"]),
        git(repo, &["diff", "--cached"]),
        git(repo, &["stash", "list"]),
        git(repo, &["branch", "-a"]),
    ]
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_a_git_workspace_and_state_without_touching_the_users_git() {
    let h = Harness::start().await;
    let repo = h.path("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    std::fs::write(repo.join("b.txt"), "base\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "init"]);
    std::fs::write(repo.join("a.txt"), "stash me\n").unwrap();
    git(&repo, &["stash", "-q"]);
    std::fs::write(repo.join("b.txt"), "staged\n").unwrap();
    git(&repo, &["add", "b.txt"]);
    std::fs::write(repo.join("u.txt"), "untracked\n").unwrap();
    let before = user_git_state(&repo);

    // Each task changes the workspace: a.txt rewritten, new.txt created, u.txt deleted.
    h.put_pool(
        "default",
        json!({
            "name": "coder",
            "min_agents": 1,
            "max_agents": 1,
            "agent": h.template(json!({
                "command": FLOTILLA,
                "args": ["worker", "--agent-from-env", "--", "sh", "-c",
                         "cat >/dev/null; echo changed > a.txt; echo new > new.txt; rm -f u.txt; echo done"],
                "mode": "daemon",
                "workdir": repo.to_str().unwrap(),
            })),
        }),
    )
    .await;
    let a = poll("the agent to call in", LONG, || async {
        let agents = h.agents("default", "coder").await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await;
    let agent = id_of(&a);
    let name = a["name"].as_str().unwrap().to_owned();
    h.admin
        .put_agent_state(agent, &json!({"step": 1, "notes": "before the work"}))
        .await
        .unwrap();

    let out = ok(&h.cli(&["checkpoint", "create", &name, "before the work"]));
    assert!(
        out.contains("workspace at refs/flotilla/checkpoints/"),
        "{out}"
    );
    assert!(out.contains("state"), "{out}");
    assert_eq!(
        user_git_state(&repo),
        before,
        "a checkpoint moved the user's git"
    );

    let id = h.submit("default", json!({"payload": {}})).await;
    assert_eq!(h.finished(id, LONG).await["status"], "completed");
    assert_eq!(read(&repo, "a.txt"), "changed\n");
    assert!(repo.join("new.txt").exists());
    assert!(!repo.join("u.txt").exists());
    h.admin
        .put_agent_state(agent, &json!({"step": 2}))
        .await
        .unwrap();

    let out = ok(&h.cli(&["checkpoint", "rollback", &name]));
    assert!(
        out.contains("rolling back to its latest checkpoint"),
        "{out}"
    );
    let a = h
        .agent_until(
            agent,
            "the agent to be back after its rollback",
            LONG,
            |a| a["managed"]["starts"] == 2 && a["status"] == "idle",
        )
        .await;
    assert_eq!(a["managed"]["desired"], "running");
    // The files are as they were; the user's HEAD, index, stash and branches are untouched.
    assert_eq!(read(&repo, "a.txt"), "one\n");
    assert_eq!(read(&repo, "b.txt"), "staged\n");
    assert_eq!(read(&repo, "u.txt"), "untracked\n");
    assert!(!repo.join("new.txt").exists());
    assert_eq!(user_git_state(&repo), before);
    let state = h.admin.get_agent_state(agent).await.unwrap();
    assert_eq!(
        state["state"],
        json!({"step": 1, "notes": "before the work"})
    );

    // The story is in the events, and the checkpoint can be listed, shown and deleted. The
    // agent's view comes from memory, its events from the store a commit later: wait for the
    // start after the rollback to be stored.
    let kinds: Vec<EventKind> = poll("the restart's events in the store", LONG, || async {
        let kinds: Vec<EventKind> = h
            .admin
            .list_events(&flotilla_client::EventQuery {
                agent: Some(agent),
                limit: Some(200),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| e.kind)
            .collect();
        let rollback = kinds.iter().position(|k| *k == EventKind::AgentRollback);
        let started = kinds.iter().rposition(|k| *k == EventKind::AgentStarted);
        match (rollback, started) {
            (Some(r), Some(s)) if r < s => Ok(kinds),
            _ => Err(kinds),
        }
    })
    .await;
    let pos = |k| kinds.iter().position(|x| *x == k).unwrap();
    // Two rollback events: asked for, then restored (with what was written).
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::AgentRollback)
            .count(),
        2,
        "{kinds:?}"
    );
    assert!(pos(EventKind::CheckpointCreated) < pos(EventKind::AgentRollback));
    assert!(
        pos(EventKind::AgentRollback)
            < kinds
                .iter()
                .rposition(|x| *x == EventKind::AgentStarted)
                .unwrap()
    );
    let list = h.admin.list_checkpoints(agent).await.unwrap();
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(c.description, "before the work");
    let out = ok(&h.cli(&["checkpoint", "show", &name, &c.id.to_string()]));
    assert!(out.contains("before the work"), "{out}");
    let reference = c.workspace.as_ref().unwrap().to_value()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        git(
            &repo,
            &["for-each-ref", "--format=%(refname)", "refs/flotilla"]
        )
        .trim(),
        reference
    );
    ok(&h.cli(&["checkpoint", "delete", &name, &c.id.to_string()]));
    assert!(h.admin.list_checkpoints(agent).await.unwrap().is_empty());
    wait_until("the private ref to be deleted", LONG, || {
        let refs = git(&repo, &["for-each-ref", "refs/flotilla"]);
        if refs.is_empty() { Ok(()) } else { Err(refs) }
    })
    .await;
    // Bad input: one line, a failing exit code.
    let out = h.cli(&["checkpoint", "rollback", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no checkpoint to roll back to"), "{err}");
    let out = h.cli(&["checkpoint", "show", &name, "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a checkpoint id"));
    // An agent removed with its pool takes its checkpoints, and their refs, with it.
    ok(&h.cli(&["checkpoint", "create", &name, "last"]));
    assert!(!git(&repo, &["for-each-ref", "refs/flotilla"]).is_empty());
    h.admin.delete_pool("default", "coder", true).await.unwrap();
    wait_until("the removed agent's refs to be deleted", LONG, || {
        let refs = git(&repo, &["for-each-ref", "refs/flotilla"]);
        if refs.is_empty() { Ok(()) } else { Err(refs) }
    })
    .await;
    assert_eq!(user_git_state(&repo), before);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_can_checkpoint_after_each_task_keeping_the_last_few_as_archives() {
    let h = Harness::start().await;
    let work = h.path("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("log.txt"), "").unwrap();
    let script = h.write_script(
        "append.sh",
        "#!/bin/sh\ncat >/dev/null\necho \"$FLOTILLA_TASK_ID\" >> log.txt\n",
    );
    h.put_pool(
        "default",
        json!({
            "name": "scribe",
            "min_agents": 1,
            "max_agents": 1,
            "checkpoints": {"keep": 2, "after_each_task": true},
            "agent": h.template(json!({
                "command": script.to_str().unwrap(),
                "workdir": work.to_str().unwrap(),
            })),
        }),
    )
    .await;
    let a = poll("the agent", LONG, || async {
        let agents = h.agents("default", "scribe").await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await;
    let agent = id_of(&a);
    let mut ids = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for n in 0..3 {
        let id = h.submit("default", json!({"payload": {"n": n}})).await;
        assert_eq!(h.finished(id, LONG).await["status"], "completed");
        ids.push(id);
        // Its checkpoint is taken after the completion (the third evicts the first).
        let now: Vec<String> = poll("the task's checkpoint", LONG, || async {
            let refs: Vec<String> = h.agent(agent).await["checkpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect();
            if refs.iter().any(|c| !seen.contains(c)) {
                Ok(refs)
            } else {
                Err(refs)
            }
        })
        .await;
        seen.extend(now);
    }
    let list = h.admin.list_checkpoints(agent).await.unwrap();
    assert_eq!(list.len(), 2, "kept: {list:#?}");
    assert!(list.iter().all(|c| c.trigger.as_str() == "after_task"));
    let archives = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".tar.gz"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dir = h.path("checkpoints");
    wait_until("the evicted archive to be discarded", LONG, || {
        let a = archives(&dir);
        if a.len() == 2 { Ok(()) } else { Err(a) }
    })
    .await;
    // Roll back to the older one: the log as it was after two tasks.
    let older = &list[1];
    assert_eq!(read(&work, "log.txt").lines().count(), 3);
    let after = h.admin.rollback_agent(agent, Some(older.id)).await.unwrap();
    assert_eq!(after.name, a["name"].as_str().unwrap());
    h.agent_until(agent, "the agent back", LONG, |a| {
        a["managed"]["starts"] == 2 && a["status"] == "idle"
    })
    .await;
    let log = read(&work, "log.txt");
    let want: String = ids[..2].iter().map(|i| format!("{i}\n")).collect();
    assert_eq!(log, want);
    // A rollback to a checkpoint of nothing, or of another agent, is refused.
    let err = h
        .admin
        .rollback_agent(
            agent,
            Some(flotilla_core::CheckpointId(uuid::Uuid::now_v7())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let v: Value =
        serde_json::to_value(h.admin.get_checkpoint(agent, older.id).await.unwrap()).unwrap();
    assert_eq!(v["workspace"]["kind"], "archive", "{v:#}");

    // A checkpoint whose archive is gone: the agent still starts, and the failure is told.
    let newer = &list[0];
    let archive = v_path(&h.admin.get_checkpoint(agent, newer.id).await.unwrap());
    std::fs::remove_file(&archive).unwrap();
    h.admin.rollback_agent(agent, Some(newer.id)).await.unwrap();
    h.agent_until(agent, "the agent back", LONG, |a| {
        a["managed"]["starts"] == 3 && a["status"] == "idle"
    })
    .await;
    let alerts = poll("the failed restore's alert", LONG, || async {
        let page = h.admin.alerts(None, &["warning"], None).await.unwrap();
        let hit = page
            .items
            .iter()
            .any(|e| e.detail.contains("could not be restored"));
        if hit { Ok(()) } else { Err(page.items) }
    })
    .await;
    let () = alerts;
    assert_eq!(log, read(&work, "log.txt"), "nothing was restored");

    // A pool whose agents may share the directory: the workspace is not saved, and says why
    // (restoring one agent would undo the others' work).
    h.put_pool(
        "default",
        json!({
            "name": "shared",
            "min_agents": 1,
            "max_agents": 2,
            "agent": h.template(json!({
                "command": script.to_str().unwrap(),
                "workdir": work.to_str().unwrap(),
            })),
        }),
    )
    .await;
    let s = poll("the shared pool's agent", LONG, || async {
        let agents = h.agents("default", "shared").await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await;
    let c = h
        .admin
        .create_checkpoint(id_of(&s), Some("shared"))
        .await
        .unwrap();
    assert!(c.workspace.is_none());
    let why = c.workspace_error.unwrap();
    assert!(why.contains("max_agents to 1"), "{why}");
    h.finish().await;
}

/// The archive path of a checkpoint's workspace.
fn v_path(c: &flotilla_core::Checkpoint) -> std::path::PathBuf {
    c.workspace.as_ref().unwrap().to_value()["path"]
        .as_str()
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_can_checkpoint_its_agents_on_a_schedule() {
    let h = Harness::start().await;
    let work = h.path("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("notes.txt"), "v1\n").unwrap();
    h.put_pool(
        "default",
        json!({
            "name": "ticker",
            "min_agents": 1,
            "max_agents": 1,
            "checkpoints": {"keep": 3, "every_ms": 1000},
            "agent": h.template(json!({"command": "true", "workdir": work.to_str().unwrap()})),
        }),
    )
    .await;
    let a = poll("the agent", LONG, || async {
        let agents = h.agents("default", "ticker").await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await;
    let agent = id_of(&a);
    // About one a second, never more than `keep`, each an archive of the directory.
    let list = poll("three interval checkpoints", LONG, || async {
        let list = h.admin.list_checkpoints(agent).await.unwrap();
        if list.len() == 3 {
            Ok(list)
        } else {
            Err(list.len())
        }
    })
    .await;
    assert!(list.iter().all(|c| c.trigger.as_str() == "interval"));
    let gaps: Vec<i64> = list
        .windows(2)
        .map(|w| w[0].created_at.as_millis() - w[1].created_at.as_millis())
        .collect();
    assert!(gaps.iter().all(|g| *g >= 1000), "{gaps:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = h.admin.list_checkpoints(agent).await.unwrap();
    assert_eq!(later.len(), 3, "retention keeps 3");
    assert!(later[0].created_at > list[0].created_at, "they keep coming");
    assert!(v_path(&later[0]).exists());
    h.finish().await;
}
