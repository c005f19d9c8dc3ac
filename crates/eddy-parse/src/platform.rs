//! What `http://eddy.local/` reads from a function's request beyond the path the router
//! matches: the close query and the kind of a WebSocket message.

use serde::Deserialize;

/// Longest close reason: a close frame's payload is at most 125 bytes, two of them the code
/// (RFC 6455, 5.5). Longer reasons are cut by the node; a function asking for one gets `400`.
pub const CLOSE_REASON_BYTES_MAX: usize = 123;

/// Query of `POST /websockets/connections/{id}/close`.
#[derive(Deserialize)]
pub struct CloseQuery {
    pub code: Option<String>,
    pub reason: Option<String>,
}

impl CloseQuery {
    /// The close frame asked for: code 1000 or 3000-4999 (default 1000) and a reason within
    /// `CLOSE_REASON_BYTES_MAX`.
    pub fn frame(self) -> Result<(u16, String), String> {
        let code: u16 = match &self.code {
            None => 1000,
            Some(code) => code
                .parse()
                .ok()
                .filter(|c| *c == 1000 || (3000..=4999).contains(c))
                .ok_or_else(|| format!("close code `{code}` must be 1000 or 3000-4999"))?,
        };
        let reason = self.reason.unwrap_or_default();
        if reason.len() > CLOSE_REASON_BYTES_MAX {
            return Err(format!(
                "a close reason is at most {CLOSE_REASON_BYTES_MAX} bytes (what a close frame holds); this one is {}",
                reason.len()
            ));
        }
        Ok((code, reason))
    }
}

/// Header that says whether a message to a WebSocket is text or binary.
pub const HEADER_KIND: &str = "eddy-websocket-kind";

/// Whether a message to a WebSocket is text: `eddy-websocket-kind: text` or `binary` says,
/// else a `text/*` content type means text.
pub fn message_is_text(kind: Option<&str>, content_type: Option<&str>) -> Result<bool, String> {
    match kind {
        Some("text") => Ok(true),
        Some("binary") => Ok(false),
        Some(other) => Err(format!(
            "{HEADER_KIND} must be text or binary, not `{other}`"
        )),
        None => Ok(content_type.is_some_and(|t| t.starts_with("text/"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(query: &str) -> Result<(u16, String), String> {
        serde_urlencoded::from_str::<CloseQuery>(query)
            .map_err(|e| e.to_string())?
            .frame()
    }

    #[test]
    fn close_codes_and_reasons_are_checked() {
        assert_eq!(close(""), Ok((1000, String::new())));
        assert_eq!(
            close("code=4000&reason=bye%20now"),
            Ok((4000, "bye now".into()))
        );
        for bad in ["code=1001", "code=2999", "code=5000", "code=x", "code=-1"] {
            assert!(
                close(bad).unwrap_err().contains("1000 or 3000-4999"),
                "{bad}"
            );
        }
        let long = format!("reason={}", "r".repeat(CLOSE_REASON_BYTES_MAX + 1));
        assert!(close(&long).unwrap_err().contains("at most 123 bytes"));
    }

    #[test]
    fn a_message_kind_comes_from_its_header_or_content_type() {
        assert_eq!(message_is_text(Some("text"), None), Ok(true));
        assert_eq!(
            message_is_text(Some("binary"), Some("text/plain")),
            Ok(false)
        );
        assert_eq!(message_is_text(None, Some("text/plain")), Ok(true));
        assert_eq!(message_is_text(None, Some("application/json")), Ok(false));
        assert!(message_is_text(Some("json"), None).is_err());
    }
}
