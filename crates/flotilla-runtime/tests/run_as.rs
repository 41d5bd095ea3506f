//! Processes started as another user (`CommandSpec::user`): daemons under both runtimes and
//! exec-mode tasks really run with the user's ids, groups and home. The tests need root (to
//! switch users) and the user `nobody`; without them they are skipped, saying why.

mod common;

use std::fs;
use std::time::Duration;

use common::{PrivateTmux, eventually};
use flotilla_runtime::{CommandSpec, ExecRequest, LogSpec, RunAs, RuntimeKind, run_once};

/// Prints who it runs as: uid, gid, groups, HOME, USER.
const WHO: &str =
    r#"printf 'who=%s %s %s|%s|%s\n' "$(id -u)" "$(id -g)" "$(id -G)" "$HOME" "$USER""#;

/// `nobody`, when this process may switch to it; `None` (saying why) otherwise.
fn nobody(test: &str) -> Option<RunAs> {
    if !RunAs::caller_is_root() {
        eprintln!(
            "SKIPPED {test}: switching users needs root, and this runs as uid {}",
            RunAs::caller_uid()
        );
        return None;
    }
    match RunAs::lookup("nobody") {
        Ok(user) => Some(user),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

fn expected(user: &RunAs) -> String {
    let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
    format!(
        "who={} {} {}|{}|{}",
        user.uid,
        user.gid,
        groups.join(" "),
        user.home.display(),
        user.name
    )
}

fn who_spec(user: &RunAs) -> CommandSpec {
    let mut spec = CommandSpec::new("sh").args(["-c", WHO]);
    spec.user = Some(user.clone());
    spec
}

#[test]
fn lookup_reads_the_user_database() {
    let root = RunAs::lookup("root").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    assert!(root.groups.contains(&0));
    assert_eq!(RunAs::lookup("0").unwrap().name, "root");
    let err = RunAs::lookup("no-such-user-here").unwrap_err().to_string();
    assert!(err.contains("no such user"), "{err}");
}

#[tokio::test]
async fn a_daemon_of_the_process_runtime_runs_as_the_user() {
    let Some(user) = nobody("a_daemon_of_the_process_runtime_runs_as_the_user") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = LogSpec::new(dir.path().join("agent.log"));
    let mut agent =
        flotilla_runtime::start(RuntimeKind::Process, "runas-p", &who_spec(&user), &log)
            .await
            .unwrap();
    let exit = tokio::time::timeout(common::PATIENCE, agent.wait())
        .await
        .unwrap();
    agent.stop(Duration::from_secs(1)).await;
    assert!(exit.success(), "{exit}");
    let text = fs::read_to_string(&log.path).unwrap();
    assert_eq!(text.trim(), expected(&user), "the log: {text}");
    assert_ne!(user.uid, 0);
}

#[tokio::test]
async fn an_exec_task_runs_as_the_user_and_a_spec_env_still_wins() {
    let Some(user) = nobody("an_exec_task_runs_as_the_user_and_a_spec_env_still_wins") else {
        return;
    };
    let out = run_once(ExecRequest::new(who_spec(&user))).await.unwrap();
    assert!(out.exit.success(), "{} {}", out.exit, out.stderr_tail);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected(&user));

    // The spec's own HOME is kept over the user's.
    let mut spec = who_spec(&user);
    spec.env.insert("HOME".into(), "/srv/agent-home".into());
    let out = run_once(ExecRequest::new(spec)).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("|/srv/agent-home|nobody"), "{text}");
}

#[tokio::test]
async fn a_tmux_daemon_runs_as_the_user() {
    let Some(user) = nobody("a_tmux_daemon_runs_as_the_user") else {
        return;
    };
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("agent.log"));
    let mut agent = tmux
        .server
        .start("runas-t", &who_spec(&user), &log)
        .await
        .unwrap();
    let exit = tokio::time::timeout(common::PATIENCE, agent.wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    // The pane's output reaches the log through tmux's pipe-pane, a moment later.
    let want = expected(&user);
    eventually("the agent's ids in its log", || {
        fs::read_to_string(&log.path)
            .ok()?
            .lines()
            .any(|l| l.trim() == want)
            .then_some(())
    })
    .await;
    agent.stop(Duration::from_secs(1)).await;
}
