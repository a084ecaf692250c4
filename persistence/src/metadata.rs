//! A transfer's metadata in the database: a JSON object of string values (Postgres `jsonb`,
//! SQLite text), or NULL for none, which is most transfers: they pay one NULL field and
//! nothing else (migration 0050).

use tally_engine::Metadata;

use crate::store::StoreError;

/// The column's value: `None` (NULL) for no metadata, else the pairs as one JSON object.
pub(crate) fn to_db(metadata: &Metadata) -> Option<String> {
    if metadata.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> =
        metadata.pairs().iter().map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone()))).collect();
    Some(serde_json::Value::Object(object).to_string())
}

/// The metadata of a column's value; anything but NULL or an object of valid string pairs is
/// corruption (the API checked what it stored).
pub(crate) fn from_db(text: Option<&str>) -> Result<Metadata, StoreError> {
    let Some(text) = text else { return Ok(Metadata::none()) };
    let corrupt = |why: String| StoreError::Corrupt(format!("transfer metadata: {why}"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| corrupt(error.to_string()))?;
    let serde_json::Value::Object(object) = value else { return Err(corrupt("not an object".to_owned())) };
    let pairs = object
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(value) => Ok((key, value)),
            _ => Err(corrupt(format!("value of {key:?} is not a string"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Metadata::new(pairs).map_err(|rejection| corrupt(format!("{rejection:?}")))
}

/// One JSON object of `pairs`, for a Postgres containment filter (`metadata @> $1::jsonb`).
pub(crate) fn object_of(pairs: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone()))).collect();
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn metadata_round_trips_and_none_is_null() {
        assert_eq!(to_db(&Metadata::none()), None);
        assert_eq!(from_db(None).unwrap(), Metadata::none());
        let metadata =
            Metadata::new(vec![("order".into(), "A-1 \"quoted\" é".into()), ("b".into(), "2".into())]).unwrap();
        let text = to_db(&metadata).unwrap();
        assert_eq!(from_db(Some(&text)).unwrap(), metadata);
        assert!(from_db(Some("[1]")).is_err());
        assert!(from_db(Some(r#"{"a":1}"#)).is_err());
        assert!(from_db(Some(r#"{"a b":"x"}"#)).is_err());
    }
}
