//! The body of a device's log upload, checked against the device API contract: every line
//! has an RFC 3339 `timestamp`, a `level` and a `message`, and there is at least one line.
//!
//! The log is served back as text, one line per message (`<timestamp> <level>: <message>`),
//! so a message must not be able to start a line of its own: line breaks and other control
//! characters in it are stored escaped (`\n`, `\r`, `\u{…}`), which keeps what the device
//! sent readable, where refusing the upload would lose the log of a failed update.

use serde::Deserialize;
use storage::LogMessage;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};

/// Longest `level`.
const MAX_LEVEL: usize = 32;

/// `PUT …/{id}/log` body.
#[derive(Deserialize)]
pub(crate) struct LogUpload {
    messages: Vec<LogMessage>,
}

impl LogUpload {
    /// The lines to store: 400 if the upload is empty or a line breaks the contract, and
    /// messages with their control characters escaped.
    pub(crate) fn into_checked(self) -> ApiResult<Vec<LogMessage>> {
        if self.messages.is_empty() {
            return Err(ApiError::BadRequest(
                "messages must hold at least one log line".into(),
            ));
        }
        self.messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                checked(m).map_err(|why| ApiError::BadRequest(format!("messages[{i}]: {why}")))
            })
            .collect()
    }
}

fn checked(m: LogMessage) -> Result<LogMessage, String> {
    OffsetDateTime::parse(&m.timestamp, &Rfc3339).map_err(|e| {
        format!(
            "timestamp {:?} is not an RFC 3339 date-time: {e}",
            escape(&m.timestamp)
        )
    })?;
    let level_ok = !m.level.is_empty()
        && m.level.chars().count() <= MAX_LEVEL
        && !m.level.chars().any(|c| c.is_whitespace() || c.is_control());
    if !level_ok {
        return Err(format!(
            "level {:?} must be 1 to {MAX_LEVEL} characters with no spaces or control characters",
            escape(&m.level)
        ));
    }
    Ok(LogMessage {
        message: escape(&m.message),
        ..m
    })
}

/// `text` with every character that could end a line, or is invisible control, escaped.
fn escape(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// Control characters other than tab, and the Unicode line and paragraph separators that
/// some viewers break lines at.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(timestamp: &str, level: &str, message: &str) -> LogMessage {
        LogMessage {
            timestamp: timestamp.into(),
            level: level.into(),
            message: message.into(),
        }
    }

    fn upload(lines: Vec<LogMessage>) -> ApiResult<Vec<LogMessage>> {
        LogUpload { messages: lines }.into_checked()
    }

    #[test]
    fn line_breaks_in_messages_are_escaped_and_tabs_kept() {
        let got = upload(vec![line(
            "2024-05-01T10:00:00+02:00",
            "error",
            "a\nb\r\u{0}c\u{2028}d\te",
        )])
        .unwrap();
        assert_eq!(got[0].message, "a\\nb\\r\\u{0}c\\u{2028}d\te");
        assert_eq!(got[0].timestamp, "2024-05-01T10:00:00+02:00");
    }

    #[test]
    fn empty_uploads_bad_timestamps_and_bad_levels_are_refused() {
        assert!(upload(vec![]).is_err());
        for bad in [
            line("yesterday", "info", "m"),
            line("2024-05-01 10:00:00", "info", "m"),
            line("2024-05-01T10:00:00Z\n2024", "info", "m"),
            line("2024-05-01T10:00:00Z", "", "m"),
            line("2024-05-01T10:00:00Z", "info\nforged", "m"),
            line("2024-05-01T10:00:00Z", &"x".repeat(MAX_LEVEL + 1), "m"),
        ] {
            assert!(upload(vec![bad.clone()]).is_err(), "{bad:?}");
        }
    }
}
