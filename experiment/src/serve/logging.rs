//! The gate's log: one JSON line per event on stderr, a caller's text cut short in it.

/// Longest piece of a caller's text (an event's message, a bad type) put in a log line.
const MAX_LOGGED_CHARS: usize = 300;

/// A caller's text cut to [`MAX_LOGGED_CHARS`] characters.
pub(super) fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_LOGGED_CHARS).collect();
    if text.chars().nth(MAX_LOGGED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// One JSON log line on stderr (stdout holds the bound address for whoever started us).
pub(super) fn log(level: &str, msg: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({ "level": level, "msg": msg });
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_for_logs() {
        assert_eq!(shown("short"), "short");
        let long = "x".repeat(1000);
        assert_eq!(shown(&long).chars().count(), MAX_LOGGED_CHARS + 1);
    }
}
