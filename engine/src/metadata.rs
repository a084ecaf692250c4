//! A transfer's metadata: the client's own key-value pairs (API.md 1.1: an object of string
//! to string, at most 16 keys, a key at most 64 and a value at most 512 characters), stored
//! with the transfer and shown wherever it is.
//!
//! Most transfers carry none, and a transfer is cloned into every journal record of its saga,
//! so the empty case is one null pointer and the rest is shared (`Arc`), never copied per step.
//! Pairs are kept sorted by key, keys unique, so two requests with the same pairs are equal
//! (the idempotency fingerprint) whatever order their JSON wrote them in.

use std::sync::Arc;

/// At most this many keys (API.md): enough for a client's own references (order id, invoice,
/// customer), small enough that a transfer row stays small and a filter stays cheap.
pub const METADATA_KEYS_MAX: usize = 16;
/// A key is at most this many characters (API.md).
pub const METADATA_KEY_LENGTH_MAX: usize = 64;
/// A value is at most this many characters (API.md).
pub const METADATA_VALUE_LENGTH_MAX: usize = 512;

/// Why a set of pairs is not metadata. The first failing reason, checked in this order: the
/// number of keys, then per pair in key order the key, then the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRejection {
    TooManyKeys,
    /// Empty, longer than `METADATA_KEY_LENGTH_MAX`, or a character other than ASCII letters,
    /// digits and `_ - . :`.
    InvalidKey {
        key: String,
    },
    DuplicateKey {
        key: String,
    },
    /// Empty, longer than `METADATA_VALUE_LENGTH_MAX`, or holding a control character.
    InvalidValue {
        key: String,
    },
}

/// Whether `key` may be a metadata key. Keys are identifiers chosen by programs, not prose: a
/// closed set of characters keeps them safe to name in a query string (`metadata.KEY=VALUE`)
/// and in a JSON path without quoting rules.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= METADATA_KEY_LENGTH_MAX
        && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':'))
}

/// Whether `value` may be a metadata value: 1 to 512 characters, no control characters (a
/// value is shown in consoles, logs and CSV exports; an empty one would mean nothing).
pub fn is_valid_value(value: &str) -> bool {
    let length = value.chars().count();
    (1..=METADATA_VALUE_LENGTH_MAX).contains(&length) && !value.chars().any(char::is_control)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Option<Arc<[(String, String)]>>);

impl Metadata {
    /// No metadata: what every transfer without any carries (no allocation).
    pub const fn none() -> Metadata {
        Metadata(None)
    }

    /// Checked metadata from `pairs` in any order; an empty list is `none()`.
    pub fn new(mut pairs: Vec<(String, String)>) -> Result<Metadata, MetadataRejection> {
        if pairs.len() > METADATA_KEYS_MAX {
            return Err(MetadataRejection::TooManyKeys);
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for (index, (key, value)) in pairs.iter().enumerate() {
            if !is_valid_key(key) {
                return Err(MetadataRejection::InvalidKey { key: key.clone() });
            }
            if index > 0 && pairs[index - 1].0 == *key {
                return Err(MetadataRejection::DuplicateKey { key: key.clone() });
            }
            if !is_valid_value(value) {
                return Err(MetadataRejection::InvalidValue { key: key.clone() });
            }
        }
        if pairs.is_empty() { Ok(Metadata(None)) } else { Ok(Metadata(Some(pairs.into()))) }
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> &[(String, String)] {
        self.0.as_deref().unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs().iter().find(|(k, _)| k == key).map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn pairs_are_sorted_and_empty_is_none() {
        let metadata = Metadata::new(vec![pair("b", "2"), pair("a", "1")]).unwrap();
        assert_eq!(metadata.pairs(), &[pair("a", "1"), pair("b", "2")]);
        assert_eq!(metadata.get("b"), Some("2"));
        assert_eq!(Metadata::new(Vec::new()).unwrap(), Metadata::none());
        assert!(Metadata::none().pairs().is_empty());
    }

    #[test]
    fn rejections_come_in_order() {
        let many: Vec<_> = (0..=METADATA_KEYS_MAX).map(|i| pair(&format!("k{i}"), "v")).collect();
        assert_eq!(Metadata::new(many), Err(MetadataRejection::TooManyKeys));
        let exactly: Vec<_> = (0..METADATA_KEYS_MAX).map(|i| pair(&format!("k{i}"), "v")).collect();
        assert!(Metadata::new(exactly).is_ok());
        for key in ["", "a b", "é", "a\"b", &"k".repeat(METADATA_KEY_LENGTH_MAX + 1)] {
            assert_eq!(Metadata::new(vec![pair(key, "v")]), Err(MetadataRejection::InvalidKey { key: key.to_owned() }));
        }
        assert!(Metadata::new(vec![pair(&"k".repeat(METADATA_KEY_LENGTH_MAX), "v")]).is_ok());
        assert_eq!(
            Metadata::new(vec![pair("a", "1"), pair("a", "2")]),
            Err(MetadataRejection::DuplicateKey { key: "a".to_owned() })
        );
        for value in ["", "a\nb", "\u{7f}", &"é".repeat(METADATA_VALUE_LENGTH_MAX + 1)] {
            assert_eq!(
                Metadata::new(vec![pair("k", value)]),
                Err(MetadataRejection::InvalidValue { key: "k".to_owned() })
            );
        }
        assert!(Metadata::new(vec![pair("k", &"é".repeat(METADATA_VALUE_LENGTH_MAX))]).is_ok());
    }
}
