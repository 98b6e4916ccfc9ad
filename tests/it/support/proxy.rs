//! A fault proxy for the tests: a loopback proxy in front of a real server (moto, OpenBao,
//! the emulator, etcd, the Key Vault fake) that misbehaves the way a network does, per
//! rule, so retry and lost-write paths are tested against the real thing.
//!
//! It reads HTTP/1.1 requests one at a time per connection (headers, then a
//! `Content-Length` or chunked body) and matches each against the rules in the order
//! they were added: a rule matches when the request's head (request line and headers,
//! compared case-insensitively) contains its text, and it applies to the next `times`
//! matching requests. What it can do is a [`Fault`]: delay, answer 429/503 with
//! `Retry-After` without forwarding, forward and drop the answer (and then cut every
//! connection), forward and keep a duplicate, hold the request (the caller sees a lost
//! answer) or reset the connection.
//! Held requests and duplicates reach the server only when the test says so
//! ([`FaultProxy::deliver_held`]): a late write lands at a point the test chooses, never
//! after a timer that machine speed could beat.
//!
//! TLS servers (the Key Vault fake) are proxied at the plaintext level: the proxy
//! terminates TLS with a server config the test's client trusts and speaks TLS to the
//! server ([`FaultProxy::start_tls`]), so a held request is replayed as plaintext on a
//! new TLS connection. etcd is proxied through its v3 JSON gateway, which the rotator
//! uses. Not here: HTTP/2 (the proxy parses HTTP/1.1 only), answers streamed without an
//! end (a watch): such a request holds its connection until the server ends it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to a request a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Waits this long, then forwards the request and its answer.
    Delay(Duration),
    /// Answers `status` (429, 503; 403 to refuse for good) with `Retry-After:
    /// retry_after` (seconds) without forwarding the request.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` value, in seconds.
        retry_after: u64,
    },
    /// Forwards the request, then closes the caller's connection instead of answering:
    /// the write landed, the caller never hears.
    DropAnswer,
    /// Forwards the request and its answer, and keeps a copy that
    /// [`FaultProxy::deliver_held`] delivers again (a delayed duplicate).
    Duplicate,
    /// Keeps the request without forwarding it and closes the caller's connection: the
    /// caller sees a lost answer, and the request lands only when
    /// [`FaultProxy::deliver_held`] delivers it (delayed in the network).
    Hold,
    /// Resets the caller's connection (TCP RST) without forwarding.
    Reset,
    /// Forwards the request and closes the caller's connection instead of answering, as
    /// [`Fault::DropAnswer`]; from then on the proxy resets every request, whatever the
    /// rules: the write landed, and nothing can be read back to tell.
    DropAnswerAndCut,
}

struct Rule {
    head_contains: String,
    fault: Fault,
    times: usize,
}

/// How the proxy reaches its server.
#[derive(Clone)]
enum Upstream {
    Plain(SocketAddr),
    Tls {
        addr: SocketAddr,
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Upstream::Plain(addr) => Ok(Box::new(TcpStream::connect(addr).await?)),
            Upstream::Tls {
                addr,
                connector,
                name,
            } => {
                let tcp = TcpStream::connect(addr).await?;
                Ok(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        }
    }
}

struct Shared {
    upstream: Upstream,
    rules: Mutex<Vec<Rule>>,
    held: Mutex<Vec<Vec<u8>>>,
    log: Mutex<Vec<String>>,
    /// Set by [`Fault::DropAnswerAndCut`]: every request is reset.
    cut: AtomicBool,
}

/// A running fault proxy; it stops with the test's runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT` (`https://` from [`FaultProxy::start_tls`]).
    pub url: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to the plain-HTTP (or any TCP) server at `upstream`
    /// (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`), with no rules yet.
    pub async fn start(upstream: &str) -> FaultProxy {
        let addr = socket_addr(upstream);
        Self::listen(Upstream::Plain(addr), None, "http").await
    }

    /// A proxy to the TLS server at `upstream` (`https://127.0.0.1:PORT`): it accepts
    /// TLS with `server` (a certificate for 127.0.0.1 the test's client trusts) and
    /// connects to the server trusting only `ca`.
    pub async fn start_tls(
        upstream: &str,
        server: Arc<rustls::ServerConfig>,
        ca: rustls::pki_types::CertificateDer<'static>,
    ) -> FaultProxy {
        let addr = socket_addr(upstream);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let upstream = Upstream::Tls {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            name: rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        Self::listen(
            upstream,
            Some(tokio_rustls::TlsAcceptor::from(server)),
            "https",
        )
        .await
    }

    async fn listen(
        upstream: Upstream,
        tls: Option<tokio_rustls::TlsAcceptor>,
        scheme: &str,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            cut: AtomicBool::new(false),
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (shared, tls) = (serving.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let mut tcp = tcp;
                            if let Ok(End::Reset) = serve(&mut tcp, &shared).await {
                                let _ = tcp.set_zero_linger();
                            }
                        }
                        Some(acceptor) => {
                            let Ok(mut stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            if let Ok(End::Reset) = serve(&mut stream, &shared).await {
                                let _ = stream.get_ref().0.set_zero_linger();
                            }
                        }
                    }
                });
            }
        });
        FaultProxy {
            url: format!("{scheme}://{addr}"),
            shared,
        }
    }

    /// Applies `fault` to the next `times` requests whose head (request line and
    /// headers, case-insensitively) contains `head_contains`: `"PUT /secrets/app"`,
    /// `"x-amz-target: secretsmanager.PutSecretValue"`. Rules apply in the order added.
    pub fn on(&self, head_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().unwrap().push(Rule {
            head_contains: head_contains.to_ascii_lowercase(),
            fault,
            times,
        });
    }

    /// Drops every rule and ends a cut: from now on a plain proxy.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// How many requests are held or kept as duplicates, not yet delivered.
    pub fn held(&self) -> usize {
        self.shared.held.lock().unwrap().len()
    }

    /// Delivers every held request and duplicate now, in the order they came, each on a
    /// new connection to the server; returns the server's HTTP status for each (0 when
    /// it gave no answer). Their answers go nowhere: their callers gave up long ago.
    pub async fn deliver_held(&self) -> Vec<u16> {
        let held = std::mem::take(&mut *self.shared.held.lock().unwrap());
        let mut statuses = Vec::new();
        for request in held {
            let status = async {
                let mut server = self.shared.upstream.connect().await.ok()?;
                server.write_all(&request).await.ok()?;
                let answer = message(&mut server).await.ok()??;
                status_of(&answer)
            }
            .await;
            statuses.push(status.unwrap_or(0));
        }
        statuses
    }

    /// Every request seen, as `METHOD path [fault]`, in order.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

/// How a served connection ended.
enum End {
    Closed,
    Reset,
}

fn socket_addr(url: &str) -> SocketAddr {
    let rest = url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .unwrap_or_else(|_| panic!("the fault proxy needs an IP:PORT upstream, not {url}"))
}

/// The fault for a request with this head, counting it against its rule.
fn fault_for(shared: &Shared, head: &str) -> Option<Fault> {
    if shared.cut.load(Ordering::SeqCst) {
        return Some(Fault::Reset);
    }
    let mut rules = shared.rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.times > 0 && head.contains(&r.head_contains))?;
    rule.times -= 1;
    Some(rule.fault)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    client: &mut S,
    shared: &Shared,
) -> std::io::Result<End> {
    let mut server: Option<Box<dyn Io>> = None;
    while let Some(request) = message(client).await? {
        let head = head_of(&request);
        let fault = fault_for(shared, &head.to_ascii_lowercase());
        let line = head.lines().next().unwrap_or("").to_owned();
        let line = line
            .rsplit_once(' ')
            .map_or(line.as_str(), |(l, _)| l)
            .to_owned();
        shared.log.lock().unwrap().push(match fault {
            Some(f) => format!("{line} [{f:?}]"),
            None => line,
        });
        match fault {
            Some(Fault::Refuse {
                status,
                retry_after,
            }) => {
                let answer = format!(
                    "HTTP/1.1 {status} Refused by the fault proxy\r\nretry-after: {retry_after}\r\ncontent-length: 0\r\n\r\n"
                );
                client.write_all(answer.as_bytes()).await?;
                continue;
            }
            Some(Fault::Hold) => {
                shared.held.lock().unwrap().push(request);
                return Ok(End::Closed);
            }
            Some(Fault::Reset) => return Ok(End::Reset),
            Some(Fault::Delay(wait)) => tokio::time::sleep(wait).await,
            Some(Fault::Duplicate) => shared.held.lock().unwrap().push(request.clone()),
            Some(Fault::DropAnswer | Fault::DropAnswerAndCut) | None => {}
        }
        if server.is_none() {
            server = Some(shared.upstream.connect().await?);
        }
        let Some(upstream) = server.as_mut() else {
            return Ok(End::Closed);
        };
        upstream.write_all(&request).await?;
        let Some(answer) = message(upstream).await? else {
            return Ok(End::Closed);
        };
        if fault == Some(Fault::DropAnswerAndCut) {
            shared.cut.store(true, Ordering::SeqCst);
        }
        if matches!(fault, Some(Fault::DropAnswer | Fault::DropAnswerAndCut)) {
            return Ok(End::Closed);
        }
        client.write_all(&answer).await?;
    }
    Ok(End::Closed)
}

fn head_of(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    String::from_utf8_lossy(&message[..end]).into_owned()
}

fn status_of(answer: &[u8]) -> Option<u16> {
    head_of(answer).split(' ').nth(1)?.parse().ok()
}

/// Reads one HTTP/1.1 message: headers, then a `Content-Length` or chunked body; `None`
/// at EOF before a message starts.
async fn message<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let complete = |buf: &[u8]| -> bool {
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            buf[head_end..].ends_with(b"0\r\n\r\n")
        } else {
            let length: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            buf.len() >= head_end + length
        }
    };
    while !complete(&buf) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(buf))
}
