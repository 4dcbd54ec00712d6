//! The RabbitMQ management HTTP API (the `rabbitmq_management` plugin): queues with their
//! type, ready and unacknowledged counts, consumers and rates; exchanges; bindings; the
//! firehose tracer's switch.
//!
//! Why this API: AMQP cannot list queues or bindings, and `rabbitmqctl` must run beside the
//! broker; a managed RabbitMQ offers only this API. Reached with `ureq` (blocking, plain
//! HTTP unless built with the `management-tls` feature): a handful of GETs per command does not
//! need an async client, and ureq without default features adds five small crates, no TLS
//! stack and no second runtime. Calls run on tokio's blocking pool.
//!
//! Where: `--management-url` / `LEPUS_MANAGEMENT_URL` (`http://user:pass@host:15672`, a path
//! prefix allowed), else derived from the AMQP address: its host, port 15672 (15671 over
//! HTTPS for `amqps://`), its user and password, else `guest`/`guest`.
//!
//! Figures are the broker's statistics, refreshed every few seconds
//! (`collect_statistics_interval`, 5 s by default): a count may lag that much behind.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::failure::{Code, Failure};
use crate::snapshot::{percent_decode, Binding, QueueRow, Rates};

/// How long connecting may take before the API counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest response read (a broker with very many queues answers megabytes).
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

/// Why a call to the management API failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManagementError {
    /// Nothing answered (refused, unknown host, timed out): the plugin is probably not
    /// enabled, or the address is wrong.
    Unreachable(String),
    /// The API refused the credentials (401) or the user's tags (403).
    Unauthorized(u16),
    /// The virtual host (or another named object) does not exist (404).
    NotFound(String),
    /// Any other HTTP status.
    Status(u16, String),
    /// The answer was not the JSON expected.
    BadResponse(String),
    /// The URL cannot be used (bad scheme, HTTPS without the `management-tls` feature).
    BadUrl(String),
}

impl fmt::Display for ManagementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagementError::Unreachable(why) => write!(f, "unreachable ({why})"),
            ManagementError::Unauthorized(status) => write!(
                f,
                "credentials refused (HTTP {status}; the user needs the monitoring or \
                 management tag)"
            ),
            ManagementError::NotFound(what) => write!(f, "not found: {what}"),
            ManagementError::Status(status, body) => write!(f, "HTTP {status}: {body}"),
            ManagementError::BadResponse(why) => write!(f, "unexpected answer: {why}"),
            ManagementError::BadUrl(why) => write!(f, "unusable URL: {why}"),
        }
    }
}

impl std::error::Error for ManagementError {}

impl From<ManagementError> for Failure {
    fn from(e: ManagementError) -> Self {
        let code = match e {
            ManagementError::NotFound(_) => Code::NotFound,
            ManagementError::BadUrl(_) => Code::Usage,
            _ => Code::SourceUnavailable,
        };
        Failure::new(code, format!("management API: {e}"))
    }
}

/// The management API of one broker.
#[derive(Clone)]
pub struct Management {
    /// `http://host:15672` plus any path prefix, without credentials or a trailing slash.
    base: String,
    user: String,
    password: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Management {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The parts of a URL the API needs: scheme, `host[:port]`, user, password, path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    scheme: String,
    host_port: String,
    user: Option<String>,
    password: Option<String>,
    path: String,
}

fn split_url(url: &str) -> Option<UrlParts> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(percent_decode(user)), Some(percent_decode(pass))),
            None => (Some(percent_decode(u)), None),
        },
        None => (None, None),
    };
    if host_port.is_empty() {
        return None;
    }
    Some(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host_port: host_port.to_owned(),
        user,
        password,
        path: path.to_owned(),
    })
}

/// The host of `host:port`, `[v6]:port` or `host`.
fn host_only(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .and_then(|i| host_port.get(..=i))
            .unwrap_or(host_port);
    }
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

/// Percent-encodes one path segment (a virtual host name: `/` is `%2F`).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Management {
    /// The API named by `url` (`--management-url`), else derived from the AMQP address.
    pub fn new(url: Option<&str>, amqp: Option<&str>) -> Result<Self, ManagementError> {
        let amqp_parts = amqp.and_then(split_url);
        let (base, user, password) = match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                let p = split_url(url).ok_or_else(|| {
                    ManagementError::BadUrl(format!("{url:?} is not http(s)://host[:port]"))
                })?;
                if p.scheme != "http" && p.scheme != "https" {
                    return Err(ManagementError::BadUrl(format!(
                        "{url:?}: the scheme must be http or https"
                    )));
                }
                let base = format!("{}://{}{}", p.scheme, p.host_port, p.path);
                // Credentials of the URL first, then those of the AMQP address.
                let user = p
                    .user
                    .or_else(|| amqp_parts.as_ref().and_then(|a| a.user.clone()));
                let password = p
                    .password
                    .or_else(|| amqp_parts.as_ref().and_then(|a| a.password.clone()));
                (base, user, password)
            }
            None => {
                let a = amqp_parts.ok_or_else(|| {
                    ManagementError::BadUrl(
                        "no management URL: pass --management-url or an AMQP address".into(),
                    )
                })?;
                let (scheme, port) = if a.scheme == "amqps" {
                    ("https", 15671)
                } else {
                    ("http", 15672)
                };
                let base = format!("{scheme}://{}:{port}", host_only(&a.host_port));
                (base, a.user, a.password)
            }
        };
        if base.starts_with("https:") && !cfg!(feature = "management-tls") {
            return Err(ManagementError::BadUrl(format!(
                "{base} is HTTPS: this lepus was built without TLS for the management API \
                 (build lepus-cli with --features management-tls, or pass an http:// \
                 --management-url)"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent("lepus-cli")
            .build();
        Ok(Management {
            base: base.trim_end_matches('/').to_owned(),
            user: user.unwrap_or_else(|| "guest".into()),
            password: password.unwrap_or_else(|| "guest".into()),
            agent: config.into(),
        })
    }

    /// `http://host:15672` (no credentials), for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorization(&self) -> String {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        format!("Basic {token}")
    }

    fn check(
        &self,
        path: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, ManagementError> {
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed => {
                ManagementError::Unreachable(format!("{}: {e}", self.base))
            }
            other => ManagementError::BadResponse(format!("{path}: {other}")),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| ManagementError::BadResponse(format!("{path}: {e}")))?;
        match status {
            200..=299 => Ok(body),
            401 | 403 => Err(ManagementError::Unauthorized(status)),
            404 => Err(ManagementError::NotFound(path.to_owned())),
            _ => Err(ManagementError::Status(
                status,
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            )),
        }
    }

    /// GET `/api/...`, parsed as JSON.
    fn get(&self, path: &str) -> Result<Value, ManagementError> {
        let url = format!("{}/api/{path}", self.base);
        let result = self
            .agent
            .get(&url)
            .header("Authorization", self.authorization())
            .call();
        let body = self.check(path, result)?;
        serde_json::from_slice(&body)
            .map_err(|e| ManagementError::BadResponse(format!("{path}: {e}")))
    }

    /// PUT `/api/...` with a JSON body.
    fn put(&self, path: &str, body: &Value) -> Result<(), ManagementError> {
        let url = format!("{}/api/{path}", self.base);
        let result = self
            .agent
            .put(&url)
            .header("Authorization", self.authorization())
            .header("Content-Type", "application/json")
            .send(body.to_string());
        self.check(path, result).map(|_| ())
    }

    /// DELETE `/api/...`; a 404 counts as done.
    fn delete(&self, path: &str) -> Result<(), ManagementError> {
        let url = format!("{}/api/{path}", self.base);
        let result = self
            .agent
            .delete(&url)
            .header("Authorization", self.authorization())
            .call();
        match self.check(path, result) {
            Ok(_) | Err(ManagementError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Declares (`present`) or deletes a non-durable fanout exchange `name`: a marker that
    /// every client of the broker can see.
    pub fn set_marker(
        &self,
        vhost: &str,
        name: &str,
        present: bool,
    ) -> Result<(), ManagementError> {
        let path = format!(
            "exchanges/{}/{}",
            encode_segment(vhost),
            encode_segment(name)
        );
        if present {
            self.put(
                &path,
                &serde_json::json!({"type": "fanout", "durable": false, "auto_delete": false}),
            )
        } else {
            self.delete(&path)
        }
    }

    fn list(&self, path: &str) -> Result<Vec<Value>, ManagementError> {
        match self.get(path)? {
            Value::Array(rows) => Ok(rows),
            _ => Err(ManagementError::BadResponse(format!("{path}: not a list"))),
        }
    }

    /// Exchanges of `vhost`: (name, type).
    pub fn exchanges(&self, vhost: &str) -> Result<Vec<(String, String)>, ManagementError> {
        let rows = self.list(&format!(
            "exchanges/{}?columns=name,type",
            encode_segment(vhost)
        ))?;
        Ok(rows.iter().map(parse_exchange).collect())
    }

    /// Queues of `vhost` with their counts and rates.
    pub fn queues(&self, vhost: &str) -> Result<Vec<QueueRow>, ManagementError> {
        let rows = self.list(&format!(
            "queues/{}?columns={QUEUE_COLUMNS}",
            encode_segment(vhost)
        ))?;
        Ok(rows.iter().map(parse_queue).collect())
    }

    /// Bindings of `vhost` to queues.
    pub fn bindings(&self, vhost: &str) -> Result<Vec<Binding>, ManagementError> {
        let rows = self.list(&format!("bindings/{}", encode_segment(vhost)))?;
        Ok(rows.iter().filter_map(parse_binding).collect())
    }

    /// Whether exchange `name` exists in `vhost`.
    pub fn exchange_exists(&self, vhost: &str, name: &str) -> Result<bool, ManagementError> {
        match self.get(&format!(
            "exchanges/{}/{}",
            encode_segment(vhost),
            encode_segment(name)
        )) {
            Ok(_) => Ok(true),
            Err(ManagementError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the firehose tracer is on for `vhost`.
    pub fn tracing(&self, vhost: &str) -> Result<bool, ManagementError> {
        let doc = self.get(&format!("vhosts/{}", encode_segment(vhost)))?;
        Ok(doc.get("tracing").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Turns the firehose tracer of `vhost` on or off, keeping its description and tags
    /// (a PUT sets them too).
    pub fn set_tracing(&self, vhost: &str, on: bool) -> Result<(), ManagementError> {
        let path = format!("vhosts/{}", encode_segment(vhost));
        let doc = self.get(&path)?;
        let mut body = serde_json::json!({ "tracing": on });
        for key in ["description", "tags", "default_queue_type"] {
            if let (Some(v), Some(obj)) = (doc.get(key), body.as_object_mut()) {
                if !v.is_null() && v != "undefined" {
                    obj.insert(key.into(), v.clone());
                }
            }
        }
        self.put(&path, &body)
    }

    /// How many queues are bound to the firehose exchange `amq.rabbitmq.trace` of `vhost`.
    pub fn trace_listeners(&self, vhost: &str) -> Result<usize, ManagementError> {
        Ok(self
            .list(&format!(
                "exchanges/{}/amq.rabbitmq.trace/bindings/source",
                encode_segment(vhost)
            ))?
            .len())
    }
}

/// The queue fields asked for (the API leaves the others out, which keeps answers small).
const QUEUE_COLUMNS: &str = "name,type,messages,messages_ready,messages_unacknowledged,consumers,\
message_stats.publish_details.rate,message_stats.deliver_get_details.rate,\
message_stats.ack_details.rate,message_stats.redeliver_details.rate";

fn text(row: &Value, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(row: &Value, key: &str) -> u64 {
    row.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn rate(stats: Option<&Value>, key: &str) -> f64 {
    stats
        .and_then(|s| s.get(key))
        .and_then(|d| d.get("rate"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn parse_exchange(row: &Value) -> (String, String) {
    (text(row, "name"), text(row, "type"))
}

/// One row of `/api/queues`.
fn parse_queue(row: &Value) -> QueueRow {
    let stats = row.get("message_stats");
    QueueRow {
        name: text(row, "name"),
        kind: text(row, "type"),
        ready: number(row, "messages_ready"),
        unacked: number(row, "messages_unacknowledged"),
        messages: number(row, "messages"),
        consumers: number(row, "consumers"),
        rates: Some(Rates {
            publish: rate(stats, "publish_details"),
            deliver: rate(stats, "deliver_get_details"),
            ack: rate(stats, "ack_details"),
            redeliver: rate(stats, "redeliver_details"),
        }),
    }
}

/// One row of `/api/bindings` that binds a queue.
fn parse_binding(row: &Value) -> Option<Binding> {
    (text(row, "destination_type") == "queue").then(|| Binding {
        source: text(row, "source"),
        destination: text(row, "destination"),
        routing_key: text(row, "routing_key"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(m: &Management) -> (&str, &str, &str) {
        (&m.base, &m.user, &m.password)
    }

    #[test]
    fn derived_from_the_amqp_address() {
        let m = Management::new(None, Some("amqp://127.0.0.1:5672/%2f")).unwrap();
        assert_eq!(parts(&m), ("http://127.0.0.1:15672", "guest", "guest"));
        let m = Management::new(None, Some("amqp://ops:s%40cret@rabbit.local/prod")).unwrap();
        assert_eq!(parts(&m), ("http://rabbit.local:15672", "ops", "s@cret"));
        let m = Management::new(None, Some("amqp://[::1]:5672")).unwrap();
        assert_eq!(m.base(), "http://[::1]:15672");
        #[cfg(not(feature = "management-tls"))]
        assert!(matches!(
            Management::new(None, Some("amqps://h/")),
            Err(ManagementError::BadUrl(_))
        ));
    }

    #[test]
    fn an_explicit_url_wins_and_keeps_its_prefix() {
        let m = Management::new(
            Some("http://admin:pw@mgmt:8080/rabbitmq/"),
            Some("amqp://ops:x@rabbit/"),
        )
        .unwrap();
        assert_eq!(parts(&m), ("http://mgmt:8080/rabbitmq", "admin", "pw"));
        // No credentials in the URL: those of the AMQP address.
        let m = Management::new(Some("http://mgmt:15672"), Some("amqp://ops:x@rabbit/")).unwrap();
        assert_eq!(parts(&m), ("http://mgmt:15672", "ops", "x"));
        assert!(Management::new(Some("ftp://h"), None).is_err());
        assert!(Management::new(None, None).is_err());
        let debug = format!(
            "{:?}",
            Management::new(Some("http://a:secret@h"), None).unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn vhost_segments() {
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(encode_segment("prod-eu"), "prod-eu");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    /// A row as RabbitMQ 3.10 answers `/api/queues/%2F?columns=...`.
    #[test]
    fn queue_rows() {
        let row: Value = serde_json::from_str(
            r#"{"consumers":2,"message_stats":{"ack_details":{"rate":3.2},
            "deliver_get_details":{"rate":3.4},"publish_details":{"rate":4.0},
            "redeliver_details":{"rate":0.2}},"messages":10,"messages_ready":7,
            "messages_unacknowledged":3,"name":"mailer","type":"quorum"}"#,
        )
        .unwrap();
        let q = parse_queue(&row);
        assert_eq!(
            (
                q.name.as_str(),
                q.kind.as_str(),
                q.ready,
                q.unacked,
                q.consumers
            ),
            ("mailer", "quorum", 7, 3, 2)
        );
        assert_eq!(q.held(), 0);
        // A quorum delay level whose dead-letter worker holds expired messages (seen on
        // RabbitMQ 3.10.8 after a node kill): counted in `messages` only.
        let level = parse_queue(&serde_json::json!({"name": "lepus.delay.quorum.06",
            "type": "quorum", "messages": 7500, "messages_ready": 0,
            "messages_unacknowledged": 0}));
        assert_eq!((level.ready, level.unacked, level.held()), (0, 0, 7500));
        let r = q.rates.unwrap();
        assert_eq!(
            (r.publish, r.deliver, r.ack, r.redeliver),
            (4.0, 3.4, 3.2, 0.2)
        );
        // A queue that never saw a message has no message_stats.
        let q = parse_queue(&serde_json::json!({"name": "idle", "type": "classic"}));
        assert_eq!((q.ready, q.unacked, q.held()), (0, 0, 0));
        assert_eq!(q.rates.unwrap().publish, 0.0);
    }

    #[test]
    fn binding_rows() {
        let to_queue = serde_json::json!({"source": "lepus", "destination": "mailer",
            "destination_type": "queue", "routing_key": "mailer.#", "arguments": {}});
        assert_eq!(
            parse_binding(&to_queue),
            Some(Binding {
                source: "lepus".into(),
                destination: "mailer".into(),
                routing_key: "mailer.#".into()
            })
        );
        let to_exchange = serde_json::json!({"source": "a", "destination": "b",
            "destination_type": "exchange", "routing_key": "#"});
        assert_eq!(parse_binding(&to_exchange), None);
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        // A port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let m = Management::new(Some(&format!("http://127.0.0.1:{port}")), None).unwrap();
        assert!(matches!(
            m.queues("/"),
            Err(ManagementError::Unreachable(_))
        ));
    }
}
