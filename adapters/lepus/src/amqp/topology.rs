//! Idempotent declarations on RabbitMQ (see [`crate::topology`] for the layout).
//!
//! Each function runs on the channel it is given. A declaration that differs from what
//! exists (e.g. a queue redeclared with other arguments) is refused by the broker with
//! 406 `PRECONDITION_FAILED`, which closes that channel; callers use a channel of its own.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::amqp::properties::{short_name, table};
use crate::delay::{self, DELIVERY_EXCHANGE, UNROUTED};
use crate::error::{Error, NameKind, Result};
use crate::names::{check_exchange_name, check_queue_name};
use crate::topology::{dead_letter_queue_name, QueueKind, QueueSpec};

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
    declare_exchange_of(
        channel,
        exchange,
        ExchangeKind::Topic,
        FieldTable::default(),
    )
    .await
}

async fn declare_exchange_of(
    channel: &Channel,
    exchange: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> Result<()> {
    channel
        .exchange_declare(
            short_name(NameKind::Exchange, exchange)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| Error::from_lapin(e).context(format!("declare exchange {exchange:?}")))
}

/// Declares the delay levels of `kind` ([`crate::delay`]): the delivery exchange with its
/// alternate exchange and queue for unrouted messages, then each level's exchange, queue and
/// bindings, lowest first. Quorum levels dead-letter at least once.
///
/// The queue for unrouted messages is declared last, by [`declare_unrouted_queue`]: on a
/// cluster it is a classic queue on one node, and while that node is down its declaration
/// fails (and closes the channel); that must not keep a client from connecting.
pub async fn declare_delay_levels(channel: &Channel, kind: QueueKind) -> Result<()> {
    declare_levels(channel, kind).await?;
    declare_unrouted_queue(channel).await
}

/// Declares (and binds) the queue where delayed messages with no destination wait,
/// `lepus.delay.unrouted`: a classic queue, shared by both sets of levels. When its node is
/// down (a cluster node lost: the broker answers 404 `NOT_FOUND` "home node ... is down"), a
/// warning and `Ok`: the queue exists, and only its node's return brings it back. The broker
/// closes the channel with that answer, so this is the last call on `channel`.
pub async fn declare_unrouted_queue(channel: &Channel) -> Result<()> {
    match declare(channel, UNROUTED, FieldTable::default()).await {
        Ok(()) => bind(channel, UNROUTED, UNROUTED, "").await,
        Err(e) if crate::amqp::is_not_found(&e) => {
            tracing::warn!(
                error = %e,
                "the queue for unrouted delayed messages is on a node that is down; going on \
                 without declaring it"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The delay levels of `kind` and their exchanges, without the queue for unrouted messages.
async fn declare_levels(channel: &Channel, kind: QueueKind) -> Result<()> {
    declare_exchange_of(
        channel,
        UNROUTED,
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    arg_str(&mut args, "alternate-exchange", UNROUTED);
    declare_exchange_of(channel, DELIVERY_EXCHANGE, ExchangeKind::Topic, args).await?;
    for level in delay::levels(kind) {
        declare_exchange_of(
            channel,
            &level.name,
            ExchangeKind::Headers,
            FieldTable::default(),
        )
        .await?;
        let mut args = FieldTable::default();
        queue_type(&mut args, kind);
        // At most 2^35 ms: fits an i64.
        arg_int(&mut args, "x-message-ttl", level.ttl_ms as i64);
        arg_str(&mut args, "x-dead-letter-exchange", &level.below);
        if kind == QueueKind::Quorum {
            arg_str(&mut args, "x-dead-letter-strategy", "at-least-once");
            arg_str(&mut args, "x-overflow", "reject-publish");
        }
        declare(channel, &level.name, args).await?;
        let wait = table(&level.wait_binding)?;
        bind_with(channel, &level.name, &level.name, "", wait).await?;
        let pass = table(&level.pass_binding)?;
        channel
            .exchange_bind(
                short_name(NameKind::Exchange, &level.below)?,
                short_name(NameKind::Exchange, &level.name)?,
                "".into(),
                ExchangeBindOptions::default(),
                pass,
            )
            .await
            .map_err(|e| {
                Error::from_lapin(e).context(format!(
                    "bind exchange {:?} to delay level {:?}",
                    level.below, level.name
                ))
            })?;
    }
    Ok(())
}

/// Declares the queue of `spec` (dead-lettering rejected messages to `<queue>.dead`), its
/// dead-letter queue, its bindings and its bindings to the delay levels' delivery exchange;
/// with `levels`, the delay levels of its kind first (and the queue for unrouted delayed
/// messages last: after it the channel may be closed, see [`declare_unrouted_queue`]).
pub async fn declare_queue(channel: &Channel, spec: &QueueSpec, levels: bool) -> Result<()> {
    spec.validate()?;
    let deliveries = delay::delivery_patterns(spec)?;
    if levels {
        declare_levels(channel, spec.kind).await?;
    }
    let queue = spec.name.as_str();
    let dead = dead_letter_queue_name(queue)?;
    // The queue first: on a kind mismatch the error names the queue the user declared.
    declare(channel, queue, queue_args(spec, &dead)).await?;
    let mut dead_args = FieldTable::default();
    queue_type(&mut dead_args, spec.kind);
    declare(channel, &dead, dead_args).await?;

    for pattern in &spec.bindings {
        bind(channel, queue, &spec.exchange, pattern).await?;
    }
    for pattern in &deliveries {
        bind(channel, queue, DELIVERY_EXCHANGE, pattern).await?;
    }
    if levels {
        // Last: it may close the channel (see `declare_unrouted_queue`).
        declare_unrouted_queue(channel).await?;
    }
    Ok(())
}

/// The arguments of the queue of `spec`, dead-lettering to `dead`.
fn queue_args(spec: &QueueSpec, dead: &str) -> FieldTable {
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
    if let Some(max) = spec.max_priority {
        // `validate` refused it on quorum queues and 0.
        arg_int(&mut args, "x-max-priority", i64::from(max));
    }
    arg_str(&mut args, "x-dead-letter-exchange", "");
    arg_str(&mut args, "x-dead-letter-routing-key", dead);
    if spec.kind == QueueKind::Quorum {
        // A poison message the broker dead-letters at the delivery limit reaches `.dead` even
        // through a leader change (RabbitMQ needs `reject-publish` for at-least-once).
        arg_str(&mut args, "x-dead-letter-strategy", "at-least-once");
        arg_str(&mut args, "x-overflow", "reject-publish");
    }
    args
}

/// Declares only the queue of `spec`, with the arguments Lepus gives it: a no-op when it
/// exists so. Tells the kind of an existing queue after a refused declaration.
pub async fn redeclare_queue(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    let dead = dead_letter_queue_name(&spec.name)?;
    declare(channel, &spec.name, queue_args(spec, &dead)).await
}

async fn declare(channel: &Channel, queue: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(short_name(NameKind::Queue, queue)?, durable_queue(), args)
        .await
        .map(drop)
        .map_err(|e| {
            // RabbitMQ: "inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': ...".
            if e.to_string().contains("inequivalent arg") {
                return Error::from_lapin(e).context(format!(
                    "queue {queue:?} exists on the broker with other arguments than Lepus \
                     declares for it (a queue declared by hand or by an earlier version, \
                     e.g. a quorum queue without at-least-once dead-lettering); arguments \
                     cannot change: delete it once empty and let Lepus declare it again"
                ));
            }
            Error::from_lapin(e).context(format!("declare queue {queue:?}"))
        })
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
    bind_with(channel, queue, exchange, pattern, FieldTable::default()).await
}

/// Binds `queue` to `exchange` with `pattern` and binding arguments (a headers exchange's).
async fn bind_with(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    pattern: &str,
    args: FieldTable,
) -> Result<()> {
    channel
        .queue_bind(
            short_name(NameKind::Queue, queue)?,
            short_name(NameKind::Exchange, exchange)?,
            short_name(NameKind::BindingPattern, pattern)?,
            QueueBindOptions::default(),
            args,
        )
        .await
        .map_err(|e| {
            Error::from_lapin(e).context(format!(
                "bind queue {queue:?} to exchange {exchange:?} with {pattern:?}"
            ))
        })
}
