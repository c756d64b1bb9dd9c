//! `${VAR}` and `${VAR:-default}` in any string of edge.yaml, resolved from the environment
//! after YAML parsing (so a value needs no YAML escaping); `$${` writes a literal `${`.

use super::ConfigError;
use serde_json::Value;

/// Replaces every reference in `value`; each unset variable is one error naming its key path.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => *value = typed(text, expanded),
            Err(problem) => errors.push(ConfigError::new(path, problem)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                interpolate(item, &super::join_key(path, key), lookup, errors);
            }
        }
        _ => {}
    }
}

/// A value that was exactly one `${VAR}` takes the type its text reads as (`port: ${PORT}`
/// is a number), but only when that reads back identically (`007` stays text).
fn typed(original: &str, expanded: String) -> Value {
    let whole = original.starts_with("${") && original.ends_with('}') && original.matches("${").count() == 1;
    if whole {
        if let Ok(n) = expanded.parse::<i64>()
            && n.to_string() == expanded
        {
            return Value::from(n);
        }
        if expanded == "true" || expanded == "false" {
            return Value::Bool(expanded == "true");
        }
    }
    Value::String(expanded)
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or("`${` without a closing `}`")?;
            let (name, default) = match after[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&after[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{}}}` is not a valid environment variable reference", &after[..end]));
            }
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8883".into()),
            "PASS" => Some("007".into()),
            "KEY" => Some("s3cr$t".into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_types_defaults_and_escapes() {
        let mut v = json!({"port": "${PORT}", "pass": "${PASS}", "url": "https://${HOST:-localhost}:${PORT}/v3", "lit": "$${X}", "key": "${KEY}", "money": "5$"});
        let mut errors = Vec::new();
        interpolate(&mut v, "", &env, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            v,
            json!({"port": 8883, "pass": "007", "url": "https://localhost:8883/v3", "lit": "${X}", "key": "s3cr$t", "money": "5$"})
        );
    }

    #[test]
    fn unset_variable_names_the_key_path() {
        let mut v = json!({"plants": [{"twinzo": {"api_key": "${TWINZO_KEY}"}}]});
        let mut errors = Vec::new();
        interpolate(&mut v, "", &env, &mut errors);
        assert_eq!(errors[0].to_string(), "plants[0].twinzo.api_key: environment variable TWINZO_KEY is not set");
    }
}
