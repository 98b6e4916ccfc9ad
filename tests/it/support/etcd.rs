//! A single-member etcd (Debian's `etcd-server`, which scripts/test-deps.sh installs) on
//! free loopback ports, plain or over TLS with client certificates, for the
//! coordination tests. Not here: the `coordination:` section that points at it (the
//! tests write it), the Kubernetes Lease fake (`kube`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{TestCa, free_port};

/// A single-member etcd on free loopback ports with its own data directory; killed when
/// dropped. It can be stopped and started again on the same ports and data.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    /// Clients must present a certificate of this CA, over TLS.
    pub tls: Option<EtcdTls>,
}

/// The files of an etcd that serves TLS and asks for client certificates.
pub struct EtcdTls {
    pub ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Where `etcd` is. Fails (never skips) when it is missing.
fn etcd_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let bin = PathBuf::from(dir).join("etcd");
        if bin.is_file() {
            return bin;
        }
    }
    panic!("etcd is missing: run `bash scripts/test-deps.sh` (it installs Debian's etcd-server)");
}

impl Etcd {
    pub async fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().unwrap(),
            tls: None,
        };
        etcd.run().await;
        etcd
    }

    /// An etcd that serves TLS only and refuses a client without a certificate of a CA
    /// made for this test.
    pub async fn start_tls() -> Etcd {
        let data = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let file = |name: &str, pem: String| {
            let path = data.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let (server, server_key) = ca.issue(&["127.0.0.1"]);
        let (client, client_key) = ca.issue(&["cds-rotator"]);
        let tls = EtcdTls {
            ca: file("ca.pem", ca.pem()),
            server_cert: file("server.pem", server.pem()),
            server_key: file("server-key.pem", server_key.serialize_pem()),
            client_cert: file("client.pem", client.pem()),
            client_key: file("client-key.pem", client_key.serialize_pem()),
        };
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data,
            tls: Some(tls),
        };
        etcd.run().await;
        etcd
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A client for the test's own requests, with the client certificate when TLS is on.
    fn http(&self) -> reqwest::Client {
        let mut http = reqwest::Client::builder();
        if let Some(tls) = &self.tls {
            let ca = std::fs::read(&tls.ca).unwrap();
            let mut identity = std::fs::read(&tls.client_cert).unwrap();
            identity.extend(std::fs::read(&tls.client_key).unwrap());
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .identity(reqwest::Identity::from_pem(&identity).unwrap());
        }
        http.build().unwrap()
    }

    pub async fn run(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(etcd_binary());
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.data.path().join("etcd").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let http = self.http();
        loop {
            let answer = http
                .post(format!("{client}/v3/kv/range"))
                .body(r#"{"key":"AA=="}"#)
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}
