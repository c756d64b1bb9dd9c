//! Text from outside (plugins, vendors, Twinzo answers) made safe to log and show: control
//! characters escaped, so that nobody can forge a log line, and the length bounded.

/// Escapes control characters and truncates to about `max_bytes`.
pub fn sanitize(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        if out.len() >= max_bytes {
            out.push('…');
            break;
        }
        if c.is_control() { out.extend(c.escape_default()) } else { out.push(c) }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_newlines_and_truncates() {
        assert_eq!(sanitize("a\nb", 10), "a\\nb");
        assert_eq!(sanitize(&"x".repeat(20), 5), "xxxxx…");
    }
}
