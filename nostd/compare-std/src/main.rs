//! The same envelope work with std and serde_json.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Reading {
    sensor: u16,
    millivolts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    class_name: String,
    retry_strategy: Option<String>,
    retry_limit: Option<u32>,
    retry_count: u32,
}

#[derive(Serialize, Deserialize)]
struct Envelope<P> {
    payload: P,
    metadata: Metadata,
}

fn main() -> std::process::ExitCode {
    let envelope = Envelope {
        payload: Reading {
            sensor: 7,
            millivolts: 3300,
        },
        metadata: Metadata {
            class_name: "SensorReading".into(),
            retry_strategy: Some("repeat".into()),
            retry_limit: Some(3),
            retry_count: 0,
        },
    };
    let Ok(json) = serde_json::to_vec(&envelope) else {
        return 1.into();
    };
    let Ok(decoded) = serde_json::from_slice::<Envelope<Reading>>(&json) else {
        return 1.into();
    };
    if decoded.payload.millivolts != 3300 {
        return 1.into();
    }
    // Re-publish with the next retryCount, payload and unknown keys kept: through a Value.
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return 1.into();
    };
    let count = value["metadata"]["retryCount"].as_u64().unwrap_or(0);
    value["metadata"]["retryCount"] = (count + 1).into();
    println!("{value}");
    0.into()
}
