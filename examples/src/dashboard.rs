//! The talk's dashboard (slides 41-43): a user's page needs four answers from four services
//! (active ads, observed ads, recommendations, messages), each with its own latency. Asked one
//! after the other, the page waits for the sum of the four; sent at once as RPC requests and
//! gathered, it waits for the slowest one only.
//!
//! [`run`] starts the four services as [`lepus::RpcServer`]s (each sleeps its latency, then
//! answers), builds the page three ways and returns a [`Report`]:
//! - one by one with [`RpcClient::call`] (the page before: the sum of the four);
//! - all at once with [`RpcClient::gather`] (four request types under one deadline);
//! - the talk's "send, do own work, then collect": [`RpcClient::start`] the four requests,
//!   render the layout meanwhile, then await the four [`lepus::rpc::PendingReply`]s.
//!
//! It shuts the servers down and deletes what it declared before returning.

use core::fmt;
use core::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::{RpcClient, RpcError};
use lepus::ReplyTransport;

mod requests;
mod services;

pub use requests::{
    active_ads, inbox, observed_ads, recommendations, ActiveAds, GetActiveAds, GetMessages,
    GetObservedAds, GetRecommendations, Inbox, ObservedAds, Recommendations,
};
pub use services::SERVICES;
use services::{start_services, stop_services};

/// How long the page waits for any reply.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each service takes to answer, and the page's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The active ads service.
    pub active_ads: Duration,
    /// The observed ads service.
    pub observed_ads: Duration,
    /// The recommendation engine.
    pub recommendations: Duration,
    /// The messaging service.
    pub messages: Duration,
    /// What the page does itself while the services work (rendering the layout).
    pub own_work: Duration,
}

impl Timings {
    /// 40, 80, 120 and 60 ms; 50 ms of the page's own work.
    pub const TALK: Timings = Timings {
        active_ads: Duration::from_millis(40),
        observed_ads: Duration::from_millis(80),
        recommendations: Duration::from_millis(120),
        messages: Duration::from_millis(60),
        own_work: Duration::from_millis(50),
    };

    /// Every duration multiplied by `factor`.
    pub fn scaled(self, factor: u32) -> Timings {
        Timings {
            active_ads: self.active_ads.saturating_mul(factor),
            observed_ads: self.observed_ads.saturating_mul(factor),
            recommendations: self.recommendations.saturating_mul(factor),
            messages: self.messages.saturating_mul(factor),
            own_work: self.own_work.saturating_mul(factor),
        }
    }

    /// The four service latencies, in [`SERVICES`] order.
    pub fn latencies(&self) -> [Duration; 4] {
        [
            self.active_ads,
            self.observed_ads,
            self.recommendations,
            self.messages,
        ]
    }

    /// The slowest service's latency: what a gathered page should take.
    pub fn slowest(&self) -> Duration {
        self.latencies().into_iter().max().unwrap_or_default()
    }

    /// The sum of the four latencies: what the page takes one call after the other.
    pub fn sum(&self) -> Duration {
        self.latencies().into_iter().sum()
    }
}

/// Where the dashboard runs and how slow its services are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// The topic exchange requests go to; the services' queues are `<exchange>.<service>`.
    pub exchange: String,
    /// The user whose page is built.
    pub user_id: u64,
    /// Service latencies and the page's own work.
    pub timings: Timings,
}

impl Default for DashboardConfig {
    /// Exchange `site`, user 7, [`Timings::TALK`].
    fn default() -> Self {
        DashboardConfig {
            exchange: "site".into(),
            user_id: 7,
            timings: Timings::TALK,
        }
    }
}

/// The four answers the page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// From the ads service.
    pub active_ads: ActiveAds,
    /// From the ads service.
    pub observed_ads: ObservedAds,
    /// From the recommendation engine.
    pub recommendations: Recommendations,
    /// From the messaging service.
    pub inbox: Inbox,
}

/// One way of building the page: what it showed and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The four answers.
    pub page: Page,
    /// From the first request sent to the last reply read.
    pub total: Duration,
}

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The latencies the services were given.
    pub timings: Timings,
    /// Each service's own time (request to reply, called alone), in [`SERVICES`] order.
    pub service_times: [Duration; 4],
    /// The page built one call after the other.
    pub one_by_one: View,
    /// The page built with one `gather` of the four requests.
    pub gathered: View,
    /// The page built by starting the four requests, rendering the layout, then collecting.
    pub collected: View,
    /// Requests the four servers handled together.
    pub served: u64,
}

impl Report {
    /// The sum of the services' own times.
    pub fn sum(&self) -> Duration {
        self.service_times.iter().sum()
    }

    /// How many times faster the gathered page was than the sum of the services' times.
    pub fn speedup(&self) -> f64 {
        let total = self.gathered.total.as_secs_f64();
        if total > 0.0 {
            self.sum().as_secs_f64() / total
        } else {
            0.0
        }
    }
}

/// Why the dashboard could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum DashboardError {
    /// Declaring, consuming or deleting on the broker failed.
    Broker(lepus::Error),
    /// A service gave no answer (timeout, remote error, undecodable reply, lost channel).
    Call {
        /// Which service.
        service: &'static str,
        /// Why.
        error: RpcError,
    },
}

impl fmt::Display for DashboardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DashboardError::Broker(e) => write!(f, "broker: {e}"),
            DashboardError::Call { service, error } => {
                write!(f, "the {service} service gave no answer: {error}")
            }
        }
    }
}

impl std::error::Error for DashboardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DashboardError::Broker(e) => Some(e),
            DashboardError::Call { error, .. } => Some(error),
        }
    }
}

impl From<lepus::Error> for DashboardError {
    fn from(e: lepus::Error) -> Self {
        DashboardError::Broker(e)
    }
}

/// The reply of the service at `index` in [`SERVICES`], or why there is none.
fn answer<R>(index: usize, outcome: Result<R, RpcError>) -> Result<R, DashboardError> {
    outcome.map_err(|error| DashboardError::Call {
        service: SERVICES.get(index).map_or("unknown", |s| s.0),
        error,
    })
}

/// Runs `request` and returns its outcome with its own time.
async fn timed<R, F: Future<Output = R>>(request: F) -> (R, Duration) {
    let started = Instant::now();
    let outcome = request.await;
    (outcome, started.elapsed())
}

/// The page before: each call waits for the previous one.
async fn one_by_one<T: ReplyTransport + 'static>(
    client: &RpcClient<T>,
    user_id: u64,
) -> Result<(View, [Duration; 4]), DashboardError> {
    let started = Instant::now();
    let (a, ta) = timed(client.call(&GetActiveAds { user_id }, CALL_TIMEOUT)).await;
    let (o, to) = timed(client.call(&GetObservedAds { user_id }, CALL_TIMEOUT)).await;
    let (r, tr) = timed(client.call(&GetRecommendations { user_id }, CALL_TIMEOUT)).await;
    let (m, tm) = timed(client.call(&GetMessages { user_id }, CALL_TIMEOUT)).await;
    let total = started.elapsed();
    let page = Page {
        active_ads: answer(0, a)?,
        observed_ads: answer(1, o)?,
        recommendations: answer(2, r)?,
        inbox: answer(3, m)?,
    };
    Ok((View { page, total }, [ta, to, tr, tm]))
}

/// The four requests at once, one deadline, each reply typed.
async fn gathered<T: ReplyTransport + 'static>(
    client: &RpcClient<T>,
    user_id: u64,
) -> Result<View, DashboardError> {
    let started = Instant::now();
    let (a, o, r, m) = client
        .gather(
            (
                &GetActiveAds { user_id },
                &GetObservedAds { user_id },
                &GetRecommendations { user_id },
                &GetMessages { user_id },
            ),
            CALL_TIMEOUT,
        )
        .await;
    let total = started.elapsed();
    let page = Page {
        active_ads: answer(0, a)?,
        observed_ads: answer(1, o)?,
        recommendations: answer(2, r)?,
        inbox: answer(3, m)?,
    };
    Ok(View { page, total })
}

/// Slide 43: send the four requests, do the page's own work, then collect the replies.
async fn collected<T: ReplyTransport + 'static>(
    client: &RpcClient<T>,
    user_id: u64,
    own_work: Duration,
) -> Result<View, DashboardError> {
    let started = Instant::now();
    let a = answer(
        0,
        client.start(&GetActiveAds { user_id }, CALL_TIMEOUT).await,
    )?;
    let o = answer(
        1,
        client
            .start(&GetObservedAds { user_id }, CALL_TIMEOUT)
            .await,
    )?;
    let r = answer(
        2,
        client
            .start(&GetRecommendations { user_id }, CALL_TIMEOUT)
            .await,
    )?;
    let m = answer(
        3,
        client.start(&GetMessages { user_id }, CALL_TIMEOUT).await,
    )?;
    // The page's own work (rendering the layout) while the services answer.
    tokio::time::sleep(own_work).await;
    let page = Page {
        active_ads: answer(0, a.await)?,
        observed_ads: answer(1, o.await)?,
        recommendations: answer(2, r.await)?,
        inbox: answer(3, m.await)?,
    };
    Ok(View {
        page,
        total: started.elapsed(),
    })
}

/// Starts the services on `broker`, builds the page three ways, stops the services, deletes
/// their queues and the exchange, and reports.
///
/// # Errors
/// [`DashboardError::Broker`] when declaring or deleting failed, [`DashboardError::Call`]
/// when a service gave no answer (the services are stopped and deleted either way).
pub async fn run<T>(broker: Arc<T>, config: &DashboardConfig) -> Result<Report, DashboardError>
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let servers = start_services(&broker, config).await?;
    let pages = async {
        let client = RpcClient::new(Arc::clone(&broker), config.exchange.clone()).await?;
        let user = config.user_id;
        let (one_by_one, service_times) = one_by_one(&client, user).await?;
        let gathered = gathered(&client, user).await?;
        let collected = collected(&client, user, config.timings.own_work).await?;
        Ok::<_, DashboardError>((one_by_one, service_times, gathered, collected))
    }
    .await;

    let served = stop_services(&broker, config, servers).await?;

    let (one_by_one, service_times, gathered, collected) = pages?;
    Ok(Report {
        timings: config.timings,
        service_times,
        one_by_one,
        gathered,
        collected,
        served,
    })
}
