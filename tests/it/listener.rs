//! `daemon.listen` under load it must shrug off: thousands of idle connections and
//! slowloris clients (a header byte every 3 s) against the real daemon, run at a file
//! limit of 1,024 (soft and hard, so raising the soft limit cannot hide a leak of
//! descriptors). A reload and the pass it starts still work, and `/healthz` answers as
//! soon as the load stops.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use support::{Env, eventually, free_port, send_signal};

/// `GET path` with a client that gives up after `limit`: the status, or 0 for no answer.
async fn get(port: u16, path: &str, limit: Duration) -> u16 {
    let client = reqwest::Client::builder().timeout(limit).build().unwrap();
    match client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn connect(port: u16) -> Option<TcpStream> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Opens a connection and sends nothing, for as long as the server keeps it; then again.
fn idle_client(port: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(mut s) = connect(port).await {
                let mut buf = [0u8; 64];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Sends a request head one byte every 3 s, never finishing it; then again.
fn slowloris_client(port: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        loop {
            if let Some(mut s) = connect(port).await {
                for byte in head.iter().cycle() {
                    if s.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_whole_request_head_is_closed() {
    let env = Env::start().await;
    let port = free_port();
    env.replace_policy(&env.daemon_policy(port, false));
    let mut child = env
        .command(&[], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("/healthz 200", Duration::from_secs(30), async || {
        get(port, "/healthz", Duration::from_secs(5)).await == 200
    })
    .await;
    let mut idle = connect(port).await.expect("connects");
    let mut slow = connect(port).await.expect("connects");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The server closes both (after 5 s); the bound here only keeps a broken server
    // from hanging the test.
    for (what, s) in [("idle", &mut idle), ("slow", &mut slow)] {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the {what} connection is still open");
    }
    assert_eq!(get(port, "/healthz", Duration::from_secs(5)).await, 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_neither_stop_a_pass_nor_keep_healthz_down() {
    let env = Env::start().await;
    let port = free_port();
    env.replace_policy(&env.daemon_policy(port, false));
    let log_path = env.dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // Soft and hard: the daemon's own raise to the hard limit changes nothing here.
    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_cds-rotator"))
        .arg("--config")
        .arg(env.policy_path())
        .env_remove("CDS_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("run prlimit (util-linux)");
    let pid = child.id().unwrap();
    eventually("/readyz 200", Duration::from_secs(30), async || {
        get(port, "/readyz", Duration::from_secs(5)).await == 200
    })
    .await;
    assert!(env.record("web").is_none(), "web is not in the policy yet");

    let mut load: Vec<JoinHandle<()>> = (0..2000).map(|_| idle_client(port)).collect();
    load.extend((0..50).map(|_| slowloris_client(port)));
    // Long enough for every connection to be made (and, before the fix, held).
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Under the load: a reload (it reads the policy) and the pass it starts (the lock,
    // the store, the HTTPS connections to CDS) need descriptors.
    env.replace_policy(&env.daemon_policy(port, true));
    let rotated = tokio::time::timeout(Duration::from_secs(60), async {
        while env.record("web").is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for task in &load {
        task.abort();
    }
    for task in load {
        let _ = task.await;
    }
    let daemon_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        rotated.is_ok(),
        "web was not rotated under the load:\n{daemon_log}"
    );
    let value = env.value("web").expect("web's new value in the store");
    assert!(
        env.gets_token(support::HYBRID, &value).await,
        "the published value works"
    );

    // The load is gone: the server answers at once (the bound is 1 s; the
    // first answer is given a few seconds on a slow, shared machine).
    let started = std::time::Instant::now();
    assert_eq!(
        get(port, "/healthz", Duration::from_secs(5)).await,
        200,
        "no /healthz answer once the load stopped:\n{daemon_log}"
    );
    eprintln!("/healthz answered in {:?}", started.elapsed());

    send_signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    let daemon_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{daemon_log}");
}
