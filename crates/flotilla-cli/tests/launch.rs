//! Safe launch of managed agents, end to end with real processes: working directories confined
//! to the work roots (checked when a pool is applied and again at every start), environment
//! variables a task may set from its payload (only those its template lists), and agents run
//! as another user (`--run-as`, a pool's `user`) under both runtimes, and refused by a
//! coordinator that is not root.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use flotilla_client::ClientError;
use flotilla_core::Operation;
use flotilla_core::api::FleetSpec;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

/// Prints the working directory, then who it runs as.
const WHERE_AND_WHO: &str = r#"printf '%s|%s|%s|%s' "$(pwd)" "$(id -u)" "$(id -g)" "$HOME""#;

/// The message of a refused API call.
fn refusal(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A pool spec running `sh -c SCRIPT` once per task, with `extra` template fields; its agents
/// have the capability NAME, which [`run_task`] requires, so each test task reaches its pool.
fn exec_pool(h: &Harness, name: &str, script: &str, extra: Value) -> flotilla_core::PoolSpec {
    let mut template = json!({"command": "sh", "args": ["-c", script], "mode": "exec"});
    for (k, v) in extra.as_object().unwrap() {
        template[k] = v.clone();
    }
    serde_json::from_value(json!({
        "name": name, "min_agents": 1, "max_agents": 1, "capabilities": [name],
        "agent": h.template(template)
    }))
    .unwrap()
}

async fn idle_agent(h: &Harness, pool: &str) -> Value {
    poll("the pool's agent to be idle", LONG, || async {
        let agents = h.agents("default", pool).await;
        match agents.first() {
            Some(a) if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await
}

async fn run_task(h: &Harness, task_type: &str, payload: Value) -> Value {
    let id = h
        .submit(
            "default",
            json!({"type": task_type, "payload": payload, "max_attempts": 1,
                   "required_capabilities": [task_type]}),
        )
        .await;
    h.finished(id, LONG).await
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workdirs_must_stay_inside_the_work_roots() {
    let roots = tempfile::tempdir().unwrap();
    let root = roots.path().join("root");
    let outside = roots.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(root.join("sub"), root.join("link")).unwrap();
    let root_text = canonical(&root).display().to_string();
    let h = Harness::start_with(|c| c.work_roots = vec![root.clone()]).await;

    // Out by `..` (refused whatever the roots), by a symbolic link, by an absolute path: 400,
    // the last two naming the roots.
    for bad in ["..", "sub/../../outside", "escape", "/tmp"] {
        let spec = exec_pool(&h, "bad", "pwd", json!({"workdir": bad}));
        let (status, message) = refusal(h.admin.put_pool("default", &spec).await);
        assert_eq!(status, 400, "{bad}: {message}");
        assert!(!message.contains('\n'), "{message}");
        if !bad.contains("..") {
            assert!(message.contains(&root_text), "{bad}: {message}");
        }
    }
    let spec = exec_pool(&h, "bad", "pwd", json!({"workdir": "missing"}));
    let (status, message) = refusal(h.admin.put_pool("default", &spec).await);
    assert_eq!(status, 400);
    assert!(
        message.contains("missing") && message.contains(&root_text),
        "{message}"
    );
    // The fleet document is checked the same way, before anything of it is applied.
    let doc: FleetSpec = serde_json::from_value(json!({"swarms": [{"name": "default", "pools": [
        serde_json::to_value(exec_pool(&h, "fine", "pwd", json!({"workdir": "sub"}))).unwrap(),
        serde_json::to_value(exec_pool(&h, "bad", "pwd", json!({"workdir": "escape"}))).unwrap(),
    ]}]}))
    .unwrap();
    let (status, message) = refusal(h.admin.apply_fleet(&doc).await);
    assert_eq!(status, 400);
    assert!(message.contains("outside the work roots"), "{message}");
    assert!(
        h.agents("default", "fine").await.is_empty(),
        "nothing was applied"
    );
    assert!(h.agents("default", "bad").await.is_empty());

    // A relative workdir is taken from the root; the agent runs in the canonical directory.
    let spec = exec_pool(&h, "inside", WHERE_AND_WHO, json!({"workdir": "link"}));
    h.admin.put_pool("default", &spec).await.unwrap();
    let agent = idle_agent(&h, "inside").await;
    let t = run_task(&h, "inside", json!({})).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    let seen = t["result"].as_str().unwrap().to_owned();
    assert!(
        seen.starts_with(&format!("{}|", canonical(&root.join("sub")).display())),
        "{seen}"
    );

    // A checkpoint saves that directory, not the coordinator's own relative one.
    std::fs::write(root.join("sub/a.txt"), "a").unwrap();
    std::fs::write(root.join("sub/b.txt"), "b").unwrap();
    let checkpoint = h
        .admin
        .create_checkpoint(id_of(&agent), Some("inside the root"))
        .await
        .unwrap();
    let checkpoint = serde_json::to_value(checkpoint).unwrap();
    assert_eq!(checkpoint["workspace"]["kind"], "archive", "{checkpoint:#}");
    assert_eq!(checkpoint["workspace"]["files"], 2, "{checkpoint:#}");

    // The link is turned outside after the pool was applied: the next start refuses.
    std::fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let id = id_of(&agent);
    h.admin
        .agent_lifecycle(id, Operation::Restart, false)
        .await
        .unwrap();
    let a = h
        .agent_until(id, "the restart refused", LONG, |a| {
            a["managed"]["last_exit"]
                .as_str()
                .is_some_and(|e| e.contains("outside the work roots"))
        })
        .await;
    assert_ne!(a["status"], "idle", "{a:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_sets_only_the_environment_its_template_lists() {
    let h = Harness::start().await;
    let ran = h.path("ran");
    // Prints MODEL and whether LD_PRELOAD and PATH came through; marks that it ran.
    let script = format!(
        r#"touch {}; printf '%s|%s|%s' "$MODEL" "${{LD_PRELOAD-unset}}" "$PATH""#,
        ran.display()
    );
    let spec = exec_pool(&h, "envy", &script, json!({"payload_env": ["MODEL"]}));
    h.admin.put_pool("default", &spec).await.unwrap();
    idle_agent(&h, "envy").await;
    let path = std::env::var("PATH").unwrap();

    // A listed name arrives byte for byte, shell metacharacters and all.
    let hostile = format!("opus; $(touch {}) 'a' \"b\"\nc", h.path("pwned").display());
    let t = run_task(&h, "envy", json!({"env": {"MODEL": hostile}})).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"], format!("{hostile}|unset|{path}"));
    assert!(!h.path("pwned").exists());
    std::fs::remove_file(&ran).unwrap();

    // Any other name fails the task before anything runs, naming it and what is allowed.
    for name in ["LD_PRELOAD", "PATH"] {
        let t = run_task(
            &h,
            "envy",
            json!({"env": {"MODEL": "m", name: "/tmp/evil"}}),
        )
        .await;
        assert!(
            matches!(t["status"].as_str(), Some("failed" | "dead")),
            "{t:#}"
        );
        let error = t["last_error"]["message"].to_string();
        assert!(error.contains(name), "{error}");
        assert!(error.contains("payload_env allows: MODEL"), "{error}");
        assert!(!ran.exists(), "the command ran for a refused payload");
    }

    // Templates: reserved or malformed names, and daemons, are refused with a 400.
    for (extra, words) in [
        (json!({"payload_env": ["FLOTILLA_TOKEN"]}), "reserved"),
        (
            json!({"payload_env": ["A B"]}),
            "not an environment variable name",
        ),
        (
            json!({"payload_env": ["MODEL"], "mode": "daemon"}),
            "exec mode only",
        ),
    ] {
        let spec = exec_pool(&h, "worse", "true", extra);
        let (status, message) = refusal(h.admin.put_pool("default", &spec).await);
        assert_eq!(status, 400, "{message}");
        assert!(message.contains(words), "{message}");
    }
    h.finish().await;
}

/// `nobody`'s uid, gid and home, when this test may switch to it.
fn nobody(test: &str) -> Option<(u32, u32, String)> {
    if !flotilla_runtime_is_root() {
        eprintln!("SKIPPED {test}: running agents as another user needs a root coordinator");
        return None;
    }
    let out = std::process::Command::new("getent")
        .args(["passwd", "nobody"])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 6 {
        eprintln!("SKIPPED {test}: no user nobody on this machine");
        return None;
    }
    Some((
        fields[2].parse().ok()?,
        fields[3].parse().ok()?,
        fields[5].to_owned(),
    ))
}

fn flotilla_runtime_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_agents_run_as_the_configured_user() {
    let test = "managed_agents_run_as_the_configured_user";
    let Some((uid, gid, home)) = nobody(test) else {
        return;
    };
    let h = Harness::start_with(|c| c.run_as = Some("nobody".into())).await;
    let _tmux = PrivateTmux::new();
    // Exec mode, both runtimes: the task's output says who ran it.
    for runtime in ["process", "tmux"] {
        let pool = format!("exec-{runtime}");
        let spec = exec_pool(
            &h,
            &pool,
            WHERE_AND_WHO,
            json!({"runtime": runtime, "workdir": "/"}),
        );
        h.admin.put_pool("default", &spec).await.unwrap();
        idle_agent(&h, &pool).await;
        let t = run_task(&h, &pool, json!({})).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["result"], format!("/|{uid}|{gid}|{home}"), "{runtime}");
    }
    // Daemon mode, both runtimes: it prints who it is to its log, then waits.
    let daemon = format!("{WHERE_AND_WHO}; echo; exec sleep 300");
    for runtime in ["process", "tmux"] {
        let pool = format!("daemon-{runtime}");
        let spec: flotilla_core::PoolSpec = serde_json::from_value(json!({
            "name": pool, "min_agents": 1, "max_agents": 1,
            "agent": h.template(json!({
                "command": "sh", "args": ["-c", daemon], "mode": "daemon",
                "runtime": runtime, "workdir": "/",
            })),
        }))
        .unwrap();
        h.admin.put_pool("default", &spec).await.unwrap();
        let agent = poll("the daemon to start", LONG, || async {
            let agents = h.agents("default", &pool).await;
            match agents.first() {
                Some(a) if a["managed"]["pid"].is_u64() => Ok(a.clone()),
                _ => Err(agents),
            }
        })
        .await;
        let want = format!("/|{uid}|{gid}|{home}");
        let logs = poll("its ids in its log", LONG, || async {
            let text = h.admin.agent_logs(id_of(&agent), 50).await.unwrap();
            if text.contains(&want) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
        assert!(logs.contains(&want), "{runtime}: {logs}");
        // And the kernel agrees: the agent's processes belong to nobody.
        let pid = agent["managed"]["pid"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
        assert_eq!(uids, vec![uid.to_string(); 4], "{runtime}: {uid_line}");
    }
    // A pool's own user wins over --run-as.
    let spec = exec_pool(
        &h,
        "as-root",
        WHERE_AND_WHO,
        json!({"user": "root", "workdir": "/"}),
    );
    h.admin.put_pool("default", &spec).await.unwrap();
    idle_agent(&h, "as-root").await;
    let t = run_task(&h, "as-root", json!({})).await;
    assert_eq!(t["result"], "/|0|0|/root", "{t:#}");
    // An unknown user is refused when the pool is applied.
    let spec = exec_pool(&h, "ghost", "true", json!({"user": "no-such-user-here"}));
    let (status, message) = refusal(h.admin.put_pool("default", &spec).await);
    assert_eq!(status, 400);
    assert!(message.contains("no such user"), "{message}");
    h.finish().await;
}

/// The `flotilla` binary copied where `nobody` may run it (the build directory is root's).
fn binary_for_nobody(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("flotilla");
    std::fs::copy(FLOTILLA, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_is_not_root_refuses_other_users() {
    let test = "a_coordinator_that_is_not_root_refuses_other_users";
    let Some((uid, gid, _)) = nobody(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = binary_for_nobody(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    nix_chown(&data, uid, gid);
    let as_nobody = |args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(&bin)
        .args(args)
        .env("FLOTILLA_DATA_DIR", &data)
        .env("HOME", &data)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
        c
    };

    // --run-as another user: it does not start, and says why in one line.
    let out = as_nobody(&["serve", "--listen", "127.0.0.1:0", "--run-as", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--run-as root"), "{stderr}");
    assert!(stderr.contains("not root"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Without it, it serves; a pool naming another user is refused with a 400.
    let port = free_port();
    let mut child = as_nobody(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    poll("the coordinator up", LONG, || async {
        http.get(format!("{url}/healthz")).send().await.map(drop)
    })
    .await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let answer = http
        .put(format!("{url}/api/v1/swarms/default/pools/rooted"))
        .bearer_auth(token.trim())
        .json(&json!({"agent": {"command": "true", "user": "root"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("agent.user \"root\""), "{message}");
    assert!(
        message.contains(&format!("uid {uid}, not root")),
        "{message}"
    );
    // Naming itself is fine.
    let answer = http
        .put(format!("{url}/api/v1/swarms/default/pools/itself"))
        .bearer_auth(token.trim())
        .json(&json!({"agent": {"command": "true", "user": "nobody"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    // SAFETY of the signal: our own child.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // Not root: no warning about agents running as root.
    assert!(!stderr.contains("will run as root"), "{stderr}");
}

fn nix_chown(path: &Path, uid: u32, gid: u32) {
    let status = std::process::Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_coordinator_without_run_as_warns_once() {
    if !flotilla_runtime_is_root() {
        eprintln!("SKIPPED a_root_coordinator_without_run_as_warns_once: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(FLOTILLA)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env_remove("RUST_LOG")
        .env_remove("FLOTILLA_RUN_AS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    poll("the coordinator up", LONG, || async {
        http.get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .map(drop)
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("managed agents will run as root"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("--run-as"), "{stderr}");
}
