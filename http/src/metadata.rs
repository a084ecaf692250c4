//! `metadata` on `POST /v1/transfers`, quotes and batch items: reading it from the body and
//! checking it (`tally_engine::metadata` holds the bounds). Decisions in
//! docs/ledger-views.md, "Transfer metadata and listing filters".

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tally_engine::Metadata;
use tally_engine::metadata::{
    METADATA_KEY_LENGTH_MAX, METADATA_KEYS_MAX, METADATA_VALUE_LENGTH_MAX, is_valid_key, is_valid_value,
};

use crate::problem::ApiError;

/// `metadata` as written: its pairs in the order given with values of any JSON type, or the
/// fact that it was not an object. Read this loosely so every problem is a field error that
/// names the key (a plain `BTreeMap<String, String>` would answer a number as a bare "invalid
/// body" and silently keep the last of two equal keys).
#[derive(Clone, Debug)]
pub enum MetadataBody {
    Object(Vec<(String, serde_json::Value)>),
    NotObject,
}

impl<'de> serde::Deserialize<'de> for MetadataBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MetadataBody, D::Error> {
        deserializer.deserialize_any(MetadataVisitor)
    }
}

struct MetadataVisitor;

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = MetadataBody;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataBody, A::Error> {
        // Bounded by the body limit; more than `METADATA_KEYS_MAX` is refused after reading.
        let mut pairs = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            pairs.push((key, value));
        }
        Ok(MetadataBody::Object(pairs))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetadataBody, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MetadataBody::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MetadataBody, E> {
        Ok(MetadataBody::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MetadataBody, E> {
        Ok(MetadataBody::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MetadataBody, E> {
        Ok(MetadataBody::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MetadataBody, E> {
        Ok(MetadataBody::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<MetadataBody, E> {
        Ok(MetadataBody::NotObject)
    }
}

/// A key as shown in an error message: the key itself, cut short if it is absurdly long.
fn shown(key: &str) -> String {
    key.chars().take(METADATA_KEY_LENGTH_MAX + 8).collect()
}

/// Checks `metadata` as written and answers it sorted. Absent, `null` and `{}` are all no
/// metadata. The first failing reason, in this order: not an object, more than 16 keys, then
/// pair by pair as written: the key, a repeated key, a value that is not a string, the value.
pub fn metadata(body: Option<&MetadataBody>) -> Result<Metadata, ApiError> {
    let pairs = match body {
        None => return Ok(Metadata::none()),
        Some(MetadataBody::NotObject) => {
            return Err(ApiError::field("metadata", "must be an object of string values"));
        }
        Some(MetadataBody::Object(pairs)) => pairs,
    };
    if pairs.len() > METADATA_KEYS_MAX {
        return Err(ApiError::field("metadata", format!("must have at most {METADATA_KEYS_MAX} keys")));
    }
    let mut checked: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if !is_valid_key(key) {
            return Err(ApiError::field(
                "metadata",
                format!("key {:?} must be 1 to {METADATA_KEY_LENGTH_MAX} ASCII letters, digits or _ - . :", shown(key)),
            ));
        }
        let field = format!("metadata.{key}");
        if checked.iter().any(|(seen, _)| seen == key) {
            return Err(ApiError::field(&field, "is given twice"));
        }
        let serde_json::Value::String(value) = value else {
            return Err(ApiError::field(&field, "must be a string"));
        };
        if !is_valid_value(value) {
            return Err(ApiError::field(
                &field,
                format!("must be 1 to {METADATA_VALUE_LENGTH_MAX} characters without control characters"),
            ));
        }
        checked.push((key.clone(), value.clone()));
    }
    // Every reason `Metadata::new` could give was checked above, in the API's order.
    Metadata::new(checked).map_err(|rejection| ApiError::field("metadata", format!("{rejection:?}")))
}

/// The metadata of a transfer as JSON: always an object (`{}` for none), keys sorted.
pub fn view(metadata: &Metadata) -> std::collections::BTreeMap<String, String> {
    metadata.pairs().iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(json: &str) -> Result<Metadata, ApiError> {
        #[derive(serde::Deserialize)]
        struct Body {
            metadata: Option<MetadataBody>,
        }
        let body: Body = serde_json::from_str(json).unwrap();
        metadata(body.metadata.as_ref())
    }

    #[test]
    fn absent_null_and_empty_are_none_and_pairs_are_sorted() {
        assert!(parse("{}").unwrap().is_empty());
        assert!(parse(r#"{"metadata":null}"#).unwrap().is_empty());
        assert!(parse(r#"{"metadata":{}}"#).unwrap().is_empty());
        let metadata = parse(r#"{"metadata":{"b":"2","a":"1"}}"#).unwrap();
        assert_eq!(metadata.pairs(), &[("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn every_bad_shape_is_a_field_error() {
        for json in [r#"[]"#, r#"[1,{"a":"b"}]"#, r#""text""#, "1", "1.5", "-1", "true"] {
            let error = parse(&format!(r#"{{"metadata":{json}}}"#)).unwrap_err();
            assert!(format!("{error:?}").contains("metadata"), "{json}: {error:?}");
        }
        for json in [r#"{"a":1}"#, r#"{"a":null}"#, r#"{"a":{"b":"c"}}"#, r#"{"a":["x"]}"#, r#"{"a":"1","a":"2"}"#] {
            let error = parse(&format!(r#"{{"metadata":{json}}}"#)).unwrap_err();
            assert!(format!("{error:?}").contains("metadata.a"), "{json}: {error:?}");
        }
    }
}
