//! The lexer: text and `{{ }}` actions into tokens, each with its line. Whitespace
//! trimming (`{{- ` and ` -}}`) is applied here, to the neighbouring text, and comments
//! are dropped, so the parser never sees either.

use super::Error;

/// One token of an action, or a run of text between actions.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Text(String),
    /// `{{` (after trimming).
    Open,
    /// `}}`.
    Close,
    /// An identifier: a keyword or a function name.
    Ident(String),
    /// `.Name`, without the dot.
    Field(String),
    /// `$` or `$name`, with the `$`.
    Variable(String),
    Dot,
    Str(String),
    Number(serde_json::Number),
    Bool(bool),
    Nil,
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub kind: Kind,
    pub line: usize,
    /// Whether whitespace separates this token from the previous one: a field right
    /// after a term (`$x.y`, `(f).y`) continues it, after a space it is an argument.
    pub spaced: bool,
}

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    name: &'a str,
    src: &'a str,
    pos: usize,
    line: usize,
    tokens: Vec<Token>,
    /// A ` -}}` was seen: the next text loses its leading whitespace.
    trim_next: bool,
}

/// Splits `src` (the template `name`) into tokens.
pub(super) fn lex(name: &str, src: &str) -> Result<Vec<Token>, Error> {
    let mut lexer = Lexer {
        name,
        src,
        pos: 0,
        line: 1,
        tokens: Vec::new(),
        trim_next: false,
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

impl Lexer<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::parse(self.name, self.line, message)
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn push(&mut self, kind: Kind, spaced: bool) {
        self.tokens.push(Token {
            kind,
            line: self.line,
            spaced,
        });
    }

    /// Moves past `n` bytes, counting newlines.
    fn advance(&mut self, n: usize) {
        self.line += self.src[self.pos..self.pos + n].matches('\n').count();
        self.pos += n;
    }

    fn run(&mut self) -> Result<(), Error> {
        while self.pos < self.src.len() {
            let (text_len, trim_left) = match self.rest().find(OPEN) {
                Some(i) => {
                    let after = &self.rest()[i + OPEN.len()..];
                    (
                        i,
                        after.starts_with("- ")
                            || after.starts_with("-\t")
                            || after.starts_with("-\n")
                            || after.starts_with("-\r"),
                    )
                }
                None => (self.rest().len(), false),
            };
            let trim_right = std::mem::take(&mut self.trim_next);
            let mut text = &self.src[self.pos..self.pos + text_len];
            let line = self.line;
            if trim_right {
                text = text.trim_start_matches(is_space);
            }
            if trim_left {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.tokens.push(Token {
                    kind: Kind::Text(text.to_owned()),
                    line,
                    spaced: false,
                });
            }
            self.advance(text_len);
            if self.pos >= self.src.len() {
                break;
            }
            self.advance(OPEN.len() + if trim_left { 2 } else { 0 });
            self.action()?;
        }
        Ok(())
    }

    /// Whether the action closes here (`}}` or ` -}}`); consumes the delimiter.
    fn close(&mut self) -> Option<bool> {
        let rest = self.rest();
        if rest.starts_with(CLOSE) {
            self.advance(CLOSE.len());
            return Some(false);
        }
        let spaces = rest.len() - rest.trim_start_matches(is_space).len();
        if spaces > 0 && rest[spaces..].starts_with("-}}") {
            self.advance(spaces + 3);
            self.trim_next = true;
            return Some(true);
        }
        None
    }

    fn action(&mut self) -> Result<(), Error> {
        // A comment is the whole action: `{{/* ... */}}`, trim markers allowed.
        let spaces = self.rest().len() - self.rest().trim_start_matches(is_space).len();
        if self.rest()[spaces..].starts_with("/*") {
            let Some(end) = self.rest()[spaces..].find("*/") else {
                return Err(self.error("unclosed comment"));
            };
            self.advance(spaces + end + 2);
            if self.close().is_none() {
                return Err(self.error("comment ends before closing delimiter"));
            }
            return Ok(());
        }
        self.push(Kind::Open, false);
        let mut spaced = true;
        let mut depth = 0usize;
        loop {
            if self.close().is_some() {
                if depth > 0 {
                    return Err(self.error("unclosed left paren"));
                }
                self.push(Kind::Close, spaced);
                return Ok(());
            }
            let Some(c) = self.rest().chars().next() else {
                return Err(self.error("unclosed action"));
            };
            if is_space(c) {
                let n = self.rest().len() - self.rest().trim_start_matches(is_space).len();
                self.advance(n);
                spaced = true;
                continue;
            }
            let kind = match c {
                '|' => self.single(Kind::Pipe),
                ',' => self.single(Kind::Comma),
                '(' => {
                    depth += 1;
                    self.single(Kind::LParen)
                }
                ')' => {
                    if depth == 0 {
                        return Err(self.error("unexpected right paren"));
                    }
                    depth -= 1;
                    self.single(Kind::RParen)
                }
                '=' => self.single(Kind::Assign),
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return Err(self.error("expected :="));
                    }
                    self.advance(2);
                    Kind::Declare
                }
                '"' => Kind::Str(self.quoted()?),
                '`' => Kind::Str(self.raw()?),
                '\'' => self.char_constant()?,
                '$' => {
                    let n = 1 + self.alnum_len(1);
                    let name = self.rest()[..n].to_owned();
                    self.advance(n);
                    Kind::Variable(name)
                }
                '.' => {
                    let n = self.alnum_len(1);
                    if n == 0 {
                        if self.rest()[1..].starts_with(|c: char| c.is_ascii_digit()) {
                            self.number()?
                        } else {
                            self.single(Kind::Dot)
                        }
                    } else {
                        let name = self.rest()[1..1 + n].to_owned();
                        self.advance(1 + n);
                        Kind::Field(name)
                    }
                }
                '+' | '-' | '0'..='9' => self.number()?,
                c if is_alnum(c) => {
                    let n = self.alnum_len(0);
                    let word = self.rest()[..n].to_owned();
                    self.advance(n);
                    match word.as_str() {
                        "true" => Kind::Bool(true),
                        "false" => Kind::Bool(false),
                        "nil" => Kind::Nil,
                        _ => Kind::Ident(word),
                    }
                }
                c => return Err(self.error(format!("unrecognized character in action: {c:?}"))),
            };
            self.push(kind, spaced);
            spaced = false;
        }
    }

    fn single(&mut self, kind: Kind) -> Kind {
        self.advance(1);
        kind
    }

    /// Length of the run of identifier characters from byte `from` of the rest.
    fn alnum_len(&self, from: usize) -> usize {
        let tail = &self.rest()[from..];
        tail.len() - tail.trim_start_matches(is_alnum).len()
    }

    fn quoted(&mut self) -> Result<String, Error> {
        let body = &self.rest()[1..];
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.advance(i + 2);
                    return Ok(out);
                }
                '\n' => break,
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    let simple = match e {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'r' => Some('\r'),
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        'f' => Some('\x0c'),
                        'v' => Some('\x0b'),
                        '\\' => Some('\\'),
                        '"' => Some('"'),
                        '\'' => Some('\''),
                        _ => None,
                    };
                    if let Some(s) = simple {
                        out.push(s);
                        continue;
                    }
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        'U' => 8,
                        _ => return Err(self.error(format!("invalid escape \\{e} in string"))),
                    };
                    let hex: String = chars.by_ref().take(digits).map(|(_, c)| c).collect();
                    let ch = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == digits)
                        .and_then(char::from_u32)
                        .ok_or_else(|| {
                            self.error(format!("invalid escape \\{e}{hex} in string"))
                        })?;
                    out.push(ch);
                }
                c => out.push(c),
            }
        }
        Err(self.error("unterminated quoted string"))
    }

    fn raw(&mut self) -> Result<String, Error> {
        let Some(end) = self.rest()[1..].find('`') else {
            return Err(self.error("unterminated raw quoted string"));
        };
        let s = self.rest()[1..1 + end].to_owned();
        self.advance(end + 2);
        Ok(s)
    }

    fn char_constant(&mut self) -> Result<Kind, Error> {
        let mut chars = self.rest()[1..].chars();
        let (c, len) = match chars.next() {
            Some('\\') => match chars.next() {
                Some('n') => ('\n', 2),
                Some('t') => ('\t', 2),
                Some('\\') => ('\\', 2),
                Some('\'') => ('\'', 2),
                _ => return Err(self.error("unsupported character constant escape")),
            },
            Some(c) => (c, c.len_utf8()),
            None => return Err(self.error("unterminated character constant")),
        };
        if !self.rest()[1 + len..].starts_with('\'') {
            return Err(self.error("unterminated character constant"));
        }
        self.advance(len + 2);
        Ok(Kind::Number(u32::from(c).into()))
    }

    /// Go number syntax: sign, decimal/hex/octal/binary integers with `_`, floats with
    /// exponents.
    fn number(&mut self) -> Result<Kind, Error> {
        let rest = self.rest();
        let mut n = 0;
        let bytes = rest.as_bytes();
        if matches!(bytes.first(), Some(b'+' | b'-')) {
            n = 1;
        }
        while n < bytes.len() {
            let b = bytes[n];
            let exp_sign = matches!(b, b'+' | b'-')
                && n > 0
                && matches!(bytes[n - 1], b'e' | b'E' | b'p' | b'P')
                && !rest[..n].starts_with("0x")
                && !rest[..n].starts_with("-0x")
                && !rest[..n].starts_with("+0x");
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exp_sign {
                n += 1;
            } else {
                break;
            }
        }
        let text = &rest[..n];
        let number =
            parse_number(text).ok_or_else(|| self.error(format!("bad number syntax: {text:?}")))?;
        self.advance(n);
        Ok(Kind::Number(number))
    }
}

fn parse_number(text: &str) -> Option<serde_json::Number> {
    let clean = text.replace('_', "");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ]
    .iter()
    .find_map(|(p, r)| digits.strip_prefix(p).map(|d| (d, *r)));
    let integer = match radix {
        Some((d, r)) => i64::from_str_radix(d, r).ok(),
        None if digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            i64::from_str_radix(&digits[1..], 8).ok()
        }
        None => digits.parse::<i64>().ok(),
    };
    if let Some(i) = integer {
        return Some(if negative { -i } else { i }.into());
    }
    if radix.is_some() {
        return None;
    }
    let f: f64 = clean.parse().ok()?;
    serde_json::Number::from_f64(f)
}
