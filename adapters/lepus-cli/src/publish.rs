//! `lepus publish TYPE --key KEY --json '{...}'`.

use lepus::core::retry::{Intervals, RetryMetadata, Strategy, MAX_INTERVALS};
use lepus::{Delay, Properties, Publication, QueueKind, Transport, CONTENT_TYPE_JSON};

use crate::cli::{Global, Output, PublishArgs, RetryStrategy};
use crate::failure::{Code, Failure};

pub async fn run(g: &Global, args: PublishArgs) -> Result<Code, Failure> {
    if args.message_type.is_empty() {
        return Err(Failure::usage("the task type must not be empty"));
    }
    let payload = crate::payload::read(args.json.as_deref())?;
    let retry = retry_metadata(&args)?;
    let body = envelope(&args.message_type, &payload, retry)?;
    let message_id = args
        .message_id
        .clone()
        .unwrap_or_else(lepus::new_message_id);
    let mut properties = Properties::new()
        .with_type(args.message_type.clone())
        .with_content_type(CONTENT_TYPE_JSON)
        .with_message_id(message_id.clone())
        .with_timestamp(crate::now_seconds());
    let delay = delay_of(&args)?;
    properties.priority = args.priority;
    let transport = crate::connect(g).await?;
    let publication = Publication::new(&g.exchange, &args.key, &body, &properties);
    let sent = match delay {
        Some(delay) => transport.publish_delayed(publication, delay).await,
        None => transport.publish(publication).await,
    };
    // Best effort: the publish was confirmed (or failed) already.
    let _ = transport.close().await;
    sent.map_err(|e| {
        let mut f = Failure::from(e);
        if f.code == Code::NotFound {
            f.message = format!(
                "exchange {:?} does not exist (a worker declares it; or pass --exchange): {}",
                g.exchange, f.message
            );
        }
        f
    })?;
    let delay_ms = delay.map(|d| d.as_ms());
    match g.output {
        Output::Text => println!(
            "published {} {message_id} to exchange {:?} with key {:?}{}",
            args.message_type,
            g.exchange,
            args.key,
            delay_ms.map_or(String::new(), |ms| format!(", routed in {ms} ms"))
        ),
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "message_id": message_id,
                "type": args.message_type,
                "exchange": g.exchange,
                "routing_key": args.key,
                "bytes": body.len(),
                "delay_ms": delay_ms,
                "priority": args.priority,
            })
        ),
    }
    Ok(Code::Ok)
}

/// The delay `--delay` or `--at` asks for, on the levels `--quorum-levels` chooses.
fn delay_of(args: &PublishArgs) -> Result<Option<Delay>, Failure> {
    let delay = match (args.delay, args.at) {
        (Some(d), _) => Delay::new(d),
        (None, Some(at)) => Delay::until(at, std::time::SystemTime::now()),
        (None, None) => return Ok(None),
    }
    .map_err(|e| Failure::usage(e.to_string()))?;
    let levels = if args.quorum_levels {
        QueueKind::Quorum
    } else {
        QueueKind::Classic
    };
    Ok(Some(delay.on(levels)))
}

fn retry_metadata(args: &PublishArgs) -> Result<RetryMetadata, Failure> {
    let strategy = match args.retry_strategy {
        None => Strategy::Unspecified,
        Some(RetryStrategy::Ignore) => Strategy::Ignore,
        Some(RetryStrategy::Repeat) => Strategy::Repeat,
        Some(RetryStrategy::Backoff) => Strategy::Backoff,
    };
    let intervals = match &args.retry_interval {
        None => None,
        Some(list) => Some(parse_intervals(list)?),
    };
    Ok(RetryMetadata {
        strategy,
        limit: args.retry_limit,
        count: 0,
        intervals,
        backoff: None,
    })
}

/// `15,30,0.5` (seconds) to milliseconds.
fn parse_intervals(list: &str) -> Result<Intervals, Failure> {
    let mut out = Intervals::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let seconds: f64 = part
            .parse()
            .map_err(|_| Failure::usage(format!("--retry-interval: {part:?} is not seconds")))?;
        let ms = seconds * 1000.0;
        if !(0.0..=f64::from(u32::MAX)).contains(&ms) {
            return Err(Failure::usage(format!(
                "--retry-interval: {part} s is out of range (0 to 49 days)"
            )));
        }
        out.push(ms.round() as u32).map_err(|_| {
            Failure::usage(format!("--retry-interval: at most {MAX_INTERVALS} delays"))
        })?;
    }
    Ok(out)
}

/// The JSON envelope around `payload` (copied verbatim), as the library's publisher writes it.
fn envelope(message_type: &str, payload: &[u8], retry: RetryMetadata) -> Result<Vec<u8>, Failure> {
    lepus::encode_raw_envelope(payload, message_type, retry, None, None)
        .map_err(|e| Failure::usage(format!("encode the envelope: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_seconds() {
        let got = parse_intervals("15, 30,0.5").ok().map(|v| v.to_vec());
        assert_eq!(got, Some(vec![15_000, 30_000, 500]));
        assert!(parse_intervals("x").is_err());
        assert!(parse_intervals("-1").is_err());
        assert!(parse_intervals(&["1"; 17].join(",")).is_err());
    }

    #[test]
    fn envelope_keeps_payload_bytes() {
        let body = envelope("A", br#"{"b": 1}"#, RetryMetadata::default()).ok();
        assert_eq!(
            body.as_deref(),
            Some(&br#"{"payload":{"b": 1},"metadata":{"className":"A","retryCount":0}}"#[..])
        );
    }
}
