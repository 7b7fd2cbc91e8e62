//! A real S3-protocol server for the tests: s3s over a directory (s3s-fs), on 127.0.0.1.
//!
//! Objects live in files, so they outlive a killed pipe. The server can stop listening (every
//! open connection is cut too) and resume on the same port, as an S3 outage would look, and can
//! hold each PUT for a while so a test can kill the pipe in the middle of an upload. Objects are
//! read back through aws-sdk-s3, the same client the pipe uses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const ACCESS_KEY: &str = "kep-test-access";
pub const SECRET_KEY: &str = "kep-test-secret";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    service: s3s::service::S3Service,
    _root: tempfile::TempDir,
    listening: Mutex<Option<CancellationToken>>,
    /// Milliseconds each PUT is held before it is handled.
    put_delay_ms: Arc<AtomicU64>,
    /// PUT requests seen (whatever their outcome).
    pub puts: Arc<AtomicUsize>,
}

impl S3Server {
    /// Starts a server holding one empty bucket per name.
    pub fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        for b in buckets {
            std::fs::create_dir(root.path().join(b)).expect("bucket dir");
        }
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(async { listen("127.0.0.1:0".parse().expect("addr")) })
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = S3Server {
            rt,
            addr,
            service,
            _root: root,
            listening: Mutex::new(None),
            put_delay_ms: Arc::default(),
            puts: Arc::default(),
        };
        server.serve(listener);
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every following PUT for `delay` before handling it.
    pub fn delay_puts(&self, delay: Duration) {
        self.put_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes the port and every open connection, as an outage would.
    pub fn stop_listening(&self) {
        if let Some(stop) = self.lock().take() {
            stop.cancel();
        }
    }

    /// Listens again on the same port.
    pub fn resume_listening(&self) {
        if self.lock().is_some() {
            return;
        }
        let listener = self
            .rt
            .block_on(async { listen(self.addr) })
            .expect("rebind the port");
        self.serve(listener);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        *self.lock() = Some(stop.clone());
        let (service, delay, puts) = (
            self.service.clone(),
            self.put_delay_ms.clone(),
            self.puts.clone(),
        );
        self.rt.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    () = stop.cancelled() => return,
                };
                let (service, delay, puts, stop) =
                    (service.clone(), delay.clone(), puts.clone(), stop.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (service, delay, puts) =
                                (service.clone(), delay.clone(), puts.clone());
                            async move {
                                if req.method() == hyper::Method::PUT {
                                    puts.fetch_add(1, Ordering::Relaxed);
                                    let ms = delay.load(Ordering::Relaxed);
                                    if ms > 0 {
                                        tokio::time::sleep(Duration::from_millis(ms)).await;
                                    }
                                }
                                hyper::service::Service::call(&service, req).await
                            }
                        },
                    );
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    /// A client of this server with the given secret (the right one, or a wrong one).
    pub fn client_with(&self, secret: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Every object of `bucket`: key and body, sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        let client = self.client_with(SECRET_KEY);
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .expect("list objects");
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
                match page.next_continuation_token() {
                    Some(t) => token = Some(t.to_owned()),
                    None => break,
                }
            }
            keys.sort();
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let obj = client
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("get object");
                let body = obj.body.collect().await.expect("read object").into_bytes();
                out.push((key, body.to_vec()));
            }
            out
        })
    }

    /// Objects written, without reading their bodies (for polling).
    pub fn object_count(&self, root_bucket: &Path) -> usize {
        walk(&self._root.path().join(root_bucket))
    }
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path)
                } else if path.extension().is_some_and(|x| x == "gz") {
                    1
                } else {
                    0
                }
            })
            .sum()
    })
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The environment the pipe needs to reach `server` as an S3 sink with path-style requests.
pub fn pipe_s3_args(server: &S3Server, bucket: &str) -> Vec<String> {
    vec![
        "--s3-bucket".into(),
        bucket.into(),
        "--s3-endpoint".into(),
        server.endpoint(),
        "--s3-force-path-style".into(),
        "--aws-region".into(),
        REGION.into(),
        "--uid".into(),
        "test-stream".into(),
    ]
}

/// Credentials for the pipe (the default chain reads them from the environment); instance
/// metadata is off so nothing leaves 127.0.0.1.
pub fn pipe_s3_env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}
