//! An OpenBao dev server on a free loopback port for the vault store's tests, and a tiny
//! HTTP proxy in front of it that can lose an answer or let another writer in first.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// A running `bao server -dev`, killed when dropped.
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The root token (random per server).
    pub root: String,
    /// Its `HOME`, removed when it is dropped.
    _home: tempfile::TempDir,
}

impl Bao {
    /// Starts a dev server (KV v2 at `secret/`) and waits until it answers.
    pub async fn start() -> Bao {
        let bin = super::test_bin("bao");
        let port = super::free_port();
        let root = format!("root-{}", uuid::Uuid::new_v4().simple());
        let home = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={root}"),
            ])
            .env("HOME", home.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bao server -dev");
        let bao = Bao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            root,
            _home: home,
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, _) = bao.api("GET", "sys/health", None).await;
            if status == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bao server -dev did not come up at {}",
                bao.addr
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        bao
    }

    /// Kills the server.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// A request with the root token: status (0 when unreachable) and JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.root, method, path, body).await
    }

    /// A request with `token`.
    pub async fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_in("", token, method, path, body).await
    }

    /// A request with `token` in `namespace` (`""`: the root namespace).
    pub async fn api_in(
        &self,
        namespace: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new()
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if !namespace.is_empty() {
            req = req.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.json().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// The value readers get from `secret/data/{key}`.
    pub async fn value(&self, key: &str) -> Option<String> {
        let (status, body) = self.api("GET", &format!("secret/data/{key}"), None).await;
        if status != 200 {
            return None;
        }
        body["data"]["data"]["client_secret"]
            .as_str()
            .map(str::to_owned)
    }

    /// The current version number of `secret/data/{key}` (0 when none).
    pub async fn version(&self, key: &str) -> u64 {
        let (_, body) = self
            .api("GET", &format!("secret/metadata/{key}"), None)
            .await;
        body["data"]["current_version"].as_u64().unwrap_or(0)
    }

    /// Creates an ACL policy from HCL.
    pub async fn policy(&self, name: &str, hcl: &str) {
        let (status, body) = self
            .api(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                Some(json!({ "policy": hcl })),
            )
            .await;
        assert!(status / 100 == 2, "create policy {name}: {status} {body}");
    }

    /// A token with these policies (and no default root powers).
    pub async fn token_with(&self, policies: &[&str]) -> String {
        let (status, body) = self
            .api(
                "POST",
                "auth/token/create",
                Some(json!({ "policies": policies })),
            )
            .await;
        assert_eq!(status, 200, "create token: {body}");
        body["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

/// The Vault policy the README asks for, for secrets under `secret/cds/`.
pub const ROTATOR_HCL: &str = r#"
path "secret/data/cds/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/cds/*" { capabilities = ["create", "update", "read"] }
"#;

/// What the proxy does to the first `POST /v1/secret/data/...` it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trick {
    /// Forward it, then close the connection without answering.
    LoseAnswer,
    /// Close the connection without forwarding it.
    LoseRequest,
    /// Write another version (as another writer) first, then forward it.
    WriteFirst,
}

/// A proxy on loopback in front of a [`Bao`].
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// How many data writes it has seen.
    pub writes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy to `bao` that plays `trick` once.
    pub async fn start(bao: &Bao, trick: Trick) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let writes = Arc::new(AtomicUsize::new(0));
        let upstream = bao.addr.clone();
        let root = bao.root.clone();
        let seen = writes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, root, seen) = (upstream.clone(), root.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &upstream, &root, trick, &seen).await;
                });
            }
        });
        Proxy { addr, writes, task }
    }
}

/// Serves one client connection, request by request.
async fn serve(
    mut conn: TcpStream,
    upstream: &str,
    root: &str,
    trick: Trick,
    seen: &AtomicUsize,
) -> std::io::Result<()> {
    let http = reqwest::Client::new();
    let mut buf = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        let mut length = 0usize;
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);

        let is_data_write = method == "POST" && path.starts_with("/v1/secret/data/");
        let first = is_data_write && seen.fetch_add(1, Ordering::SeqCst) == 0;
        if first && trick == Trick::LoseRequest {
            return Ok(());
        }
        if first && trick == Trick::WriteFirst {
            let other = json!({ "data": { "client_secret": "another-writers-value" } });
            http.post(format!("{upstream}{path}"))
                .header("X-Vault-Token", root)
                .json(&other)
                .send()
                .await
                .expect("the other writer's write");
        }
        let mut req = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{upstream}{path}"),
        );
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("x-vault-token")
                || k.eq_ignore_ascii_case("x-vault-namespace")
                || k.eq_ignore_ascii_case("content-type")
            {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.body(body).send().await.expect("forward to bao");
        if first && trick == Trick::LoseAnswer {
            return Ok(());
        }
        let status = resp.status();
        let answer = resp.bytes().await.unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Status"),
            answer.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(&answer).await?;
    }
}
