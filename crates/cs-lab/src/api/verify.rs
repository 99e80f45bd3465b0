//! A replica of the server's request parsing (`ApiServlet.utf8Fixup`, `URLDecoder`) and
//! signature check (`ApiServer.verifyRequest`), written independently of cs-api's signer.

use std::cmp::Ordering;
use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// `java.net.URLDecoder.decode(s, "UTF-8")`: `+` is a space, `%XX` a byte; malformed input is
/// an error (the servlet would fail the request).
pub(crate) fn url_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("URLDecoder: illegal hex characters in escape (%) pattern in `{s}`")
                    })?;
                out.push(hex);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `URLEncoder.encode(v, "UTF-8").replaceAll("\\+", "%20")`.
pub(crate) fn url_encode_for_signature(v: &str) -> String {
    let mut out = String::new();
    for &c in v.as_bytes() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(c as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out.replace('+', "%20")
}

/// Parses `a=b&c=d` as the servlet does for the query string (`utf8Fixup`): pairs without `=`
/// are skipped, later values win.
pub(crate) fn parse_query(q: &str, into: &mut HashMap<String, String>) -> Result<(), String> {
    for pair in q.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            into.insert(url_decode(k)?, url_decode(v)?);
        }
    }
    Ok(())
}

/// Parses a form body as `getParameterMap` does: the first value of a name counts, a name
/// without `=` has an empty value.
pub(crate) fn parse_form(body: &str, into: &mut HashMap<String, String>) -> Result<(), String> {
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.entry(url_decode(k)?).or_insert(url_decode(v)?);
    }
    Ok(())
}

fn java_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The server's unsigned request string, before lowercasing.
pub(crate) fn unsigned_request(params: &HashMap<String, String>) -> String {
    let mut names: Vec<&String> = params
        .keys()
        .filter(|k| !k.eq_ignore_ascii_case("signature"))
        .collect();
    names.sort_by(|a, b| java_cmp(a, b));
    names
        .iter()
        .map(|k| format!("{k}={}", url_encode_for_signature(&params[*k])))
        .collect::<Vec<_>>()
        .join("&")
}

/// HMAC-SHA1 of the lowercased unsigned request, base64.
pub(crate) fn compute_signature(params: &HashMap<String, String>, secret: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC takes keys of any length");
    mac.update(unsigned_request(params).to_lowercase().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `DateUtil.parseTZDateString`: `yyyy-MM-dd'T'HH:mm:ss` with optional fraction and an offset
/// `Z`, `+HH:MM` or `+HHMM`; returns Unix seconds.
pub(crate) fn parse_expires(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let base = s.get(..19)?;
    let dt = time::PrimitiveDateTime::parse(base, &fmt).ok()?;
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &r[digits..];
    }
    let offset_secs: i64 = if rest == "Z" {
        0
    } else {
        let sign = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i64 = digits[..2].parse().ok()?;
        let m: i64 = digits[2..].parse().ok()?;
        sign * (h * 3600 + m * 60)
    };
    Some(dt.assume_utc().unix_timestamp() - offset_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_url_decoder() {
        assert_eq!(url_decode("a+b%2B%7e%C3%A9").unwrap(), "a b+~é");
        assert!(url_decode("%zz").is_err());
    }

    #[test]
    fn expires_formats_the_server_accepts() {
        let want = 1_893_553_445; // 2030-01-02T03:04:05Z
        for s in [
            "2030-01-02T03:04:05+0000",
            "2030-01-02T03:04:05Z",
            "2030-01-02T03:04:05+00:00",
            "2030-01-02T04:04:05+0100",
            "2030-01-02T03:04:05.123Z",
        ] {
            assert_eq!(parse_expires(s), Some(want), "{s}");
        }
        assert_eq!(parse_expires("2030-01-02 03:04:05"), None);
    }

    #[test]
    fn known_answer_matches_python_hmac() {
        let p: HashMap<String, String> = [
            ("command", "updateConfiguration"),
            ("apiKey", "Key"),
            ("response", "json"),
            ("name", "a b*c+d=e&f%g"),
            ("value", "x~y"),
            ("Zeta", "Ünïcödé ✓"),
            ("empty", ""),
            ("MixedCase", "VaLuE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            compute_signature(&p, "s3cr3t"),
            "qha4WvJimgz9AR/eUccua3wLx6s="
        );
    }
}
