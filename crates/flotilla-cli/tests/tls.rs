//! The real `flotilla serve --tls-cert --tls-key` with a self-signed certificate made here
//! (rcgen), driven by the real CLI: commands over https with `--ca-cert` (or
//! `FLOTILLA_CA_CERT`), refused without it and over plain http with one line saying what to do;
//! a managed daemon (`flotilla worker --agent-from-env`) reaching it over TLS with the
//! certificate the coordinator hands it; and the warning for plain HTTP beyond loopback.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{FLOTILLA, free_port};

/// A `flotilla serve` process with its data directory; killed (TERM) when dropped.
struct Serve {
    child: Option<Child>,
    dir: tempfile::TempDir,
    url: String,
}

impl Serve {
    fn start(listen: &str, extra: &[&str], url: String) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(FLOTILLA)
            .args(["serve", "--listen", listen])
            .args(extra)
            .env("FLOTILLA_DATA_DIR", dir.path())
            .env_remove("RUST_LOG")
            .env_remove("FLOTILLA_URL")
            .env_remove("FLOTILLA_CA_CERT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flotilla serve starts");
        Serve {
            child: Some(child),
            dir,
            url,
        }
    }

    /// Runs the CLI against it, with `args` and `env`.
    fn cli(&self, url: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(FLOTILLA);
        c.arg("--url")
            .arg(url)
            .args(args)
            .env("FLOTILLA_DATA_DIR", self.dir.path())
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_CA_CERT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Waits until `swarm list` succeeds with `args` (the coordinator is up).
    fn wait_up(&self, args: &[&str]) {
        let started = Instant::now();
        loop {
            let mut all = args.to_vec();
            all.extend(["swarm", "list"]);
            let out = self.cli(&self.url, &all, &[]);
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the coordinator did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM) and returns what it wrote on stderr.
    fn stop(&mut self) -> String {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let mut text = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) PEM files in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "it succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn the_cli_talks_https_with_ca_cert_and_says_what_to_do_without() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let cert_arg = cert.to_str().unwrap();
    let mut serve = Serve::start(
        &format!("127.0.0.1:{port}"),
        &["--tls-cert", cert_arg, "--tls-key", key.to_str().unwrap()],
        url.clone(),
    );
    serve.wait_up(&["--ca-cert", cert_arg]);

    // With the certificate: by flag, and by FLOTILLA_CA_CERT.
    let out = serve.cli(&url, &["--ca-cert", cert_arg, "swarm", "list"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("default"));
    let out = serve.cli(&url, &["swarm", "list"], &[("FLOTILLA_CA_CERT", &cert)]);
    assert!(out.status.success(), "{out:?}");

    // Without it: refused, one line naming --ca-cert.
    let line = one_error_line(&serve.cli(&url, &["swarm", "list"], &[]));
    assert!(
        line.contains("does not trust") && line.contains("--ca-cert"),
        "{line}"
    );
    // Plain http to the TLS port: one line saying to use https.
    let plain = format!("http://127.0.0.1:{port}");
    let line = one_error_line(&serve.cli(&plain, &["swarm", "list"], &[]));
    assert!(
        line.contains(&format!("use https://127.0.0.1:{port}")),
        "{line}"
    );
    // A CA file that is no certificate: one line naming it.
    let bogus = certs.path().join("bogus.pem");
    std::fs::write(&bogus, "hello").unwrap();
    let line = one_error_line(&serve.cli(
        &url,
        &["--ca-cert", bogus.to_str().unwrap(), "swarm", "list"],
        &[],
    ));
    assert!(line.contains("bogus.pem"), "{line}");

    // A managed daemon: `flotilla worker --agent-from-env` gets an https FLOTILLA_URL and
    // FLOTILLA_CA_CERT, registers over TLS and runs a task.
    let fleet = certs.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            r#"[swarms.default.pools.echo]
min_agents = 1
capabilities = ["echo"]
[swarms.default.pools.echo.agent]
command = "{FLOTILLA}"
args = ["worker", "--agent-from-env", "--", "sh", "-c", "cat"]
mode = "daemon"
stop_grace = "2s"
"#
        ),
    )
    .unwrap();
    let out = serve.cli(
        &url,
        &["--ca-cert", cert_arg, "apply", fleet.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let out = serve.cli(
        &url,
        &[
            "--ca-cert",
            cert_arg,
            "task",
            "submit",
            "--type",
            "echo",
            "--require",
            "echo",
            "--payload",
            r#"{"over": "tls"}"#,
            "--wait",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["status"], "completed", "{task:#}");
    assert_eq!(task["result"]["over"], "tls", "{task:#}");

    // TLS on loopback: no warning about plain HTTP.
    let stderr = serve.stop();
    assert!(!stderr.contains("serving plain HTTP"), "{stderr}");
}

#[test]
fn plain_http_beyond_loopback_is_warned_of_and_tls_is_not() {
    let port = free_port();
    let mut serve = Serve::start(
        &format!("0.0.0.0:{port}"),
        &[],
        format!("http://127.0.0.1:{port}"),
    );
    serve.wait_up(&[]);
    let stderr = serve.stop();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: serving plain HTTP on 0.0.0.0"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("--tls-cert"), "{stderr}");

    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let port = free_port();
    let cert_arg = cert.to_str().unwrap();
    let mut serve = Serve::start(
        &format!("0.0.0.0:{port}"),
        &["--tls-cert", cert_arg, "--tls-key", key.to_str().unwrap()],
        format!("https://127.0.0.1:{port}"),
    );
    serve.wait_up(&["--ca-cert", cert_arg]);
    let stderr = serve.stop();
    assert!(!stderr.contains("serving plain HTTP"), "{stderr}");
}

#[test]
fn up_with_tls_on_every_address_applies_its_file_over_loopback() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let fleet = certs.path().join("fleet.toml");
    std::fs::write(&fleet, "[swarms.tls-up]\ndescription = \"over TLS\"\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(FLOTILLA)
        .arg("up")
        .arg(&fleet)
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("FLOTILLA_DATA_DIR", data.path())
        .env_remove("RUST_LOG")
        .env_remove("FLOTILLA_CA_CERT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("tls-up") && l.contains("created"))
    {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => seen.push(line),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "flotilla up did not apply its file: {seen:#?}"
            ),
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("https://0.0.0.0:{port}"))),
        "{seen:#?}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
