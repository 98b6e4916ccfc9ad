//! A loopback proxy in front of moto that loses what a test asks it to: the answers
//! to `PutSecretValue` (the write landed, the caller never hears), the puts themselves
//! (nothing landed), or every request (nothing can be read back either).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Loss {
    /// Nothing: a plain proxy.
    Nothing = 0,
    /// Forwards each put, then closes the connection instead of answering.
    PutAnswers = 1,
    /// Closes the connection on each put without forwarding it.
    Puts = 2,
    /// Closes every connection without forwarding anything.
    Everything = 3,
}

/// The proxy; it stops with the test's runtime.
pub struct Lossy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    loss: Arc<AtomicU8>,
}

impl Lossy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`) that loses nothing yet.
    pub async fn start(upstream: &str) -> Lossy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let loss = Arc::new(AtomicU8::new(Loss::Nothing as u8));
        let shared = loss.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, loss) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &loss).await;
                });
            }
        });
        Lossy { url, loss }
    }

    /// From now on, loses `loss`.
    pub fn lose(&self, loss: Loss) {
        self.loss.store(loss as u8, Ordering::SeqCst);
    }
}

/// Reads one HTTP/1.1 message (headers, then a Content-Length body); `None` at EOF.
async fn message(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Ok(Some(buf))
}

async fn serve(mut client: TcpStream, upstream: &str, loss: &AtomicU8) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    while let Some(request) = message(&mut client).await? {
        let is_put = String::from_utf8_lossy(&request)
            .to_ascii_lowercase()
            .contains("x-amz-target: secretsmanager.putsecretvalue");
        let loss = loss.load(Ordering::SeqCst);
        if loss == Loss::Everything as u8 || (is_put && loss == Loss::Puts as u8) {
            return Ok(());
        }
        server.write_all(&request).await?;
        let Some(answer) = message(&mut server).await? else {
            return Ok(());
        };
        if is_put && loss == Loss::PutAnswers as u8 {
            return Ok(());
        }
        client.write_all(&answer).await?;
    }
    Ok(())
}
