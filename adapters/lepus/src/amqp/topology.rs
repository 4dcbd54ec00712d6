//! Idempotent declarations on RabbitMQ (see [`crate::topology`] for the layout).
//!
//! Each function runs on the channel it is given. A declaration that differs from what
//! exists (e.g. a queue redeclared with other arguments) is refused by the broker with
//! 406 `PRECONDITION_FAILED`, which closes that channel; callers use a channel of its own.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::amqp::properties::short_name;
use crate::error::{Error, NameKind, Result};
use crate::names::{check_exchange_name, check_queue_name};
use crate::topology::{
    dead_letter_queue_name, wait_queue_expiry_ms, wait_queue_name, QueueKind, QueueSpec,
};

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn arg_str(args: &mut FieldTable, key: &'static str, value: &str) {
    args.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
}

fn arg_int(args: &mut FieldTable, key: &'static str, value: i64) {
    args.insert(key.into(), AMQPValue::LongLongInt(value));
}

fn queue_type(args: &mut FieldTable, kind: QueueKind) {
    // Classic is the default: leave the argument out so queues declared without it match.
    if kind == QueueKind::Quorum {
        arg_str(args, "x-queue-type", "quorum");
    }
}

/// Declares a durable topic exchange.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    check_exchange_name(exchange)?;
    channel
        .exchange_declare(
            short_name(NameKind::Exchange, exchange)?,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("declare exchange {exchange:?}")))
}

/// Declares the queue of `spec` (dead-lettering rejected messages to `<queue>.dead`), its
/// dead-letter queue, its bindings and the wait queues of its retry delays.
pub async fn declare_queue(channel: &Channel, spec: &QueueSpec, expire_wait: bool) -> Result<()> {
    spec.validate()?;
    let queue = spec.name.as_str();
    let dead = dead_letter_queue_name(queue)?;

    let mut dead_args = FieldTable::default();
    queue_type(&mut dead_args, spec.kind);
    declare(channel, &dead, dead_args).await?;

    let mut args = FieldTable::default();
    queue_type(&mut args, spec.kind);
    if let (QueueKind::Quorum, Some(limit)) = (spec.kind, spec.delivery_limit) {
        // RabbitMQ's x-delivery-limit counts redeliveries: deliveries in all minus one.
        arg_int(
            &mut args,
            "x-delivery-limit",
            i64::from(limit.saturating_sub(1)),
        );
    }
    arg_str(&mut args, "x-dead-letter-exchange", "");
    arg_str(&mut args, "x-dead-letter-routing-key", &dead);
    declare(channel, queue, args).await?;

    for pattern in &spec.bindings {
        bind(channel, queue, &spec.exchange, pattern).await?;
    }
    for &delay in &spec.retry_delays_ms {
        declare_wait_queue(channel, queue, delay, expire_wait).await?;
    }
    Ok(())
}

/// Declares the wait queue of `queue` for `delay_ms` and returns its name. Messages expire
/// after the delay into the default exchange with routing key `queue`: back to `queue` only.
pub async fn declare_wait_queue(
    channel: &Channel,
    queue: &str,
    delay_ms: u32,
    expire: bool,
) -> Result<String> {
    check_queue_name(queue)?;
    let name = wait_queue_name(queue, delay_ms)?;
    let mut args = FieldTable::default();
    arg_int(&mut args, "x-message-ttl", i64::from(delay_ms));
    arg_str(&mut args, "x-dead-letter-exchange", "");
    arg_str(&mut args, "x-dead-letter-routing-key", queue);
    if expire {
        // `wait_queue_expiry_ms` is at most 2 * u32::MAX + 60_000: fits an i64.
        arg_int(
            &mut args,
            "x-expires",
            wait_queue_expiry_ms(delay_ms) as i64,
        );
    }
    declare(channel, &name, args).await?;
    Ok(name)
}

async fn declare(channel: &Channel, queue: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(short_name(NameKind::Queue, queue)?, durable_queue(), args)
        .await
        .map(drop)
        .map_err(|e| Error::from_lapin(e).context(format!("declare queue {queue:?}")))
}

/// Deletes a queue; a missing queue is not an error.
pub async fn delete_queue(channel: &Channel, queue: &str) -> Result<()> {
    check_queue_name(queue)?;
    channel
        .queue_delete(
            short_name(NameKind::Queue, queue)?,
            QueueDeleteOptions::default(),
        )
        .await
        .map(drop)
        .map_err(|e| Error::from_lapin(e).context(format!("delete queue {queue:?}")))
}

/// Deletes an exchange; a missing exchange is not an error.
pub async fn delete_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    check_exchange_name(exchange)?;
    channel
        .exchange_delete(
            short_name(NameKind::Exchange, exchange)?,
            ExchangeDeleteOptions::default(),
        )
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("delete exchange {exchange:?}")))
}

/// Binds `queue` to `exchange` with a topic `pattern` (checked before).
pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    pattern: &str,
) -> Result<()> {
    channel
        .queue_bind(
            short_name(NameKind::Queue, queue)?,
            short_name(NameKind::Exchange, exchange)?,
            short_name(NameKind::BindingPattern, pattern)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            Error::from_lapin(e).context(format!(
                "bind queue {queue:?} to exchange {exchange:?} with {pattern:?}"
            ))
        })
}
