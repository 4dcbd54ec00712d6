//! The server side of a [`SensorReading`](crate::firmware::SensorReading): its message type.

use lepus::{Message, RetryPolicy};

use crate::firmware::{SensorReading, READING_TYPE};

impl Message for SensorReading {
    const TYPE: &'static str = READING_TYPE;
    const ROUTING_KEY: &'static str = "sensors.reading";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(3, [1_000, 5_000])
    }
}
