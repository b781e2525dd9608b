//! Which topics a route reads: the pattern librdkafka subscribes to must select exactly
//! the topics the route matches, and no route may read a dead-letter topic.
//!
//! librdkafka matches subscription patterns with POSIX extended regular expressions
//! (its built-in engine where libc has none; the broker's RE2/J with the KIP-848 group
//! protocol) and only anchors them where the pattern says so; routes match whole topic
//! names with Rust's `regex`. A topic the subscription selects and no route matches is
//! assigned and read, one warning per record, and never committed. So patterns are
//! limited to the syntax all of these read alike, and anchored the same way on both
//! sides.

use regex::Regex;

use super::Route;

/// The regex a route matches topics with: the whole name.
pub fn matcher(pattern: &str) -> Result<Regex, String> {
    let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        format!(
            "bad regular expression: {}",
            super::one_line(&e.to_string())
        )
    })?;
    check_portable(pattern)?;
    Ok(regex)
}

/// The same pattern for librdkafka (`^` marks a subscription as a pattern): the whole
/// name, as the route matches it.
pub fn subscription(pattern: &str) -> String {
    format!("^({pattern})$")
}

const PORTABLE: &str = "use only letters, digits, `.`, `_`, `-`, escaped characters such \
    as `\\.`, bracket lists such as `[a-z0-9_]` or `[^.]`, groups `( | )`, anchors `^ $` \
    and repetitions `* + ? {m,n}`";

/// Refuses syntax that librdkafka's regex and the route's regex would read differently
/// (classes such as `\d`, `(?` groups and flags, POSIX `[:classes:]`, lazy repetitions)
/// and characters no topic name has.
pub fn check_portable(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let refuse = |what: String| {
        format!(
            "{what} is read differently by librdkafka's subscription (POSIX extended \
             regex) and the route's matcher: {PORTABLE}"
        )
    };
    if pattern.is_empty() {
        return Err(refuse("an empty pattern".into()));
    }
    let mut i = 0;
    let mut after_repetition = false;
    while i < chars.len() {
        let c = chars[i];
        let mut repetition = false;
        match c {
            c if is_topic_char(c) => {}
            '|' | '(' | ')' | '^' | '$' => {
                if c == '(' && chars.get(i + 1) == Some(&'?') {
                    return Err(refuse("`(?` (groups with flags or options)".into()));
                }
                let before = i.checked_sub(1).map(|b| chars[b]);
                let after = chars.get(i + 1).copied();
                let empty_alternative = (c == '|'
                    && (matches!(before, None | Some('(' | '|'))
                        || matches!(after, None | Some(')'))))
                    || (c == '(' && after == Some(')'));
                if empty_alternative {
                    return Err(refuse("an empty alternative or group".into()));
                }
            }
            '*' | '+' | '?' | '{' => {
                if after_repetition {
                    return Err(refuse(format!("`{c}` right after a repetition")));
                }
                if c == '{' {
                    let end = chars[i..].iter().position(|&c| c == '}').map(|n| i + n);
                    let bounds: Option<String> = end.map(|end| chars[i + 1..end].iter().collect());
                    let valid = bounds.as_deref().is_some_and(|b| {
                        let mut parts = b.splitn(2, ',');
                        let low = parts.next().unwrap_or("");
                        let high = parts.next();
                        is_number(low) && high.is_none_or(|h| h.is_empty() || is_number(h))
                    });
                    if !valid {
                        return Err(refuse(
                            "`{` that is not a repetition `{m}`, `{m,}` or `{m,n}`".into(),
                        ));
                    }
                    i = end.expect("valid bounds have an end");
                }
                repetition = true;
            }
            '\\' => match chars.get(i + 1) {
                Some(&next) if ".*+?|()[]{}^$\\-".contains(next) => i += 1,
                Some(&next) => return Err(refuse(format!("`\\{next}`"))),
                None => return Err(refuse("a trailing `\\`".into())),
            },
            '[' => i = check_bracket(&chars, i).map_err(refuse)?,
            _ => return Err(refuse(format!("`{c}` (not a topic name character)"))),
        }
        after_repetition = repetition;
        i += 1;
    }
    Ok(())
}

/// Checks the bracket list opening at `open`; returns the index of its `]`.
fn check_bracket(chars: &[char], open: usize) -> Result<usize, String> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    let first = i;
    while let Some(&c) = chars.get(i) {
        match c {
            ']' if i > first => return Ok(i),
            ']' => return Err("`]` first in a bracket list".into()),
            '-' if chars.get(i + 1) == Some(&'-') => {
                return Err("`--` in a bracket list".into());
            }
            c if is_topic_char(c) || c == '-' => {}
            '[' | '\\' | '&' | '~' => return Err(format!("`{c}` in a bracket list")),
            c => {
                return Err(format!(
                    "`{c}` (not a topic name character) in a bracket list"
                ));
            }
        }
        i += 1;
    }
    Err("a bracket list without its `]`".into())
}

/// Refuses a listed topic name Kafka would not accept (librdkafka would also take one
/// starting with `^` for a pattern).
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(is_topic_char) {
        return Err(format!(
            "`{topic}` is not a Kafka topic name (1 to 249 ASCII letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

/// Kafka topic names are made of ASCII letters, digits, `.`, `_` and `-` (`-` is a
/// literal outside brackets in both dialects).
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

/// The route that would read `topic`, if any: records sent to a dead-letter topic a
/// route reads would be consumed again and, failing again, loop.
pub fn reader_of<'a>(routes: &'a [Route], topic: &str) -> Option<(&'a Route, &'static str)> {
    routes.iter().find_map(|route| {
        if route.config.topics.iter().any(|t| t == topic) {
            Some((route, "lists it in `topics`"))
        } else if route.pattern.as_ref().is_some_and(|p| p.is_match(topic)) {
            Some((route, "its `topic_pattern` matches it"))
        } else {
            None
        }
    })
}

/// Refuses a dead-letter topic (global or a route's own) that a route reads.
pub fn check_dead_letter_topics(global: Option<&str>, routes: &[Route]) -> Result<(), String> {
    let own = routes.iter().enumerate().filter_map(|(i, r)| {
        r.config
            .dead_letter
            .as_ref()
            .map(|d| (format!("routes[{i}].dead_letter.topic"), d.topic.as_str()))
    });
    let all = global
        .map(|topic| ("dead_letter.topic".to_string(), topic))
        .into_iter()
        .chain(own);
    for (at, topic) in all {
        if let Some((reader, how)) = reader_of(routes, topic) {
            return Err(format!(
                "at `{at}`: dead-letter topic `{topic}` is read by route `{}` ({how}): \
                 records sent there would be consumed again and, failing again, loop; \
                 use a topic no route reads",
                reader.name
            ));
        }
    }
    Ok(())
}
