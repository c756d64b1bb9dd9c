//! Lenient readers for text fields: a password `123456` or a login `4711` written without
//! quotes (or coming from an environment variable) is still text.

use serde::{Deserialize, Deserializer};

/// Reads a string, or a number or boolean as the text it was written as.
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// As [`string_or_number`], for an optional field.
pub fn optional_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "string_or_number")] String);
    Option::<Wrapped>::deserialize(d).map(|w| w.map(|Wrapped(s)| s))
}

/// A map of option names to text values (numbers and booleans read as text).
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "string_or_number")] String);
    let map = std::collections::BTreeMap::<String, Wrapped>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, Wrapped(v))| (k, v)).collect())
}
