//! The 1 MiB envelopes the `envelope` bench and the `decode_count` example decode.

/// One envelope with a 1 MiB payload: a single string (`{"note":"xxx..."}`) and records
/// (`[{"id":1,"name":"abcdefgh","score":12.5},...]`); `decode_json_raw` walks it once.
pub fn payloads() -> [(&'static str, Vec<u8>); 2] {
    let wrap = |payload: Vec<u8>| {
        let mut out = br#"{"payload":"#.to_vec();
        out.extend_from_slice(&payload);
        out.extend_from_slice(br#","metadata":{"className":"Big","retryCount":0}}"#);
        out
    };
    let mut string = br#"{"note":""#.to_vec();
    string.resize(string.len() + (1 << 20), b'x');
    string.extend_from_slice(br#""}"#);
    let mut records = b"[".to_vec();
    let mut i = 0u32;
    while records.len() < (1 << 20) {
        if i > 0 {
            records.push(b',');
        }
        records.extend_from_slice(
            format!(r#"{{"id":{i},"name":"abcdefgh","score":12.5}}"#).as_bytes(),
        );
        i += 1;
    }
    records.push(b']');
    [("string", wrap(string)), ("records", wrap(records))]
}
