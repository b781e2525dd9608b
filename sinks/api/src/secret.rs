//! Keeping credentials out of logs and error messages, in three layers:
//!
//! 1. Config types never print a secret through `Debug`: passwords are
//!    [`SecretString`] (from `secrecy`), property maps print sensitive values as `***`
//!    ([`redacted_map`]) and URIs lose their password ([`redact_uri`]).
//! 2. Messages that name a URI name it through [`redact_uri`].
//! 3. [`scrub`] is the last step before text leaves the process (every log line and
//!    the final error line): it masks every [`register`]ed secret and the password of
//!    any URI it finds, whichever library wrote the text.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

pub use secrecy::{ExposeSecret, SecretString};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked in free text: they would mask ordinary
/// words (they are still never printed by `Debug` or in URIs).
const MIN_SCRUB_LEN: usize = 4;

/// Whether a config key (or the path of one) holds a secret: Kafka's `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`; Iceberg's `token`, `credential`,
/// `s3.secret-access-key`, `s3.session-token`, `adls.account-key`, `header.authorization`...
pub fn is_sensitive_key(key: &str) -> bool {
    const MARKS: [&str; 10] = [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private",
        "key.pem",
        "account-key",
        "authorization",
        "oauthbearer.config",
    ];
    let key = key.to_ascii_lowercase();
    MARKS.iter().any(|mark| key.contains(mark))
}

/// `uri` with the password of its user info and the values of sensitive query
/// parameters (`?password=`, `?sslpassword=`, `?token=`) replaced by `***`:
/// `postgres://ingest:pw@host/db` becomes `postgres://ingest:***@host/db`.
pub fn redact_uri(uri: &str) -> String {
    redact_uris(uri).into_owned()
}

/// [`redact_uri`] applied to every `scheme://...` found in free text.
pub fn redact_uris(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    for_each_uri(text, |span| spans.push(span));
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        out.push_str(&text[at..start]);
        out.push_str(MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// The secrets inside the URIs of `text`: user-info passwords and sensitive query
/// values, as written and percent-decoded.
pub fn uri_secrets(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for_each_uri(text, |(start, end)| {
        let raw = &text[start..end];
        found.push(raw.to_string());
        let decoded = percent_decode(raw);
        if decoded != raw {
            found.push(decoded);
        }
    });
    found
}

/// Calls `secret` with the byte range of every secret inside a URI of `text`.
fn for_each_uri(text: &str, mut secret: impl FnMut((usize, usize))) {
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let begin = from + found + 3;
        // The URI runs to the first space or quote; its authority to the first `/?#`.
        let end = text[begin..]
            .find(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '<' | '>'))
            .map_or(text.len(), |i| begin + i);
        // A password may hold `/`, `?` or `#` unescaped (`postgres://u:p#ss@db/cat`): the
        // user info ends at the last `@`. Masking too much beats showing a password (an
        // `@` in a path or query behind a port masks from the port on).
        let at = text[begin..end].rfind('@').map(|i| begin + i);
        if let Some(at) = at {
            let userinfo = &text[begin..at];
            if let Some(colon) = userinfo.find(':')
                && colon + 1 < userinfo.len()
            {
                secret((begin + colon + 1, at));
            }
        }
        let host = at.map_or(begin, |at| at + 1);
        let authority_end = text[host..end]
            .find(['/', '?', '#'])
            .map_or(end, |i| host + i);
        if let Some(q) = text[authority_end..end].find('?') {
            let query_start = authority_end + q + 1;
            let query_end = text[query_start..end]
                .find('#')
                .map_or(end, |i| query_start + i);
            let mut pos = query_start;
            for pair in text[query_start..query_end].split('&') {
                if let Some((key, value)) = pair.split_once('=')
                    && is_sensitive_key(key)
                    && !value.is_empty()
                {
                    let value_start = pos + key.len() + 1;
                    secret((value_start, value_start + value.len()));
                }
                pos += pair.len() + 1;
            }
        }
        from = end.max(begin);
    }
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A property map for `Debug`: sensitive values as `***`, URIs without passwords.
pub fn redacted_map(map: &BTreeMap<String, String>) -> impl fmt::Debug + '_ {
    RedactedMap(map)
}

struct RedactedMap<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for RedactedMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let shown = if is_sensitive_key(key) {
                    Cow::Borrowed(MASK)
                } else {
                    redact_uris(value)
                };
                (key, shown)
            }))
            .finish()
    }
}

/// Secrets of this process (with their escaped forms), longest first: a secret
/// containing another is masked whole.
static REGISTERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// `secret` as written, and as JSON strings and Rust's `Debug` escape it (log lines
/// show it either way); nothing when it is too short to mask in free text.
fn forms(secret: &str) -> Vec<String> {
    if secret.chars().count() < MIN_SCRUB_LEN {
        return Vec::new();
    }
    let json = |text: &str| {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        quoted[1..quoted.len() - 1].to_string()
    };
    let debug = secret.escape_debug().to_string();
    // A `?field` in a JSON log line is escaped twice.
    let mut forms = vec![secret.to_string(), json(secret), json(&debug), debug];
    forms.sort();
    forms.dedup();
    forms
}

fn replace_all<'a>(mut text: Cow<'a, str>, forms: &[String]) -> Cow<'a, str> {
    for form in forms {
        if text.contains(form.as_str()) {
            text = Cow::Owned(text.replace(form.as_str(), MASK));
        }
    }
    text
}

fn longest_first(forms: &mut Vec<String>) {
    forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    forms.dedup();
}

/// Masks `secret` in everything [`scrub`] sees from now on.
pub fn register(secret: &str) {
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    for form in forms(secret) {
        if !registered.contains(&form) {
            registered.push(form);
        }
    }
    longest_first(&mut registered);
}

/// `text` with the registered secrets and the passwords of URIs masked.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let registered = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    replace_all(redact_uris(text), &registered)
}

/// `text` with the given secrets and the passwords of URIs masked (as [`scrub`],
/// without the process-wide registry).
pub fn mask<'a>(text: &'a str, secrets: &[String]) -> Cow<'a, str> {
    let mut all: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
    longest_first(&mut all);
    replace_all(redact_uris(text), &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_passwords_are_masked() {
        let cases = [
            (
                "postgres://ingest:s3cr%40t@db:5432/cat",
                "postgres://ingest:***@db:5432/cat",
            ),
            ("postgres://ingest@db/cat", "postgres://ingest@db/cat"),
            (
                "sqlite:///var/lib/c.db?mode=rwc",
                "sqlite:///var/lib/c.db?mode=rwc",
            ),
            (
                "postgres://db/cat?user=ingest&password=pw1&sslmode=require",
                "postgres://db/cat?user=ingest&password=***&sslmode=require",
            ),
            ("https://u:p@w@ch:8443/?x=1", "https://u:***@ch:8443/?x=1"),
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            // Unescaped `#`, `/`, `?` in a password.
            (
                "postgres://ingest:p#ss@db/cat",
                "postgres://ingest:***@db/cat",
            ),
            (
                "postgres://ingest:p/ss@db/cat",
                "postgres://ingest:***@db/cat",
            ),
            (
                "postgres://ingest:p?ss@db/cat?sslmode=require",
                "postgres://ingest:***@db/cat?sslmode=require",
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(redact_uri(uri), expected, "{uri}");
        }
        assert_eq!(
            redact_uris(
                "catalog `postgres://a:b1@h/d`: failed; see http://x:y2@z and `rest://k:v3@r`"
            ),
            "catalog `postgres://a:***@h/d`: failed; see http://x:***@z and `rest://k:***@r`"
        );
        assert_eq!(
            uri_secrets("postgres://ingest:s3cr%40t@db/c?sslpassword=k"),
            vec!["s3cr%40t", "s3cr@t", "k"]
        );
    }

    #[test]
    fn sensitive_keys() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "token",
            "credential",
            "s3.secret-access-key",
            "s3.session-token",
            "adls.account-key",
            "header.Authorization",
            "clickhouse.password",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "s3.access-key-id",
            "s3.endpoint",
            "uri",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn maps_print_sensitive_values_masked() {
        let map: BTreeMap<String, String> = [
            ("sasl.password", "hunter22"),
            ("sasl.username", "ingest"),
            ("s3.endpoint", "http://k:v123@s3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shown = format!("{:?}", redacted_map(&map));
        assert_eq!(
            shown,
            r#"{"s3.endpoint": "http://k:***@s3", "sasl.password": "***", "sasl.username": "ingest"}"#
        );
    }

    #[test]
    fn scrub_masks_registered_secrets_in_every_form() {
        register("scrub-\"test\"-Secret");
        register("ab"); // too short to mask in free text
        let text = r#"a scrub-"test"-Secret b {"e":"scrub-\"test\"-Secret"} ab"#;
        assert_eq!(scrub(text), r#"a *** b {"e":"***"} ab"#);
        assert_eq!(scrub("no secret here"), "no secret here");
        assert_eq!(
            scrub("connect postgres://u:anything@h/d"),
            "connect postgres://u:***@h/d"
        );
        let secrets = ["abcd".to_string(), "abcdef".to_string()];
        assert_eq!(mask("abcdef abcd abc", &secrets), "*** *** abc");
    }
}
