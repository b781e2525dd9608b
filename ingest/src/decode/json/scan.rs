//! A strict RFC 8259 scanner over one payload: the columns (`columns.rs`) pull the
//! tokens their schema expects, so nothing is built that is not kept, and numbers keep
//! their text (a decimal is parsed from what was written, not from an `f64`).
//!
//! Written by hand because no JSON crate hands out tokens this way: simd-json and
//! sonic-rs build a tape or a DOM first (or go through serde, where a number's text is
//! gone). The part that costs is finding a string's end; on x86-64 that is an SSE2 scan
//! of 16 bytes at a time for a quote or a backslash.
//!
//! Strict where the bytes could mean two things (a trailing comma, a missing colon, a
//! number with a leading zero are refused), lenient as arrow-json was where they
//! cannot: a raw control character inside a string is kept as it is.

use std::fmt;

/// Objects and arrays nest at most this deep (serde_json's limit): deeper input would
/// exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Why the bytes are not one JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub what: &'static str,
    pub at: usize,
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// What the next value is, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// "a string", for a reason.
    pub fn described(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// A number as written, and whether it has a fraction or an exponent.
#[derive(Debug, Clone, Copy)]
pub struct Number<'a> {
    pub text: &'a str,
    pub float: bool,
}

pub struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn error(&self, what: &'static str) -> Syntax {
        Syntax { what, at: self.pos }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not taken.
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    /// The kind of the next value, not taken.
    pub fn kind(&mut self) -> Result<Kind, Syntax> {
        Ok(match self.peek() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b'-' | b'0'..=b'9') => Kind::Number,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(_) => return Err(self.error("expected a value")),
            None => return Err(self.error("truncated JSON value")),
        })
    }

    /// Takes `byte` (after whitespace) or fails.
    pub fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), Syntax> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            None => Err(self.error("truncated JSON value")),
            Some(_) => Err(self.error(what)),
        }
    }

    /// Takes `text` (after whitespace) if it comes next, byte for byte.
    pub fn eat_exactly(&mut self, text: &[u8]) -> bool {
        self.skip_whitespace();
        let next = starts_with(&self.bytes[self.pos..], text);
        self.pos += if next { text.len() } else { 0 };
        next
    }

    /// Takes `byte` if it comes next.
    pub fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.pos += usize::from(next);
        next
    }

    /// After a member or an item: `true` for a comma, `false` for `close`.
    pub fn more(&mut self, close: u8) -> Result<bool, Syntax> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            None => Err(self.error("truncated JSON value")),
            Some(_) if close == b'}' => Err(self.error("expected `,` or `}`")),
            Some(_) => Err(self.error("expected `,` or `]`")),
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<(), Syntax> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("expected one JSON object, found more after it")),
        }
    }

    pub fn null(&mut self) -> Result<(), Syntax> {
        self.word(b"null")
    }

    pub fn bool(&mut self) -> Result<bool, Syntax> {
        if self.peek() == Some(b't') {
            self.word(b"true").map(|()| true)
        } else {
            self.word(b"false").map(|()| false)
        }
    }

    fn word(&mut self, word: &[u8]) -> Result<(), Syntax> {
        self.skip_whitespace();
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected `true`, `false` or `null`"))
        }
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    pub fn number(&mut self) -> Result<Number<'a>, Syntax> {
        self.skip_whitespace();
        let start = self.pos;
        self.pos += usize::from(self.bytes.get(self.pos) == Some(&b'-'));
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        let mut float = false;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.some_digits()?;
            float = true;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            self.some_digits()?;
            float = true;
        }
        // SAFETY: the grammar above took ASCII digits, signs, `.` and `e` only.
        let text = unsafe { std::str::from_utf8_unchecked(&self.bytes[start..self.pos]) };
        Ok(Number { text, float })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Syntax> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(self.error("expected a digit"));
        }
        Ok(())
    }

    /// A string's content, unescaped, appended to `out`.
    pub fn string_into(&mut self, out: &mut Vec<u8>) -> Result<(), Syntax> {
        self.expect(b'"', "expected a string")?;
        self.rest_of_string(out)
    }

    /// A string's content: borrowed from the payload when it has no escape, else
    /// unescaped into `scratch`.
    pub fn string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Result<&'s str, Syntax>
    where
        'a: 's,
    {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        let stop = special(self.bytes, start);
        if self.bytes.get(stop) == Some(&b'"') {
            let text = utf8(&self.bytes[start..stop]).ok_or_else(|| self.error("invalid UTF-8"))?;
            self.pos = stop + 1;
            return Ok(text);
        }
        scratch.clear();
        self.rest_of_string(scratch)?;
        // Valid UTF-8: every piece was checked, and escapes write whole characters.
        Ok(std::str::from_utf8(scratch).expect("checked piece by piece"))
    }

    fn rest_of_string(&mut self, out: &mut Vec<u8>) -> Result<(), Syntax> {
        loop {
            let start = self.pos;
            let stop = special(self.bytes, start);
            let piece = &self.bytes[start..stop];
            if utf8(piece).is_none() {
                return Err(self.error("invalid UTF-8"));
            }
            out.extend_from_slice(piece);
            self.pos = stop + 1;
            match self.bytes.get(stop) {
                Some(b'"') => return Ok(()),
                Some(b'\\') => self.escape(out)?,
                Some(_) => unreachable!("`special` stops at a quote or a backslash"),
                None => {
                    self.pos = stop;
                    return Err(self.error("truncated JSON value"));
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Syntax> {
        let Some(&byte) = self.bytes.get(self.pos) else {
            return Err(self.error("truncated JSON value"));
        };
        self.pos += 1;
        let plain = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode(out),
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        };
        out.push(plain);
        Ok(())
    }

    /// `\uXXXX`, a surrogate pair as two of them.
    fn unicode(&mut self, out: &mut Vec<u8>) -> Result<(), Syntax> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("lone leading surrogate"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone leading surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate")),
            code => code,
        };
        let c = char::from_u32(code).ok_or_else(|| self.error("invalid escape"))?;
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Syntax> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated JSON value"))?;
        let mut code = 0;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            code = code * 16 + v;
        }
        self.pos += 4;
        Ok(code)
    }

    /// Checks and passes over one value of any kind.
    pub fn skip(&mut self, depth: usize) -> Result<(), Syntax> {
        match self.kind()? {
            Kind::Object => {
                self.nest(depth)?;
                self.pos += 1;
                if self.eat(b'}') {
                    return Ok(());
                }
                let mut scratch = Vec::new();
                loop {
                    self.string(&mut scratch)?;
                    self.expect(b':', "expected `:`")?;
                    self.skip(depth + 1)?;
                    if !self.more(b'}')? {
                        return Ok(());
                    }
                }
            }
            Kind::Array => {
                self.nest(depth)?;
                self.pos += 1;
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if !self.more(b']')? {
                        return Ok(());
                    }
                }
            }
            Kind::String => self.string(&mut Vec::new()).map(drop),
            Kind::Number => self.number().map(drop),
            Kind::Bool => self.bool().map(drop),
            Kind::Null => self.null(),
        }
    }

    /// Fails when one more level would be deeper than [`MAX_DEPTH`].
    pub fn nest(&self, depth: usize) -> Result<(), Syntax> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        Ok(())
    }
}

/// `bytes.starts_with(prefix)` for the short prefixes field names are, eight bytes at
/// a time: the library's version calls `memcmp`, which costs more than the compare.
fn starts_with(bytes: &[u8], prefix: &[u8]) -> bool {
    if bytes.len() < prefix.len() {
        return false;
    }
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("eight bytes"));
    let mut a = bytes[..prefix.len()].chunks_exact(8);
    let mut b = prefix.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut b) {
        if word(x) != word(y) {
            return false;
        }
    }
    a.remainder().iter().zip(b.remainder()).all(|(x, y)| x == y)
}

/// `piece` as text, if it is valid UTF-8 (ASCII checked first: it is the common case
/// and a word at a time).
fn utf8(piece: &[u8]) -> Option<&str> {
    if piece.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(piece) })
    } else {
        std::str::from_utf8(piece).ok()
    }
}

/// The index of the first quote or backslash at or after `from` (the bytes' length if
/// none).
fn special(bytes: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of every x86-64 CPU.
        unsafe { special_sse2(bytes, from) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        special_scalar(bytes, from)
    }
}

fn special_scalar(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map_or(bytes.len(), |i| from + i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn special_sse2(bytes: &[u8], from: usize) -> usize {
    use std::arch::x86_64::*;
    let mut i = from;
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    while i + 16 <= bytes.len() {
        // SAFETY: `i + 16 <= len`, and an unaligned load reads exactly those 16 bytes.
        let chunk = unsafe { _mm_loadu_si128(bytes.as_ptr().add(i) as *const __m128i) };
        let hits = _mm_or_si128(
            _mm_cmpeq_epi8(chunk, quote),
            _mm_cmpeq_epi8(chunk, backslash),
        );
        let mask = _mm_movemask_epi8(hits);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    special_scalar(bytes, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sse2_scan_agrees_with_the_scalar_one_at_every_offset() {
        let mut bytes: Vec<u8> = (0..80u8).map(|i| b'a' + i % 26).collect();
        for special_at in [0, 5, 15, 16, 17, 31, 32, 47, 79] {
            for byte in [b'"', b'\\'] {
                let mut b = bytes.clone();
                b[special_at] = byte;
                for from in 0..=special_at {
                    assert_eq!(special(&b, from), special_at, "{special_at} {byte} {from}");
                    assert_eq!(special_scalar(&b, from), special_at);
                }
            }
        }
        bytes.push(0xc3);
        bytes.push(0xa9);
        assert_eq!(special(&bytes, 0), bytes.len());
    }

    #[test]
    fn strings_unescape_and_refuse_what_json_forbids() {
        let read = |text: &str| {
            let mut scratch = Vec::new();
            Scan::new(text.as_bytes())
                .string(&mut scratch)
                .map(str::to_string)
                .map_err(|e| e.what)
        };
        assert_eq!(read(r#""plain""#).unwrap(), "plain");
        assert_eq!(
            read(r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#).unwrap(),
            "a\"b\\c/\né😀"
        );
        assert_eq!(read("\"caf\u{e9}\"").unwrap(), "café");
        assert_eq!(read(r#""\ud83d""#).unwrap_err(), "lone leading surrogate");
        assert_eq!(read(r#""\ude00""#).unwrap_err(), "lone trailing surrogate");
        assert_eq!(read(r#""\x""#).unwrap_err(), "invalid escape");
        assert_eq!(read("\"a\tb\"").unwrap(), "a\tb");
        assert_eq!(read(r#""open"#).unwrap_err(), "truncated JSON value");
        let mut scratch = Vec::new();
        let invalid = [b'"', 0xc3, b'"'];
        assert!(Scan::new(&invalid).string(&mut scratch).is_err());
    }

    #[test]
    fn prefixes_compare_like_the_librarys() {
        let text = b"\"session_id\": \"abc\", \"a\": 1";
        for len in 0..=text.len() {
            for prefix in [&text[..len], b"\"session_ix\"", b"\"s", b"x"] {
                assert_eq!(starts_with(text, prefix), text.starts_with(prefix));
                assert_eq!(
                    starts_with(&text[..len], prefix),
                    text[..len].starts_with(prefix)
                );
            }
        }
    }

    #[test]
    fn numbers_follow_the_grammar() {
        let read = |text: &str| {
            let mut scan = Scan::new(text.as_bytes());
            scan.number()
                .map(|n| (n.text.to_string(), n.float))
                .and_then(|n| scan.end().map(|()| n))
        };
        assert_eq!(read("-12").unwrap(), ("-12".into(), false));
        assert_eq!(read("0.5e-3").unwrap(), ("0.5e-3".into(), true));
        assert_eq!(read("2E+2").unwrap(), ("2E+2".into(), true));
        for bad in ["01", "1.", ".5", "-", "1e", "+1", "0x1", "NaN"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skipping_checks_every_byte_and_bounds_the_depth() {
        let skip = |text: &str| {
            let mut scan = Scan::new(text.as_bytes());
            scan.skip(0).and_then(|()| scan.end())
        };
        assert!(skip(r#"{"a": [1, {"b": null}, "x", true], "c": {}}"#).is_ok());
        for bad in [r#"{"a": 1,}"#, "[1 2]", r#"{a: 1}"#, "[tru]", r#"{"a" 1}"#] {
            assert!(skip(bad).is_err(), "{bad}");
        }
        assert!(skip(&"[".repeat(MAX_DEPTH + 1)).unwrap_err().what == "nested too deeply");
    }
}
