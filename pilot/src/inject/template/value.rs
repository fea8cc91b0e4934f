//! Go's view of JSON values: how `fmt` prints them (`%v`, `%q`), what is true, how
//! values compare, and the Go type names that appear in error messages.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// A value while a template runs: Go's "no value" (a missing map key) is not nil.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A missing key: prints as `<no value>`, is false, and becomes nil when passed to
    /// a function.
    Missing,
    Value(Value),
}

impl Val {
    /// The value a function receives: nil for a missing one.
    pub fn into_value(self) -> Value {
        match self {
            Val::Missing => Value::Null,
            Val::Value(v) => v,
        }
    }

    pub fn as_value(&self) -> &Value {
        const NULL: Value = Value::Null;
        match self {
            Val::Missing => &NULL,
            Val::Value(v) => v,
        }
    }
}

/// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The Go type a decoded JSON value has, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// `fmt.Sprint(v)`: `%v`.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    write_v(&mut out, v);
    out
}

pub fn write_v(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_v(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Go prints maps with their keys sorted; serde_json's map is sorted already.
            out.push_str("map[");
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_v(out, item);
            }
            out.push(']');
        }
    }
}

/// A number as Go prints it: integers in decimal, floats as `%v` does (shortest
/// digits, exponent form from 1e6 on and below 1e-4: `1e+06`).
pub fn number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    float(n.as_f64().unwrap_or(0.0))
}

/// `strconv.FormatFloat(f, 'g', -1, 64)`, which `fmt`'s `%v` uses: exponent form when
/// the decimal exponent is below -4 or at least 6.
pub fn float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `eq` for one pair: basic values of the same kind compare; nil equals only nil;
/// anything else is an error.
pub fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Null, Value::Null) => Ok(true),
        (Value::Null, _) | (_, Value::Null) => Ok(false),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::String(x), Value::String(y)) => Ok(x == y),
        (Value::Number(x), Value::Number(y)) => Ok(compare_numbers(x, y) == Ordering::Equal),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => Err(
            format!("non-comparable types {}: {}", type_name(a), type_name(b)),
        ),
        _ => Err("incompatible types for comparison".to_owned()),
    }
}

/// Go's `lt` family: numbers with numbers, strings with strings.
pub fn order(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => Ok(compare_numbers(x, y)),
        (Value::Null, _)
        | (_, Value::Null)
        | (Value::Bool(_), _)
        | (_, Value::Bool(_))
        | (Value::Array(_) | Value::Object(_), _)
        | (_, Value::Array(_) | Value::Object(_)) => Err("invalid type for comparison".to_owned()),
        _ => Err("incompatible types for comparison".to_owned()),
    }
}

fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Less)
        }
    }
}

/// A number as an integer, when it is one (floats with no fraction count: JSON decoded
/// by Go is all float64).
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// The JSON name of a Go field of a Kubernetes or proto type: its leading capitals
/// lowered, but the last of a run that starts a word (`APIVersion` → `apiVersion`,
/// `HostIP` → `hostIP`, `Spec` → `spec`).
pub fn json_name(go: &str) -> String {
    let chars: Vec<char> = go.chars().collect();
    let run = chars.iter().take_while(|c| c.is_uppercase()).count();
    let lower = if run > 1 && run < chars.len() && chars[run].is_lowercase() {
        run - 1
    } else {
        run
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < lower {
                c.to_lowercase().next().unwrap_or(*c)
            } else {
                *c
            }
        })
        .collect()
}
