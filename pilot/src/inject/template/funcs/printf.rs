//! `printf`: Go's `fmt.Sprintf` for the verbs templates use — `%v %s %d %q %t %x %f %%`
//! with flags (`-`, `0`, `+`, space), width and precision — and Go's marks for a bad
//! verb (`%!d(string=x)`), a missing operand (`%!s(MISSING)`) and extra operands.

use serde_json::Value;

use super::super::value::{self, as_int, quote, type_name};
use super::super::Context;
use super::{at_least, string};

pub fn printf(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("printf", &args, 1)?;
    let format = string("printf", &args[0])?;
    Ok(Value::String(sprintf(format, &args[1..])))
}

#[derive(Default)]
struct Spec {
    minus: bool,
    zero: bool,
    plus: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf(format, args...)`.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '0' => spec.zero = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let text = match format_one(verb, arg, &spec) {
            Some(text) => text,
            None => {
                out.push_str(&bad_verb(verb, arg));
                continue;
            }
        };
        out.push_str(&pad(text, &spec, matches!(verb, 'd' | 'f' | 'x' | 'X')));
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", type_name(a), value::to_string(a)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    n
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Null => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", type_name(arg), value::to_string(arg)),
    }
}

fn format_one(verb: char, arg: &Value, spec: &Spec) -> Option<String> {
    match verb {
        'v' => Some(value::to_string(arg)),
        's' => strings(arg, spec.precision),
        'q' => match arg {
            Value::String(s) => Some(quote(s)),
            _ => None,
        },
        't' => arg.as_bool().map(|b| b.to_string()),
        'd' => as_int(arg).map(|i| signed(i.to_string(), i >= 0, spec)),
        'x' | 'X' => {
            let s = match arg {
                Value::String(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                _ => {
                    let i = as_int(arg)?;
                    let hex = format!("{:x}", i.unsigned_abs());
                    if i < 0 {
                        format!("-{hex}")
                    } else {
                        hex
                    }
                }
            };
            Some(if verb == 'X' { s.to_uppercase() } else { s })
        }
        'f' | 'F' => {
            let f = arg.as_f64()?;
            let text = format!("{:.*}", spec.precision.unwrap_or(6), f);
            Some(signed(text, f >= 0.0, spec))
        }
        _ => None,
    }
}

/// `%s`: strings as they are, lists and maps element by element, anything else a bad
/// verb.
fn strings(arg: &Value, precision: Option<usize>) -> Option<String> {
    match arg {
        Value::String(s) => Some(match precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.clone(),
        }),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(|v| strings(v, precision)).collect();
            Some(format!("[{}]", parts?.join(" ")))
        }
        _ => None,
    }
}

fn signed(text: String, non_negative: bool, spec: &Spec) -> String {
    if non_negative && spec.plus {
        format!("+{text}")
    } else if non_negative && spec.space {
        format!(" {text}")
    } else {
        text
    }
}

fn pad(text: String, spec: &Spec, numeric: bool) -> String {
    let Some(width) = spec.width else {
        return text;
    };
    let len = text.chars().count();
    if len >= width {
        return text;
    }
    let fill = width - len;
    if spec.minus {
        format!("{text}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        let (sign, digits) = match text.strip_prefix(['-', '+', ' ']) {
            Some(rest) => (&text[..1], rest),
            None => ("", text.as_str()),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else if spec.zero {
        format!("{}{text}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}
