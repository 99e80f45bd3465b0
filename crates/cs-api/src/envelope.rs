//! CloudStack JSON envelopes: `{"<command>response": {...}}`, list pages, error replies.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::error::Error;

/// One page of a list reply.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) count: Option<u64>,
    pub(crate) items: Vec<T>,
}

#[derive(Debug, Default)]
struct ErrorFields {
    errorcode: Option<i64>,
    cserrorcode: Option<i64>,
    errortext: Option<String>,
}

fn malformed(endpoint: &str, command: &str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        endpoint: endpoint.to_string(),
        command: command.to_string(),
        detail: detail.into(),
    }
}

/// A short, printable excerpt of a body for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.is_empty() {
        "empty body".to_string()
    } else if body.len() > 160 {
        format!("{trimmed}…")
    } else {
        trimmed.to_string()
    }
}

fn api_error(endpoint: &str, command: &str, status: u16, f: ErrorFields) -> Error {
    let errorcode = f
        .errorcode
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(status);
    let errortext = f.errortext.unwrap_or_else(|| "no error text".to_string());
    if status == 401 || errorcode == 401 {
        Error::Unauthorized {
            endpoint: endpoint.to_string(),
            command: command.to_string(),
            errortext,
        }
    } else {
        Error::Api {
            command: command.to_string(),
            http_status: status,
            errorcode,
            cserrorcode: f.cserrorcode.and_then(|c| u32::try_from(c).ok()),
            errortext,
        }
    }
}

/// Maps a non-200 reply to an error: the envelope's fields when there is one, else the HTTP
/// status.
pub(crate) fn error_from(endpoint: &str, command: &str, status: u16, body: &[u8]) -> Error {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(serde_json::Value::Object(inner)) = map.into_iter().next().map(|(_, v)| v)
        && (inner.contains_key("errorcode") || inner.contains_key("errortext"))
    {
        let f = ErrorFields {
            errorcode: inner.get("errorcode").and_then(serde_json::Value::as_i64),
            cserrorcode: inner.get("cserrorcode").and_then(serde_json::Value::as_i64),
            errortext: inner
                .get("errortext")
                .and_then(|t| t.as_str())
                .map(str::to_string),
        };
        return api_error(endpoint, command, status, f);
    }
    if status == 401 {
        return Error::Unauthorized {
            endpoint: endpoint.to_string(),
            command: command.to_string(),
            errortext: "HTTP 401 without a CloudStack envelope".into(),
        };
    }
    Error::Http {
        endpoint: endpoint.to_string(),
        command: command.to_string(),
        status,
        detail: excerpt(body),
    }
}

/// The value under the single top-level key of a 200 reply; an error envelope becomes an error.
pub(crate) fn parse_value(
    endpoint: &str,
    command: &str,
    status: u16,
    body: &[u8],
) -> Result<serde_json::Value, Error> {
    if status != 200 {
        return Err(error_from(endpoint, command, status, body));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        malformed(
            endpoint,
            command,
            format!("not JSON ({e}): {}", excerpt(body)),
        )
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(malformed(endpoint, command, "top level is not an object"));
    };
    if map.len() != 1 {
        return Err(malformed(
            endpoint,
            command,
            format!("expected one top-level key, found {}", map.len()),
        ));
    }
    let (_, inner) = map
        .into_iter()
        .next()
        .expect("invariant: the map has one entry");
    if inner.get("errorcode").is_some() {
        let f = ErrorFields {
            errorcode: inner.get("errorcode").and_then(serde_json::Value::as_i64),
            cserrorcode: inner.get("cserrorcode").and_then(serde_json::Value::as_i64),
            errortext: inner
                .get("errortext")
                .and_then(|t| t.as_str())
                .map(str::to_string),
        };
        return Err(api_error(endpoint, command, status, f));
    }
    Ok(inner)
}

/// Parses a list page straight into typed items, skipping every other field.
pub(crate) fn parse_page<T: DeserializeOwned>(
    endpoint: &str,
    command: &str,
    object_key: &str,
    body: &[u8],
) -> Result<Page<T>, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let outcome = OuterSeed::<T> {
        object_key,
        marker: PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|o| de.end().map(|()| o))
    .map_err(|e| {
        malformed(
            endpoint,
            command,
            format!("not a {command} page ({e}): {}", excerpt(body)),
        )
    })?;
    match outcome {
        Outcome::Page(p) => Ok(p),
        Outcome::Error(f) => Err(api_error(endpoint, command, 200, f)),
    }
}

#[derive(Debug)]
enum Outcome<T> {
    Page(Page<T>),
    Error(ErrorFields),
}

struct OuterSeed<'a, T> {
    object_key: &'a str,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for OuterSeed<'_, T> {
    type Value = Outcome<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for OuterSeed<'_, T> {
    type Value = Outcome<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudStack response envelope")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(_key) = map.next_key::<IgnoredAny>()? else {
            return Err(de::Error::custom("empty envelope"));
        };
        let outcome = map.next_value_seed(InnerSeed::<T> {
            object_key: self.object_key,
            marker: PhantomData,
        })?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("more than one top-level key"));
        }
        Ok(outcome)
    }
}

struct InnerSeed<'a, T> {
    object_key: &'a str,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for InnerSeed<'_, T> {
    type Value = Outcome<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for InnerSeed<'_, T> {
    type Value = Outcome<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list response object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut count = None;
        let mut items = Vec::new();
        let mut err = ErrorFields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "count" => count = Some(map.next_value::<u64>()?),
                k if k == self.object_key => items = map.next_value::<Vec<T>>()?,
                "errorcode" => err.errorcode = map.next_value::<Option<i64>>()?,
                "cserrorcode" => err.cserrorcode = map.next_value::<Option<i64>>()?,
                "errortext" => err.errortext = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if err.errorcode.is_some() {
            return Ok(Outcome::Error(err));
        }
        Ok(Outcome::Page(Page { count, items }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::HostResponse;

    const EP: &str = "http://127.0.0.1/client/api";

    #[test]
    fn pages_parse_with_and_without_items() {
        let p: Page<HostResponse> = parse_page(
            EP,
            "listHosts",
            "host",
            br#"{"listhostsresponse":{"count":2,"host":[{"id":"a","x":[1]},{"id":"b"}]}}"#,
        )
        .unwrap();
        assert_eq!((p.count, p.items.len()), (Some(2), 2));
        let p: Page<HostResponse> =
            parse_page(EP, "listHosts", "host", br#"{"listhostsresponse":{}}"#).unwrap();
        assert_eq!((p.count, p.items.len()), (None, 0));
    }

    #[test]
    fn error_envelopes_become_typed_errors() {
        let body = br#"{"listhostsresponse":{"uuidList":[],"errorcode":431,"cserrorcode":4350,"errortext":"Invalid parameter id"}}"#;
        match error_from(EP, "listHosts", 431, body) {
            Error::Api {
                errorcode: 431,
                cserrorcode: Some(4350),
                http_status: 431,
                errortext,
                ..
            } => assert_eq!(errortext, "Invalid parameter id"),
            other => panic!("{other:?}"),
        }
        let body = br#"{"errorresponse":{"uuidList":[],"errorcode":401,"errortext":"unable to verify user credentials and/or request signature"}}"#;
        let e = error_from(EP, "listHosts", 401, body);
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        assert!(e.to_string().contains("clock"), "{e}");
        let e = error_from(EP, "listHosts", 502, b"<html>Bad Gateway</html>");
        assert!(matches!(e, Error::Http { status: 502, .. }) && e.is_transient());
    }

    #[test]
    fn malformed_replies_are_reported() {
        let e = parse_value(EP, "listZones", 200, b"<xml/>").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
        let e = parse_page::<HostResponse>(EP, "listHosts", "host", b"{\"a\":1}").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
    }
}
