//! A batch item's canonical text, written straight into the batch's fingerprint.
//!
//! The batch fingerprint (`batch::batch_fingerprint`) hashes each item as serde_json's `Value`
//! writes it back (object members sorted by name, no spacing), itself written as a JSON
//! string. Stored fingerprints were made that way, so the text is fixed. Going through a
//! `Value` cost ~11,500 instructions per item under `scripts/callgrind` (a `String` per key
//! and per string, a `BTreeMap` per object, the text written, then escaped a second time):
//! about a tenth of a batched transfer.
//!
//! `write_as_string` writes the same bytes in one pass over the item for the JSON a client
//! sends (strings without escapes, integers, literals, objects and arrays) and declines
//! anything it would have to decode or convert the way `Value` does (a backslash escape, a
//! fraction or an exponent, an integer past 18 digits, `-0`, a repeated member name): the
//! caller then takes the `Value` path. Held byte for byte equal to that path by
//! `tests::the_text_is_what_value_writes`.

/// Writes `raw` (well-formed JSON) as the JSON string of its canonical text, and says whether
/// it did: on `false` nothing was written and the caller goes through `Value`.
pub fn write_as_string(raw: &str, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.push(b'"');
    let mut reader = Reader { bytes: raw.as_bytes(), at: 0, depth: 0 };
    let written = reader.value(out).is_some() && {
        reader.skip_blanks();
        reader.at == reader.bytes.len()
    };
    if written {
        out.push(b'"');
    } else {
        out.truncate(start);
    }
    written
}

/// Members of a transfer item and then some: room made once per object.
const MEMBERS_USUAL: usize = 8;

/// Digits of an integer both `u64` and `i64` hold: `Value` keeps such a number as it is.
const INTEGER_DIGITS_MAX: usize = 18;

/// Nesting past which an item is declined: `Value` refuses it (serde_json's recursion limit
/// of 128 lets 127 arrays or objects open around a value),
/// and a `RawValue`, which is read without recursion, may hold any depth, which a reader that
/// recurses must not follow to the end of its stack.
const DEPTH_MAX: usize = 127;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Arrays and objects open around the current value.
    depth: usize,
}

impl<'a> Reader<'a> {
    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// One value, written canonically with its quotes escaped (it is inside a JSON string).
    fn value(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.skip_blanks();
        match *self.bytes.get(self.at)? {
            b'{' | b'[' if self.depth >= DEPTH_MAX => None,
            b'{' => {
                self.depth += 1;
                let written = self.object(out);
                self.depth -= 1;
                written
            }
            b'[' => {
                self.depth += 1;
                let written = self.array(out);
                self.depth -= 1;
                written
            }
            b'"' => {
                let text = self.string()?;
                push_string(out, text);
                Some(())
            }
            b't' => self.literal(b"true", out),
            b'f' => self.literal(b"false", out),
            b'n' => self.literal(b"null", out),
            b'-' | b'0'..=b'9' => self.integer(out),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            out.extend_from_slice(word);
            self.at = end;
        })
    }

    /// An integer `Value` writes back as it is read: no fraction, no exponent, no leading
    /// zero, not `-0` (which `Value` holds as the float `-0.0`), and small enough for `i64`.
    fn integer(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.at;
        let negative = self.bytes[start] == b'-';
        let digits_start = start + usize::from(negative);
        let mut end = digits_start;
        while self.bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let digits = &self.bytes[digits_start..end];
        let plain = !digits.is_empty()
            && digits.len() <= INTEGER_DIGITS_MAX
            && (digits[0] != b'0' || (digits.len() == 1 && !negative))
            && !matches!(self.bytes.get(end), Some(b'.' | b'e' | b'E'));
        plain.then(|| {
            out.extend_from_slice(&self.bytes[start..end]);
            self.at = end;
        })
    }

    /// A string's content (between its quotes), if it has no escape to decode. (Well-formed
    /// JSON has no raw control character in a string; serde_json refuses one.)
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.at + 1;
        let length = memchr::memchr2(b'"', b'\\', self.bytes.get(start..)?)?;
        let end = start + length;
        // A backslash declines.
        (self.bytes[end] == b'"').then(|| {
            self.at = end + 1;
            &self.bytes[start..end]
        })
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.at += 1;
        out.push(b'[');
        self.skip_blanks();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            out.push(b']');
            return Some(());
        }
        loop {
            self.value(out)?;
            self.skip_blanks();
            match *self.bytes.get(self.at)? {
                b',' => out.push(b','),
                b']' => {
                    self.at += 1;
                    out.push(b']');
                    return Some(());
                }
                _ => return None,
            }
            self.at += 1;
        }
    }

    /// An object with its members in name order, as `Value`'s `BTreeMap` holds them. Members
    /// are written as they come and reordered afterwards only if they came out of order.
    fn object(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.at += 1;
        out.push(b'{');
        let body = out.len();
        // Each member's name, and where its `\"name\":value` text lies in `out`.
        let mut members: Vec<(&'a [u8], usize, usize)> = Vec::with_capacity(MEMBERS_USUAL);
        self.skip_blanks();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            out.push(b'}');
            return Some(());
        }
        loop {
            self.skip_blanks();
            if self.bytes.get(self.at) != Some(&b'"') {
                return None;
            }
            let name = self.string()?;
            self.skip_blanks();
            if self.bytes.get(self.at) != Some(&b':') {
                return None;
            }
            self.at += 1;
            if !members.is_empty() {
                out.push(b',');
            }
            let start = out.len();
            push_string(out, name);
            out.push(b':');
            self.value(out)?;
            members.push((name, start, out.len()));
            self.skip_blanks();
            match *self.bytes.get(self.at)? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        if !members.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            // A repeated name: `Value` keeps the last one's value. Declined: no client means it.
            if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                return None;
            }
            // The members in order after the ones as they came, which are then removed: `out`
            // has room (the fingerprint's buffer is sized for the whole batch), so no buffer
            // of its own.
            let unordered = out.len();
            for (i, &(_, start, end)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_within(start..end);
            }
            out.drain(body..unordered);
        }
        out.push(b'}');
        Some(())
    }
}

/// A string with no escape in it, as `Value` writes it (its quotes), inside the outer string
/// (each quote escaped).
fn push_string(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(b"\\\"");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\\\"");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// What the batch fingerprint wrote before `write_as_string`: the item through `Value`,
    /// then written as a JSON string.
    fn through_value(raw: &str) -> Vec<u8> {
        let canonical = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(raw).unwrap()).unwrap();
        serde_json::to_vec(&canonical).unwrap()
    }

    fn written(raw: &str) -> Option<Vec<u8>> {
        let mut out = b"prefix".to_vec();
        let wrote = write_as_string(raw, &mut out);
        // Declining leaves what was there.
        assert!(wrote || out == b"prefix", "{raw}");
        wrote.then(|| out[b"prefix".len()..].to_vec())
    }

    /// JSON as a client might write it: members in any order, any spacing, any text.
    #[derive(Clone, Debug)]
    enum Json {
        Null,
        Bool(bool),
        Integer(i64),
        Float(f64),
        Text(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            prop_oneof![any::<i64>(), -1000_i64..1000].prop_map(Json::Integer),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Json::Float),
            // Plain text, and text with what needs escaping or decoding.
            prop_oneof!["[a-z0-9 ._-]{0,12}", any::<String>()].prop_map(Json::Text),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
                // Names from a small set, so that repeats and near-equal names occur.
                prop::collection::vec(("[a-c_é]{0,3}", inner), 0..6).prop_map(Json::Object),
            ]
        })
    }

    /// `json` as text, with `blanks` choosing the spacing around each token.
    fn render(json: &Json, blanks: &mut impl Iterator<Item = u8>, out: &mut String) {
        fn blank(blanks: &mut impl Iterator<Item = u8>, out: &mut String) {
            match blanks.next().unwrap_or(0) % 5 {
                0 => {}
                1 => out.push(' '),
                2 => out.push_str("\n  "),
                3 => out.push('\t'),
                _ => out.push_str(" \r\n"),
            }
        }
        blank(blanks, out);
        match json {
            Json::Null => out.push_str("null"),
            Json::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Json::Integer(value) => out.push_str(&value.to_string()),
            Json::Float(value) => out.push_str(&serde_json::to_string(value).unwrap()),
            Json::Text(text) => out.push_str(&serde_json::to_string(text).unwrap()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, blanks, out);
                }
                blank(blanks, out);
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    blank(blanks, out);
                    out.push_str(&serde_json::to_string(name).unwrap());
                    blank(blanks, out);
                    out.push(':');
                    render(value, blanks, out);
                }
                blank(blanks, out);
                out.push('}');
            }
        }
        blank(blanks, out);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_text_is_what_value_writes(json in json(), blanks in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut raw = String::new();
            render(&json, &mut blanks.into_iter().cycle(), &mut raw);
            if let Some(written) = written(&raw) {
                prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(through_value(&raw)).unwrap());
            }
        }
    }

    #[test]
    fn what_clients_send_is_written_here() {
        for raw in [
            r#"{"from_account_id":"0190c0de-0000-7000-8000-000000000001","to_account_id":"0190c0de-0000-7000-8000-000000000002","amount":"12.30","currency":"USD","reference":"inv 7"}"#,
            "{ \"amount\" : \"5\", \"currency\": \"EUR\",\n \"metadata\": {\"order\": \"A-1\", \"b\": [1, -20, 0, true, null, {}, []]}, \"to_account_id\": \"x\" }",
            r#"{"description":"café ☕ 日本","amount":"1","a":{"z":{"y":1,"x":2},"a":[]}}"#,
            "{}",
            r#"{"n":999999999999999999,"m":-999999999999999999}"#,
        ] {
            assert_eq!(written(raw).as_deref(), Some(&*through_value(raw)), "{raw}");
        }
    }

    #[test]
    fn what_value_would_convert_is_declined() {
        for raw in [
            r#"{"reference":"a \"quoted\" word"}"#,
            r#"{"reference":"\u00e9"}"#,
            r#"{"amount":1.5}"#,
            r#"{"amount":1e3}"#,
            r#"{"amount":-0}"#,
            r#"{"amount":1000000000000000000}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"b":1,"a":2,"b":3}"#,
        ] {
            assert_eq!(written(raw), None, "{raw}");
        }
    }

    #[test]
    fn nesting_past_values_limit_is_declined_without_following_it() {
        // What `Value` still reads is written here; one level more is declined, as `Value`
        // refuses it; a depth that would end the stack of a reader following it is declined.
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(written(&nested(DEPTH_MAX)).as_deref(), Some(&*through_value(&nested(DEPTH_MAX))));
        assert!(serde_json::from_str::<serde_json::Value>(&nested(DEPTH_MAX + 1)).is_err());
        assert_eq!(written(&nested(DEPTH_MAX + 1)), None);
        assert_eq!(written(&nested(1_000_000)), None);
        let objects = format!("{}1{}", r#"{"a":"#.repeat(1_000_000), "}".repeat(1_000_000));
        assert_eq!(written(&objects), None);
    }
}
