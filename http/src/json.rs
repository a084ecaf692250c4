//! `ApiJson`: axum's JSON extractor with every rejection answered as problem+json (malformed
//! JSON, a missing or wrong content type, a body over the limit, a field of the wrong type,
//! a body that is not a JSON object).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_engine::ErrorCode;

use crate::problem::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The usual request says exactly `application/json` and parses: serde_json alone reads
        // it (`parse`). axum's extractor tracks every field's path for its error message
        // (`serde_path_to_error`), about 40 % of its cost under `scripts/callgrind`; only a
        // body that does not parse is read again with paths tracked, for its field error.
        let plain_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes() == b"application/json");
        let bytes = if plain_json {
            axum::body::Bytes::from_request(request, state)
                .await
                .map_err(|rejection| reject(JsonRejection::from(rejection)))?
        } else {
            // axum judges the other content types (`; charset=…`, `+json`) and reads the body.
            let axum::Json(raw) =
                axum::Json::<Box<serde_json::value::RawValue>>::from_request(request, state).await.map_err(reject)?;
            axum::body::Bytes::from(String::from(Box::<str>::from(raw)))
        };
        if !is_object(&bytes) {
            // Malformed JSON is told as such; well-formed JSON of another kind is not an object.
            return Err(match axum::Json::<serde::de::IgnoredAny>::from_bytes(&bytes) {
                Ok(_) => not_an_object(),
                Err(rejection) => reject(rejection),
            });
        }
        parse(&bytes).map(ApiJson)
    }
}

/// Reads `T` from JSON text already known to be an object (a body, or a batch item). A value
/// of the wrong type, a missing or an unknown field is a field error naming the field
/// (`amount`, `tiers[1].flat_amount`), as API.md's error shape asks; malformed JSON is told as
/// axum's extractor tells it.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The usual body parses at once; only a refused one pays for tracking field paths.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(error) if error.inner().classify() == serde_json::error::Category::Data => Err(field_error(&error)),
        _ => match axum::Json::<T>::from_bytes(bytes) {
            Ok(axum::Json(value)) => Ok(value),
            Err(rejection) => Err(reject(rejection)),
        },
    }
}

/// The field error of a data error, named by its path (`amount`, `tiers[1].flat_amount`); a
/// missing field by its parent's path and its own name.
fn field_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    let text = inner.to_string();
    // serde_json appends the position, which says nothing a client can act on.
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    field_error_at(&error.path().to_string(), text.strip_suffix(&suffix).unwrap_or(&text), "body")
}

/// The field error of serde's `message` at `path` (`serde_path_to_error`'s, `.` for the
/// whole input, which is then called `whole`): a missing field's path is the object that
/// lacks it, so it is named by that path and its own name; any other error's path is the
/// field's (an unknown field's included).
pub fn field_error_at(path: &str, message: &str, whole: &str) -> ApiError {
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name);
    let field = match (missing, path) {
        (Some(name), ".") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, ".") => whole.to_owned(),
        (None, path) => path.to_owned(),
    };
    ApiError::field(&field, message)
}

/// Whether JSON text is an object: every request body of this API is one. serde's derived
/// `Deserialize` of a struct also takes an array of its fields in declaration order
/// (`["internal", "<from>", "<to>", …]`), which no client means and `deny_unknown_fields`
/// cannot see. Only the first byte that is not blank is looked at: it says what well-formed
/// JSON is, and malformed JSON is refused by its parse anyway.
pub fn is_object(json: &[u8]) -> bool {
    json.iter().find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r')) == Some(&b'{')
}

/// The answer to a body (or batch item) that is JSON but not an object.
pub fn not_an_object() -> ApiError {
    ApiError::new(ErrorCode::ValidationError, "invalid body: expected a JSON object")
}

fn reject(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::ValidationError, "expected Content-Type: application/json")
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::new(ErrorCode::ValidationError, format!("malformed JSON: {}", error.body_text()))
        }
        JsonRejection::JsonDataError(error) => {
            ApiError::new(ErrorCode::ValidationError, format!("invalid body: {}", error.body_text()))
        }
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::ValidationError, "request body too large")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        other => ApiError::new(ErrorCode::ValidationError, other.body_text()).with_status(other.status()),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

pub mod canonical;

/// JSON written by hand where serde's general path showed in profiles (`TransferView::json`,
/// the idempotency fingerprint): each writer is tested to give serde_json's bytes.
pub mod write {
    /// A member's name and colon, after a comma unless it is the object's first.
    pub fn field(out: &mut String, name: &str) {
        if !out.ends_with('{') {
            out.push(',');
        }
        plain(out, name);
        out.push(':');
    }

    /// A JSON string of text that needs no escaping (ids, codes, amounts, times).
    pub fn plain(out: &mut String, text: &str) {
        debug_assert!(!text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'), "{text:?} needs escaping");
        out.push('"');
        out.push_str(text);
        out.push('"');
    }

    /// A JSON string of a client's text, escaped as serde_json escapes it.
    pub fn text(out: &mut String, text: &str) {
        // serde_json escapes `"`, `\` and the control characters, nothing else: text without
        // them is written as it is, with no `String` of its own (two per transfer: the
        // reference and the description).
        if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            // Serializing a `str` cannot fail.
            out.push_str(&serde_json::to_string(text).unwrap_or_default());
        } else {
            plain(out, text);
        }
    }

    pub fn option<'a>(out: &mut String, value: Option<&'a str>, push: fn(&mut String, &'a str)) {
        match value {
            Some(text) => push(out, text),
            None => out.push_str("null"),
        }
    }

    pub fn uuid(out: &mut String, id: uuid::Uuid) {
        plain(out, id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::header::CONTENT_TYPE;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Sample {
        amount: String,
        count: u32,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn text_is_written_as_serde_json_writes_it() {
        let mut cases: Vec<String> = (0_u32..0x80).filter_map(char::from_u32).map(|c| format!("a{c}b")).collect();
        cases.extend(
            ["", "plain reference", "quote \" inside", "back\\slash", "é ü 漢字 😀", "\u{7f}", "\n\t\r"]
                .map(String::from),
        );
        for case in cases {
            let mut out = String::new();
            write::text(&mut out, &case);
            assert_eq!(out, serde_json::to_string(&case).unwrap(), "{case:?}");
        }
    }

    fn request(content_type: Option<&str>, body: &'static str) -> Request {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn every_body_but_json_of_another_kind_gets_the_answer_axums_extractor_gives() {
        let bodies = [
            r#"{"amount":"1.00","count":3}"#,
            r#"{"amount":"1.00","count":3,"note":"a \"b\""}"#,
            r#"{"amount":"1.00","count":-3}"#,
            r#"{"amount":1,"count":3}"#,
            r#"{"count":3}"#,
            r#"{"amount":"1","count":3} trailing"#,
            " \n{\"amount\":\"1.00\",\"count\":3}",
            "{",
            "",
            "[",
        ];
        for content_type in
            [Some("application/json"), Some("application/json; charset=utf-8"), Some("text/plain"), None]
        {
            for body in bodies {
                let ours = ApiJson::<Sample>::from_request(request(content_type, body), &()).await;
                let axums = axum::Json::<Sample>::from_request(request(content_type, body), &()).await;
                match (ours, axums) {
                    (Ok(ApiJson(ours)), Ok(axum::Json(axums))) => assert_eq!(ours, axums),
                    // A data error is a field error (below); the rest are axum's.
                    (Err(ours), Err(JsonRejection::JsonDataError(_))) => {
                        assert_eq!((ours.code, ours.errors.len()), (ErrorCode::ValidationError, 1), "{body}")
                    }
                    (Err(ours), Err(axums)) => {
                        assert_eq!(format!("{ours:?}"), format!("{:?}", reject(axums)), "{content_type:?} {body}")
                    }
                    (ours, axums) => panic!("{content_type:?} {body}: {:?} against {:?}", ours.is_ok(), axums.is_ok()),
                }
            }
        }
    }

    /// API.md: a field error carries `errors: [{field, message}]`; a number for money, a
    /// missing or an unknown field had only axum's text in `detail`.
    #[tokio::test]
    async fn a_body_of_the_wrong_shape_is_a_field_error_naming_its_field() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            amount: String,
            #[serde(default)]
            tiers: Vec<Sample>,
        }
        for (body, field, message) in [
            (r#"{"amount":125.5}"#, "amount", "invalid type: floating point `125.5`, expected a string"),
            (r#"{}"#, "amount", "missing field `amount`"),
            (r#"{"amount":"1","email":"x"}"#, "email", "unknown field `email`, expected `amount` or `tiers`"),
            (
                r#"{"amount":"1","tiers":[{"amount":"1","count":1},{"amount":2,"count":1}]}"#,
                "tiers[1].amount",
                "invalid type: integer `2`, expected a string",
            ),
            (r#"{"amount":"1","tiers":[{"amount":"1"}]}"#, "tiers[0].count", "missing field `count`"),
        ] {
            let Err(error) = ApiJson::<Outer>::from_request(request(Some("application/json"), body), &()).await else {
                panic!("{body} was taken")
            };
            assert_eq!(error.code, ErrorCode::ValidationError, "{body}");
            assert_eq!(
                error.errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect::<Vec<_>>(),
                vec![(field, message)],
                "{body}"
            );
            assert!(!error.detail.contains("line 1"), "no parser positions: {}", error.detail);
        }
    }

    #[tokio::test]
    async fn json_that_is_not_an_object_is_refused_even_where_serde_would_read_it() {
        let positional = r#"["1.00", 3, null]"#;
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            let axums = axum::Json::<Sample>::from_request(request(Some(content_type), positional), &()).await;
            assert!(axums.is_ok(), "serde's derive reads a struct from an array of its fields");
            for body in [positional, "[]", "null", "3", r#""text""#, " [ ]"] {
                let ours = ApiJson::<Sample>::from_request(request(Some(content_type), body), &()).await;
                let Err(error) = ours else { panic!("{body} was taken") };
                assert_eq!(format!("{error:?}"), format!("{:?}", not_an_object()), "{body}");
            }
        }
        let ours = ApiJson::<Sample>::from_request(request(Some("text/plain"), positional), &()).await;
        let Err(error) = ours else { panic!("a text/plain body was taken") };
        assert_eq!(error.status, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), "the content type is judged first");
    }
}
