//! A parser for Python literals, as the original chain gateway wrote its replies.
//!
//! The gateway published `str(reply)` instead of `json.dumps(reply)`: single-quoted
//! strings, `True`/`False`/`None`, and double quotes around any string that holds an
//! apostrophe (`"Operator's note"`). The original MES "parsed" that with
//! `replace("'", '"')`, which breaks on exactly those strings. This module tokenizes the
//! literal properly and yields the [`serde_json::Value`] that `json.dumps` would have
//! produced from the same Python object, so the rest of the codec sees one data model.
//!
//! Accepted: strings in single or double quotes with every escape Python's `repr` can
//! write (`\\ \' \" \n \r \t \a \b \f \v \ooo \xhh \uXXXX \UXXXXXXXX`, line
//! continuations) and the `u`/`r` prefixes; adjacent strings concatenated; integers
//! (with `_` separators), floats, `True`, `False`, `None`; lists, tuples (as arrays)
//! and dicts. As `json.dumps` does, non-string dict keys become strings. Also accepted,
//! so a JSON reply goes through the same path: `true`, `false`, `null`.
//!
//! Rejected with a [`SyntaxError`] that carries line and column: anything else
//! (sets, bytes, `inf`/`nan`, lone surrogates, integers beyond 64 bits, nesting deeper
//! than [`MAX_DEPTH`]). The parser never panics and never recurses past the limit.

use std::fmt;

use serde_json::{Map, Number, Value};

/// Deepest nesting of lists and dicts accepted, the same bound serde_json applies, so
/// hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Why a Python literal could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at line {line}, column {column}")]
pub struct SyntaxError {
    /// What was wrong.
    pub kind: SyntaxErrorKind,
    /// 1-based line of the offending character.
    pub line: usize,
    /// 1-based column (in characters) of the offending character.
    pub column: usize,
}

/// The kinds of [`SyntaxError`], so callers and tests can match on the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyntaxErrorKind {
    /// The input ended inside a value.
    UnexpectedEnd,
    /// A character that cannot start or continue a value here.
    UnexpectedChar(char),
    /// A string was not closed before the end of its line or of the input.
    UnterminatedString,
    /// A backslash escape Python would reject or that has no Unicode scalar value.
    InvalidEscape(String),
    /// A number that is malformed or does not fit in 64 bits.
    InvalidNumber(String),
    /// A bare word other than `True`, `False`, `None` (or JSON's spellings).
    UnknownName(String),
    /// A dict key that `json.dumps` could not write (a list, dict or tuple).
    InvalidKey,
    /// More than [`MAX_DEPTH`] nested lists and dicts.
    TooDeep,
    /// Input left over after the value.
    TrailingCharacters,
}

impl fmt::Display for SyntaxErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd => f.write_str("unexpected end of input"),
            Self::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            Self::UnterminatedString => f.write_str("unterminated string"),
            Self::InvalidEscape(e) => write!(f, "invalid escape {e}"),
            Self::InvalidNumber(n) => write!(f, "invalid number {n}"),
            Self::UnknownName(n) => write!(f, "unknown name {n}"),
            Self::InvalidKey => f.write_str("dict key must be a string, number, bool or None"),
            Self::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH}"),
            Self::TrailingCharacters => f.write_str("trailing characters after the value"),
        }
    }
}

/// Parses one Python literal into the value `json.dumps` would write for it.
///
/// ```
/// let v = mes_codec::pylit::parse("[{'auth': 'T'}, {'message': \"Operator's order\", 'ok': True}]").unwrap();
/// assert_eq!(v, serde_json::json!([{"auth": "T"}, {"message": "Operator's order", "ok": true}]));
/// ```
pub fn parse(input: &str) -> Result<Value, SyntaxError> {
    let mut parser = Parser { src: input, pos: 0 };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos < input.len() {
        return Err(parser.error(SyntaxErrorKind::TrailingCharacters));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread character; always on a char boundary.
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, skip: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(skip)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, kind: SyntaxErrorKind) -> SyntaxError {
        self.error_at(self.pos, kind)
    }

    fn error_at(&self, pos: usize, kind: SyntaxErrorKind) -> SyntaxError {
        let before = &self.src[..pos.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SyntaxError { kind, line, column }
    }

    fn unexpected(&self) -> SyntaxError {
        match self.peek() {
            Some(c) => self.error(SyntaxErrorKind::UnexpectedChar(c)),
            None => self.error(SyntaxErrorKind::UnexpectedEnd),
        }
    }

    /// Skips whitespace, comments and backslash line continuations, as Python's
    /// tokenizer does between tokens.
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | '\r' | '\x0c' | '\u{feff}' => {
                    self.bump();
                }
                '#' => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '\\' if matches!(self.peek_at(1), Some('\n')) => {
                    self.pos += 2;
                }
                _ => break,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        match self.peek() {
            None => Err(self.error(SyntaxErrorKind::UnexpectedEnd)),
            Some('[') => self.sequence(depth, ']'),
            Some('(') => self.sequence(depth, ')'),
            Some('{') => self.dict(depth),
            Some('\'' | '"') => self.strings().map(Value::String),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => self.word(),
            Some(_) => Err(self.unexpected()),
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, SyntaxError> {
        if depth >= MAX_DEPTH {
            Err(self.error(SyntaxErrorKind::TooDeep))
        } else {
            Ok(depth + 1)
        }
    }

    /// A list `[...]` or a tuple `(...)`; both become JSON arrays, as in `json.dumps`.
    fn sequence(&mut self, depth: usize, close: char) -> Result<Value, SyntaxError> {
        let depth = self.enter(depth)?;
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {}
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        let depth = self.enter(depth)?;
        self.bump();
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(Value::Object(map));
            }
            let key_pos = self.pos;
            let key = match self.value(depth)? {
                Value::String(s) => s,
                // json.dumps writes these keys as strings; do the same.
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_owned(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(self.error_at(key_pos, SyntaxErrorKind::InvalidKey));
                }
            };
            self.skip_ws();
            if self.peek() != Some(':') {
                return Err(self.unexpected());
            }
            self.bump();
            self.skip_ws();
            let value = self.value(depth)?;
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {}
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn word(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let word = &self.src[start..self.pos];
        match word {
            "True" | "true" => Ok(Value::Bool(true)),
            "False" | "false" => Ok(Value::Bool(false)),
            "None" | "null" => Ok(Value::Null),
            // String prefixes: u'..' is a plain string, r'..' a raw one.
            "u" | "U" | "r" | "R" | "ur" | "UR" | "Ur" | "uR"
                if matches!(self.peek(), Some('\'' | '"')) =>
            {
                self.pos = start;
                self.strings().map(Value::String)
            }
            _ => Err(self.error_at(start, SyntaxErrorKind::UnknownName(preview(word)))),
        }
    }

    /// One string literal, or several adjacent ones (`'a' "b"` is `'ab'` in Python).
    fn strings(&mut self) -> Result<String, SyntaxError> {
        let mut out = String::new();
        loop {
            self.string_into(&mut out)?;
            let save = self.pos;
            self.skip_ws();
            let next_is_string = match self.peek() {
                Some('\'' | '"') => true,
                Some('u' | 'U' | 'r' | 'R') => {
                    let mut i = 1;
                    while matches!(self.peek_at(i), Some('u' | 'U' | 'r' | 'R')) && i < 2 {
                        i += 1;
                    }
                    matches!(self.peek_at(i), Some('\'' | '"'))
                }
                _ => false,
            };
            if !next_is_string {
                self.pos = save;
                return Ok(out);
            }
        }
    }

    fn string_into(&mut self, out: &mut String) -> Result<(), SyntaxError> {
        let mut raw = false;
        while let Some(c @ ('u' | 'U' | 'r' | 'R')) = self.peek() {
            raw |= matches!(c, 'r' | 'R');
            self.bump();
        }
        let start = self.pos;
        let Some(quote @ ('\'' | '"')) = self.bump() else {
            return Err(self.error_at(start, SyntaxErrorKind::UnterminatedString));
        };
        if self.src[self.pos..].starts_with([quote, quote]) {
            // '' is the empty string; ''' would open a triple-quoted string, which
            // no repr() ever writes.
            if self.src[self.pos + 1..].starts_with(quote) {
                return Err(self.error_at(start, SyntaxErrorKind::UnexpectedChar(quote)));
            }
        }
        loop {
            let Some(c) = self.bump() else {
                return Err(self.error_at(start, SyntaxErrorKind::UnterminatedString));
            };
            match c {
                c if c == quote => return Ok(()),
                '\n' | '\r' => {
                    return Err(self.error_at(start, SyntaxErrorKind::UnterminatedString));
                }
                '\\' if raw => {
                    // Raw strings keep the backslash, but it still protects the quote.
                    out.push('\\');
                    match self.bump() {
                        Some(n) => out.push(n),
                        None => {
                            return Err(self.error_at(start, SyntaxErrorKind::UnterminatedString));
                        }
                    }
                }
                '\\' => self.escape_into(out)?,
                c => out.push(c),
            }
        }
    }

    fn escape_into(&mut self, out: &mut String) -> Result<(), SyntaxError> {
        let at = self.pos - 1;
        let Some(c) = self.bump() else {
            return Err(self.error_at(at, SyntaxErrorKind::UnterminatedString));
        };
        let ch = match c {
            '\n' => return Ok(()),
            '\\' => '\\',
            '\'' => '\'',
            '"' => '"',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '0'..='7' => {
                let mut code = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            code = code * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                self.scalar(code, at)?
            }
            'x' => self.hex_escape(2, at)?,
            'u' => self.hex_escape(4, at)?,
            'U' => self.hex_escape(8, at)?,
            // Python keeps unknown escapes as written (`'\d'` is backslash, d).
            other => {
                out.push('\\');
                other
            }
        };
        out.push(ch);
        Ok(())
    }

    fn hex_escape(&mut self, digits: usize, at: usize) -> Result<char, SyntaxError> {
        let start = self.pos;
        let mut code: u32 = 0;
        for _ in 0..digits {
            match self.peek().and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    code = code.saturating_mul(16).saturating_add(d);
                    self.bump();
                }
                None => {
                    let seen = &self.src[at..self.pos];
                    return Err(self.error_at(at, SyntaxErrorKind::InvalidEscape(preview(seen))));
                }
            }
        }
        debug_assert!(self.pos > start);
        self.scalar(code, at)
    }

    fn scalar(&self, code: u32, at: usize) -> Result<char, SyntaxError> {
        char::from_u32(code).ok_or_else(|| {
            let seen = &self.src[at..self.pos];
            self.error_at(at, SyntaxErrorKind::InvalidEscape(preview(seen)))
        })
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.bump();
            self.skip_ws();
        }
        let sign_end = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
            || (matches!(self.peek(), Some('+' | '-'))
                && matches!(self.src[..self.pos].chars().last(), Some('e' | 'E'))
                && !self.src[sign_end..self.pos].starts_with("0x"))
        {
            self.bump();
        }
        let negative = self.src[start..sign_end].starts_with('-');
        let body: String = self.src[sign_end..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let bad = || {
            self.error_at(
                start,
                SyntaxErrorKind::InvalidNumber(preview(&self.src[start..self.pos])),
            )
        };
        if body.is_empty()
            || self.src[sign_end..self.pos].starts_with('_')
            || self.src[sign_end..self.pos].ends_with('_')
            || self.src[sign_end..self.pos].contains("__")
        {
            return Err(bad());
        }
        let is_float =
            !body.starts_with("0x") && !body.starts_with("0X") && body.contains(['.', 'e', 'E']);
        if is_float {
            if !body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
            {
                return Err(bad());
            }
            let parsed: f64 = body.parse().map_err(|_| bad())?;
            let parsed = if negative { -parsed } else { parsed };
            return Number::from_f64(parsed).map(Value::Number).ok_or_else(bad);
        }
        let (digits, radix) = match body.get(..2) {
            Some("0x" | "0X") => (&body[2..], 16),
            Some("0o" | "0O") => (&body[2..], 8),
            Some("0b" | "0B") => (&body[2..], 2),
            _ => {
                // Python 3 forbids leading zeros in decimal integers ("010").
                if body.len() > 1 && body.starts_with('0') && body.chars().any(|c| c != '0') {
                    return Err(bad());
                }
                (body.as_str(), 10)
            }
        };
        if digits.is_empty() || digits.starts_with(['+', '-']) {
            return Err(bad());
        }
        let magnitude = u64::from_str_radix(digits, radix).map_err(|_| bad())?;
        if negative {
            if magnitude == 1 << 63 {
                return Ok(Value::Number(Number::from(i64::MIN)));
            }
            let m = i64::try_from(magnitude).map_err(|_| bad())?;
            Ok(Value::Number(Number::from(-m)))
        } else {
            Ok(Value::Number(Number::from(magnitude)))
        }
    }
}

/// Writes a value as Python's `repr` would write the equivalent object: single-quoted
/// strings (double quotes when the text holds an apostrophe and no double quote),
/// `True`/`False`/`None`. The simulator uses it to reply like the original gateway.
///
/// ```
/// let v = serde_json::json!([{"auth": "T"}, {"message": "Operator's order", "ok": true}]);
/// assert_eq!(
///     mes_codec::pylit::to_string(&v),
///     r#"[{'auth': 'T'}, {'message': "Operator's order", 'ok': True}]"#
/// );
/// ```
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => {
                out.push_str(&format!("{f:.1}"));
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// At most 40 characters of `s`, so an error never echoes a hostile megabyte.
fn preview(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn kind(input: &str) -> SyntaxErrorKind {
        parse(input).unwrap_err().kind
    }

    #[test]
    fn scalars() {
        assert_eq!(parse("True").unwrap(), json!(true));
        assert_eq!(parse("False").unwrap(), json!(false));
        assert_eq!(parse("None").unwrap(), json!(null));
        assert_eq!(parse("0").unwrap(), json!(0));
        assert_eq!(parse("-17").unwrap(), json!(-17));
        assert_eq!(parse("1_000").unwrap(), json!(1000));
        assert_eq!(parse("0x1F").unwrap(), json!(31));
        assert_eq!(parse("1.5").unwrap(), json!(1.5));
        assert_eq!(parse("-2.5e3").unwrap(), json!(-2500.0));
        assert_eq!(parse("1e-3").unwrap(), json!(0.001));
        assert_eq!(parse("- 3").unwrap(), json!(-3));
        assert_eq!(parse("18446744073709551615").unwrap(), json!(u64::MAX));
        assert_eq!(parse("-9223372036854775808").unwrap(), json!(i64::MIN));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            parse(r#""Operator's note""#).unwrap(),
            json!("Operator's note")
        );
        assert_eq!(
            parse(r"'Operator\'s note'").unwrap(),
            json!("Operator's note")
        );
        assert_eq!(parse(r#"'say "hi"'"#).unwrap(), json!("say \"hi\""));
        assert_eq!(parse(r"'a\nb\tc\\d'").unwrap(), json!("a\nb\tc\\d"));
        assert_eq!(
            parse(r"'\x41\u00e9\U0001F600\101\0'").unwrap(),
            json!("Aé😀A\0")
        );
        assert_eq!(parse(r"'\d'").unwrap(), json!("\\d"));
        assert_eq!(parse(r"r'\n'").unwrap(), json!("\\n"));
        assert_eq!(parse("u'caf\u{e9}'").unwrap(), json!("café"));
        assert_eq!(parse("'a' \"b\" 'c'").unwrap(), json!("abc"));
        assert_eq!(parse("''").unwrap(), json!(""));
        assert_eq!(parse("'ação ✓'").unwrap(), json!("ação ✓"));
        assert_eq!(parse("'a\\\nb'").unwrap(), json!("ab"));
    }

    #[test]
    fn containers() {
        let v = parse("{'a': [1, (2, 3), {}], 'b': {'c': None,},  1: 'x', None: True, }").unwrap();
        assert_eq!(
            v,
            json!({"a": [1, [2, 3], {}], "b": {"c": null}, "1": "x", "null": true})
        );
        assert_eq!(parse("[]").unwrap(), json!([]));
        assert_eq!(parse("()").unwrap(), json!([]));
        assert_eq!(parse(" [ 1 , 2 ] ").unwrap(), json!([1, 2]));
    }

    #[test]
    fn json_is_accepted_too() {
        let text = r#"[{"auth": "T"}, {"data": [true, false, null, 1.25, "x"]}]"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn errors_are_typed_and_located() {
        assert_eq!(kind(""), SyntaxErrorKind::UnexpectedEnd);
        assert_eq!(kind("[1, 2"), SyntaxErrorKind::UnexpectedEnd);
        assert_eq!(kind("'abc"), SyntaxErrorKind::UnterminatedString);
        assert_eq!(kind("'ab\ncd'"), SyntaxErrorKind::UnterminatedString);
        assert_eq!(kind("{1, 2}"), SyntaxErrorKind::UnexpectedChar(','));
        assert_eq!(kind("b'x'"), SyntaxErrorKind::UnknownName("b".into()));
        assert_eq!(kind("inf"), SyntaxErrorKind::UnknownName("inf".into()));
        assert_eq!(kind("[1] 2"), SyntaxErrorKind::TrailingCharacters);
        assert_eq!(kind("{[1]: 2}"), SyntaxErrorKind::InvalidKey);
        assert!(matches!(kind("'\\x4'"), SyntaxErrorKind::InvalidEscape(_)));
        assert!(matches!(
            kind("'\\ud800'"),
            SyntaxErrorKind::InvalidEscape(_)
        ));
        assert!(matches!(
            kind("'\\U00110000'"),
            SyntaxErrorKind::InvalidEscape(_)
        ));
        assert!(matches!(
            kind("99999999999999999999"),
            SyntaxErrorKind::InvalidNumber(_)
        ));
        assert!(matches!(kind("010"), SyntaxErrorKind::InvalidNumber(_)));
        assert!(matches!(kind("1__0"), SyntaxErrorKind::InvalidNumber(_)));
        assert!(matches!(kind("1.2.3"), SyntaxErrorKind::InvalidNumber(_)));
        assert!(matches!(kind("-"), SyntaxErrorKind::InvalidNumber(_)));
        assert_eq!(kind("'''x'''"), SyntaxErrorKind::UnexpectedChar('\''));
        let e = parse("[1,\n  @]").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(100_000);
        assert_eq!(kind(&deep), SyntaxErrorKind::TooDeep);
        let deep_dict = "{'a': ".repeat(MAX_DEPTH + 1);
        assert_eq!(kind(&deep_dict), SyntaxErrorKind::TooDeep);
    }

    #[test]
    fn repr_round_trips() {
        let v = json!([{"auth": "T"}, {"data": [{"s": "it's \"q\" \\ \n\u{1}é", "f": 1.0, "g": 0.25, "n": -3, "b": false, "z": null}]}]);
        let text = to_string(&v);
        assert!(text.contains("'auth': 'T'"), "{text}");
        assert!(text.contains("1.0") && text.contains("False") && text.contains("None"));
        assert_eq!(parse(&text).unwrap(), v);
        assert_eq!(to_string(&json!("it's")), "\"it's\"");
        assert_eq!(to_string(&json!("a'b\"c")), "'a\\'b\"c'");
    }

    #[test]
    fn errors_do_not_echo_huge_input() {
        let word = "x".repeat(1_000_000);
        let e = parse(&word).unwrap_err();
        assert!(e.to_string().len() < 200);
    }
}
