//! Scenario 7, RPC callers during a broker restart (`rabbitmqctl stop_app` / `start_app`):
//! two RPC servers, four clients (two on direct reply-to, two on exclusive reply queues)
//! calling continuously. Every call must end by its deadline, with its own reply or an error
//! (calls in flight at the restart time out: their replies are lost with the connection);
//! none may hang, no reply may reach the wrong call, and after recovery every call succeeds
//! on every client, served by both servers. In a process of its own (a test binary), apart
//! from the other broker-wide scenarios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus_tests::chaos::{broker, rabbitmqctl, BrokerGuard};
use lepus_tests::rpc_chaos::{rpc_setup, run_rpc, RpcTally};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_callers_during_broker_restart_never_hang() {
    let Some(config) = broker("RPC stop_app/start_app", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let setup = rpc_setup("rpc-restart", &config);
    let (clients, servers) = (setup.clients as u64, setup.servers);
    let row = run_rpc(
        "RPC callers, `rabbitmqctl stop_app` / `start_app`",
        setup,
        |tally: Arc<RpcTally>| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            rabbitmqctl(&["stop_app"]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl(&["start_app"]).await;
            tally.fault_over(Instant::now()).await;
        },
    )
    .await;
    assert_eq!(row.hung, 0, "every call ended by its deadline: {row:?}");
    assert_eq!(row.mismatched, 0, "every reply was its own call's: {row:?}");
    assert!(row.calls >= 3_000, "{row:?}");
    assert_eq!(
        row.calls,
        row.replies + row.timeouts + row.errors + row.mismatched + row.hung,
        "every call counted once: {row:?}"
    );
    let (ok, checked) = row.after_recovery;
    assert!(
        checked > 0 && ok == checked,
        "after recovery every call succeeds: {row:?}"
    );
    assert!(
        row.reopenings >= clients,
        "every client reopened its reply path: {row:?}"
    );
    assert!(row.reconnections >= clients + servers as u64, "{row:?}");
    assert_eq!(row.served_after_recovery.len(), servers);
    assert!(
        row.served_after_recovery.iter().all(|&n| n > 0),
        "both servers consume again: {row:?}"
    );
    assert!(row.recovery < Duration::from_secs(60), "{row:?}");
}
