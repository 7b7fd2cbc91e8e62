//! The HTTP sinks over TLS against a real TLS server on 127.0.0.1 whose certificate comes from
//! a private CA and which demands a client certificate from the same CA: `--*-ca-file` makes
//! the server trusted, `--*-client-cert`/`--*-client-key` get the pipe in, and without the CA
//! the sink reports the certificate problem instead of delivering.

mod support;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use support::*;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

struct Pki {
    ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: Vec<u8>,
    client_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-event-pipe test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "kube-event-pipe");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.der().clone(),
        server_key: server_key.serialize_der(),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A TLS server that requires a client certificate signed by the CA; records each body.
struct TlsServer {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&pki.ca_pem) {
            roots.add(cert).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![pki.server_cert.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into()),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let store = bodies.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body.to_vec());
                "ok"
            }
        });
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client without a certificate from the CA fails here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        TlsServer {
            addr,
            bodies,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The DER certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minikube-eventlist.json")
}

fn write_pki(dir: &Path, pki: &Pki) {
    fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    fs::write(dir.join("client.pem"), &pki.client_pem).unwrap();
    fs::write(dir.join("client-key.pem"), &pki.client_key_pem).unwrap();
}

#[test]
fn the_webhook_trusts_a_private_ca_and_presents_its_client_certificate() {
    let pki = pki();
    let server = TlsServer::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path(), &pki);
    let out = pipe(&dir.path().join("p"))
        .arg("--replay-file")
        .arg(fixture())
        .args(["--sink", "http", "--http-url"])
        .arg(format!("https://{}/events", server.addr))
        .arg("--http-ca-file")
        .arg(dir.path().join("ca.pem"))
        .arg("--http-client-cert")
        .arg(dir.path().join("client.pem"))
        .arg("--http-client-key")
        .arg(dir.path().join("client-key.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text: String = server
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect();
    let expected = expected_occurrences(&fs::read_to_string(fixture()).unwrap());
    assert_exactly_once(&tally(text.split_inclusive('\n')), &expected);
}

#[test]
fn the_otlp_sink_trusts_a_private_ca_and_presents_its_client_certificate() {
    let pki = pki();
    let server = TlsServer::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path(), &pki);
    let out = pipe(&dir.path().join("p"))
        .arg("--replay-file")
        .arg(fixture())
        .args(["--sink", "otlp", "--otlp-endpoint"])
        .arg(format!("https://{}", server.addr))
        .arg("--otlp-ca-file")
        .arg(dir.path().join("ca.pem"))
        .arg("--otlp-client-cert")
        .arg(dir.path().join("client.pem"))
        .arg("--otlp-client-key")
        .arg(dir.path().join("client-key.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!server.bodies.lock().unwrap().is_empty());
}

#[test]
fn without_the_ca_the_sink_reports_the_certificate_and_delivers_nothing() {
    let pki = pki();
    let server = TlsServer::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path(), &pki);
    let mut child = pipe(&dir.path().join("p"))
        .arg("--replay-file")
        .arg(fixture())
        .args(["--sink", "http", "--http-url"])
        .arg(format!("https://{}/events", server.addr))
        // The input ends at once; shutdown then waits for the sink, which keeps failing.
        .args(["--shutdown-timeout", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Reader::spawn(child.stderr.take().unwrap());
    let end = std::time::Instant::now() + DEADLINE;
    let line = loop {
        log.drain_ready();
        let seen = log.until(0);
        if let Some(line) = seen.iter().find(|l| l.contains("HTTP sink failing")) {
            break line.clone();
        }
        assert!(
            std::time::Instant::now() < end,
            "no failure logged: {}",
            seen.concat()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    signal(&child, libc::SIGKILL);
    wait_exit(&mut child);
    assert!(server.bodies.lock().unwrap().is_empty());
}
