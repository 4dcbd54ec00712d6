//! The JSON payload of `publish` and `call`: from `--json` or stdin, checked before anything
//! is sent.

use std::io::Read;

use crate::failure::Failure;

/// The payload of `--json`, else of stdin, without surrounding whitespace.
///
/// # Errors
/// Stdin cannot be read, or the payload is not valid JSON (exit code 1).
pub fn read(json: Option<&str>) -> Result<Vec<u8>, Failure> {
    let payload = match json {
        Some(json) => json.as_bytes().to_vec(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("read the payload from stdin: {e}")))?;
            buf
        }
    };
    let payload = payload.trim_ascii();
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(payload) {
        return Err(Failure::usage(format!(
            "the payload is not valid JSON: {e}"
        )));
    }
    Ok(payload.to_vec())
}
