//! HTTPS with a self-signed certificate made here (rcgen): the typed client trusting it through
//! `ClientOptions::ca_cert` (requests and the message WebSocket over wss), refusing it without,
//! plain HTTP to the TLS port told to use https, https to a plain port told the same the other
//! way, bad certificate files refused at start, and a graceful shutdown.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Harness;
use flotilla_client::{Client, ClientError, ClientOptions};
use flotilla_core::{AgentSpec, Json, MessageSpec};
use flotilla_server::tls::TlsFiles;

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM into `dir`.
fn self_signed(dir: &Path) -> TlsFiles {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    TlsFiles { cert, key }
}

async fn tls_harness() -> (Harness, TlsFiles, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let files = self_signed(certs.path());
    let tls = files.clone();
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| c.tls = Some(tls)).await;
    (h, files, certs)
}

fn trusting(h: &Harness, ca: Option<PathBuf>) -> Client {
    Client::with_options(
        &h.server.url(),
        h.server.admin_token.clone(),
        &ClientOptions { ca_cert: ca },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_certificate_talks_https_and_wss() {
    let (h, files, _certs) = tls_harness().await;
    assert!(h.server.url().starts_with("https://127.0.0.1:"));
    assert!(h.server.tls);
    let admin = trusting(&h, Some(files.cert.clone()));
    admin.healthz().await.unwrap();
    let swarms = admin.list_swarms().await.unwrap();
    assert!(swarms.iter().any(|s| s.swarm.name == "default"));

    // An agent's message socket, over wss with the same trust.
    let reg = admin
        .register_agent("default", &AgentSpec::default())
        .await
        .unwrap();
    let agent = admin.with_token(reg.token.clone());
    let mut socket = agent.message_socket(reg.agent_id, 10).await.unwrap();
    let spec = MessageSpec {
        body: Json::from(serde_json::json!({"over": "wss"})),
        ..MessageSpec::default()
    };
    admin.send_message(reg.agent_id, &spec).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a message within 10 s")
        .unwrap()
        .expect("the socket open");
    assert_eq!(batch[0].body.to_value()["over"], "wss");

    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_and_wrong_schemes_fail_with_one_line_saying_what_to_do() {
    let (h, _files, _certs) = tls_harness().await;

    // The public roots alone do not trust a self-signed certificate.
    let err = trusting(&h, None).list_swarms().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not trust"), "{text}");
    assert!(text.contains("--ca-cert"), "{text}");
    assert!(!text.contains('\n'), "{text}");

    // Plain HTTP to the TLS port: a 400 saying to use https.
    let plain = h.server.url().replacen("https://", "http://", 1);
    let err = Client::new(&plain, h.server.admin_token.clone())
        .unwrap()
        .list_swarms()
        .await
        .unwrap_err();
    match &err {
        ClientError::Api {
            status,
            code,
            message,
        } => {
            assert_eq!((*status, code.as_str()), (400, "tls_required"));
            assert!(message.contains("use https://127.0.0.1:"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A CA file that is not one is refused before any request.
    let bogus = h.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let err = Client::with_options(
        &h.server.url(),
        "t",
        &ClientOptions {
            ca_cert: Some(bogus),
        },
    )
    .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("bogus.pem"), "{err}");
    h.server.shutdown().await.unwrap();

    // https to a plain coordinator: told it is not TLS.
    let h = Harness::start().await;
    let tls_url = h.server.url().replacen("http://", "https://", 1);
    let err = Client::new(&tls_url, h.server.admin_token.clone())
        .unwrap()
        .list_swarms()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http:// URL"), "{err}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_stop_the_start_with_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let files = self_signed(certs.path());
    let other = tempfile::tempdir().unwrap();
    let unrelated = self_signed(other.path());
    for (tls, words) in [
        (
            TlsFiles {
                cert: certs.path().join("missing.pem"),
                key: files.key.clone(),
            },
            "--tls-cert",
        ),
        (
            TlsFiles {
                cert: files.cert.clone(),
                key: files.cert.clone(),
            },
            "--tls-key",
        ),
        (
            TlsFiles {
                cert: files.cert.clone(),
                key: unrelated.key.clone(),
            },
            "do not go together",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = common::config(dir.path());
        c.tls = Some(tls);
        let err = match flotilla_server::start(c).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with {words}"),
        };
        assert!(err.contains(words), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
