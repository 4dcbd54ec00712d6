//! The fault-injection proxy itself: forwards, stalls, heals, drops, half-closes.

use std::time::Duration;

use lepus_tests::proxy::{Fault, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
    s.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match timeout(Duration::from_millis(ms), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf.to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn forwards_stalls_heals_and_drops() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut s, 1000).await.as_deref(),
        Some(&b"ping"[..])
    );

    proxy.inject(Fault::Stall);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        round_trip(&mut s, 200).await,
        None,
        "stalled: nothing comes back"
    );
    proxy.heal();
    let mut buf = [0u8; 4];
    let n = timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(_))),
        "the stalled ping is delivered after healing"
    );
    assert_eq!(&buf, b"ping");

    proxy.inject(Fault::Drop);
    let mut byte = [0u8; 1];
    let closed = timeout(Duration::from_secs(1), s.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "dropped: the client sees the close"
    );

    // New connections are forwarded again.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut again, 1000).await.as_deref(),
        Some(&b"ping"[..])
    );
    assert_eq!(proxy.accepted(), 2);
}

#[tokio::test]
async fn half_close_ends_the_client_side() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(&mut s, 1000).await.is_some());
    proxy.inject(Fault::HalfClose);
    let mut byte = [0u8; 1];
    let eof = timeout(Duration::from_secs(1), s.read(&mut byte)).await;
    assert!(matches!(eof, Ok(Ok(0))), "the client reads end-of-stream");
}
