//! For tests that need a real RabbitMQ (ours and yours): connect to `AMQP_ADDR`, and when it
//! is unset or the broker is unreachable either fail (in CI: `CI=true` or
//! `LEPUS_REQUIRE_BROKER=1`) or skip with a loud notice (on a laptop without a broker). As
//! everywhere in Lepus, an unset `AMQP_ADDR` chooses no broker: run
//! `AMQP_ADDR=amqp://127.0.0.1:5672/%2f cargo test` ([`crate::LOCAL_ADDR`]) to test against
//! a local RabbitMQ (`.ci/run` exports it). Handler tests that need no broker use [`crate::InProcessBroker`] instead.
//!
//! Only with the `testing` feature (enable it in your `[dev-dependencies]`); [`connect`] and
//! [`connect_with`] also need `amqp`.
//!
//! ```no_run
//! # async fn t() {
//! let Some(transport) = lepus::testing::connect("my_handler_on_rabbitmq").await else {
//!     return; // skipped, and said so on stderr
//! };
//! # drop(transport);
//! # }
//! ```

use std::io::Write;

#[cfg(feature = "amqp")]
use crate::amqp::{AmqpConfig, AmqpTransport};

/// True when an unreachable broker must fail the test run (`CI=true` or
/// `LEPUS_REQUIRE_BROKER=1`) instead of skipping.
pub fn broker_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("LEPUS_REQUIRE_BROKER").is_ok_and(|v| v == "1")
}

/// Connects with `config`; when the broker is unreachable, panics if it is required (see
/// [`broker_required`]) and otherwise prints a loud skip notice naming `test` and returns
/// `None`.
///
/// # Panics
/// When the broker is unreachable and required: that is how a test fails.
#[cfg(feature = "amqp")]
pub async fn connect_with(test: &str, config: AmqpConfig) -> Option<AmqpTransport> {
    match AmqpTransport::connect(config).await {
        Ok(transport) => Some(transport),
        Err(e) if broker_required() => {
            panic!("{test}: RabbitMQ is required (CI=true or LEPUS_REQUIRE_BROKER=1): {e}")
        }
        Err(e) => {
            skipped(test, &format!("RabbitMQ unreachable: {e}"));
            None
        }
    }
}

/// Connects to `AMQP_ADDR` with default settings, or skips (see [`connect_with`]).
///
/// # Panics
/// When the broker is unreachable and required.
#[cfg(feature = "amqp")]
pub async fn connect(test: &str) -> Option<AmqpTransport> {
    connect_with(test, config(test)?).await
}

/// The configuration for `AMQP_ADDR` ([`AmqpConfig::from_env`]); when it is unset, panics if
/// the broker is required and otherwise prints the skip notice and returns `None`.
///
/// # Panics
/// When `AMQP_ADDR` is unset and the broker is required.
#[cfg(feature = "amqp")]
pub fn config(test: &str) -> Option<AmqpConfig> {
    match AmqpConfig::from_env() {
        Ok(config) => Some(config),
        Err(e) if broker_required() => {
            panic!("{test}: RabbitMQ is required (CI=true or LEPUS_REQUIRE_BROKER=1): {e}")
        }
        Err(e) => {
            skipped(test, &e.to_string());
            None
        }
    }
}

/// Prints the loud skip notice of `test` (straight to the process's stderr: the test harness
/// captures `eprintln!`).
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n##########\n## SKIPPED {test}: {why}\n\
         ## start RabbitMQ or set AMQP_ADDR; set LEPUS_REQUIRE_BROKER=1 to make this fail\n##########"
    );
}
