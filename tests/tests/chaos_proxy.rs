//! Reliability through a faulty network path: a TCP proxy between the clients and RabbitMQ
//! drops, stalls and half-closes connections during load; zero confirmed messages may be
//! lost. In a process of its own (a test binary), apart from the broker-wide scenarios.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::AmqpConfig;
use lepus_tests::chaos::{broker, run, setup, Tally};
use lepus_tests::proxy::{Fault, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_drops_stalls_and_half_closes_lose_nothing() {
    let Some(config) = broker("proxy faults", false).await else {
        return;
    };
    let upstream: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Arc::new(Proxy::start(upstream).await.unwrap());
    // Short heartbeats would catch a stall; here the stall is healed before any timeout and
    // the drops end connections outright.
    let through = AmqpConfig::new(proxy.amqp_url()).send_timeout(Duration::from_secs(90));
    let mut s = setup("proxy", &config);
    s.publisher_config = through.clone();
    s.worker_config = through;
    let faults = Arc::clone(&proxy);
    let row = run(
        "TCP proxy: drop, stall 2 s, half-close, drop",
        s,
        move |tally: Arc<Tally>| async move {
            for fault in [Fault::Drop, Fault::Stall, Fault::HalfClose, Fault::Drop] {
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                let at = Instant::now();
                faults.inject(fault);
                if fault == Fault::Stall {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    faults.heal();
                }
                tally.fault_injected(at).await;
            }
        },
    )
    .await;
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(row.failed, 0, "{row:?}");
    assert!(
        proxy.accepted() > 4,
        "clients reconnected through the proxy"
    );
}
