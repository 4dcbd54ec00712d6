//! The dashboard's four services: one [`RpcServer`] each, on its own queue, answering after
//! its latency.

use std::sync::Arc;

use lepus::rpc::{RpcServer, RpcServerConfig, RpcServerHandle};
use lepus::topology::dead_letter_queue_name;
use lepus::{Message, Transport};

use super::requests::{
    active_ads, inbox, observed_ads, recommendations, GetActiveAds, GetMessages, GetObservedAds,
    GetRecommendations,
};
use super::{DashboardConfig, DashboardError};

/// The four services: display name and queue name suffix, in page order.
pub const SERVICES: [(&str, &str); 4] = [
    ("active ads", "active-ads"),
    ("observed ads", "observed-ads"),
    ("recommendations", "recommendations"),
    ("messages", "messages"),
];

/// A server for one service: its queue `<exchange>.<suffix>`, bound with `routing_key`.
fn service<T>(
    broker: &Arc<T>,
    config: &DashboardConfig,
    suffix: &str,
    routing_key: &str,
) -> RpcServer<T>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let queue = format!("{}.{suffix}", config.exchange);
    RpcServer::new(
        Arc::clone(broker),
        RpcServerConfig::new(queue, config.exchange.clone()).bind(routing_key),
    )
}

/// Starts the four services, in [`SERVICES`] order; on an error stops those already started.
pub(super) async fn start_services<T>(
    broker: &Arc<T>,
    config: &DashboardConfig,
) -> Result<Vec<RpcServerHandle>, DashboardError>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let t = config.timings;
    let servers = [
        service(broker, config, SERVICES[0].1, GetActiveAds::ROUTING_KEY).with(
            move |r: GetActiveAds, _| async move {
                tokio::time::sleep(t.active_ads).await;
                Ok(active_ads(r.user_id))
            },
        ),
        service(broker, config, SERVICES[1].1, GetObservedAds::ROUTING_KEY).with(
            move |r: GetObservedAds, _| async move {
                tokio::time::sleep(t.observed_ads).await;
                Ok(observed_ads(r.user_id))
            },
        ),
        service(
            broker,
            config,
            SERVICES[2].1,
            GetRecommendations::ROUTING_KEY,
        )
        .with(move |r: GetRecommendations, _| async move {
            tokio::time::sleep(t.recommendations).await;
            Ok(recommendations(r.user_id))
        }),
        service(broker, config, SERVICES[3].1, GetMessages::ROUTING_KEY).with(
            move |r: GetMessages, _| async move {
                tokio::time::sleep(t.messages).await;
                Ok(inbox(r.user_id))
            },
        ),
    ];
    let mut handles = Vec::with_capacity(servers.len());
    for server in servers {
        match server.start().await {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                for handle in handles {
                    handle.shutdown().await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(handles)
}

/// Stops the four services, deletes their queues and the exchange; returns how many
/// requests they handled together.
pub(super) async fn stop_services<T: Transport>(
    broker: &Arc<T>,
    config: &DashboardConfig,
    servers: Vec<RpcServerHandle>,
) -> Result<u64, DashboardError> {
    let mut served = 0;
    for server in servers {
        served += server.shutdown().await.requests;
    }
    for (_, suffix) in SERVICES {
        let queue = format!("{}.{suffix}", config.exchange);
        broker
            .delete_queue(&dead_letter_queue_name(&queue)?)
            .await?;
        broker.delete_queue(&queue).await?;
    }
    broker.delete_exchange(&config.exchange).await?;
    Ok(served)
}
