//! The Sprig functions (Masterminds/sprig v3, `TxtFuncMap`) that injector templates use,
//! with Sprig's argument order (`default DEFAULT VALUE`, `trimAll CUTSET STRING`, `join
//! SEP LIST`) so a pipeline passes the value last.

use base64::Engine;
use serde_json::{Map, Value};

use super::super::value::{self, as_int, quote, truthy};
use super::super::Context;
use super::{arity, at_least, int, string, Func};

pub const FUNCS: &[(&str, Func)] = &[
    ("default", default),
    ("empty", empty),
    ("coalesce", coalesce),
    ("ternary", ternary),
    ("quote", quote_fn),
    ("squote", squote),
    ("nindent", nindent),
    ("toJson", to_json),
    ("toPrettyJson", to_pretty_json),
    ("toString", to_string),
    ("hasKey", has_key),
    ("keys", keys),
    ("dict", dict),
    ("get", get),
    ("set", set),
    ("list", list),
    ("append", append),
    ("push", append),
    ("first", first),
    ("last", last),
    ("has", has),
    ("contains", contains),
    ("hasPrefix", has_prefix),
    ("hasSuffix", has_suffix),
    ("trimPrefix", trim_prefix),
    ("trimSuffix", trim_suffix),
    ("trim", trim),
    ("trimAll", trim_all),
    ("lower", lower),
    ("upper", upper),
    ("replace", replace),
    ("split", split),
    ("splitList", split_list),
    ("join", join),
    ("trunc", trunc),
    ("repeat", repeat),
    ("kindIs", kind_is),
    ("kindOf", kind_of),
    ("typeOf", type_of),
    ("b64enc", b64enc),
    ("b64dec", b64dec),
    ("int", to_int),
    ("int64", to_int),
    ("add", add),
    ("add1", add1),
    ("sub", sub),
    ("mul", mul),
    ("regexMatch", regex_match),
    ("regexReplaceAll", regex_replace_all),
];

/// Sprig's `empty`: nil, false, 0, and empty strings, lists and maps.
pub fn is_empty(v: &Value) -> bool {
    !truthy(v)
}

/// Sprig's `strval`: strings as they are, anything else as `%v` prints it.
pub fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => value::to_string(other),
    }
}

fn s(v: String) -> Result<Value, String> {
    Ok(Value::String(v))
}

fn default(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("default", &args, 1)?;
    let mut args = args.into_iter();
    let fallback = args.next().unwrap_or_default();
    Ok(match args.next() {
        Some(given) if !is_empty(&given) => given,
        _ => fallback,
    })
}

fn empty(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("empty", &args, 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    Ok(args
        .into_iter()
        .find(|v| !is_empty(v))
        .unwrap_or(Value::Null))
}

fn ternary(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("ternary", &args, 3)?;
    let mut args = args.into_iter();
    let (yes, no) = (
        args.next().unwrap_or_default(),
        args.next().unwrap_or_default(),
    );
    match args.next() {
        Some(Value::Bool(b)) => Ok(if b { yes } else { no }),
        other => Err(format!(
            "ternary: condition must be a bool, got {}",
            value::to_string(&other.unwrap_or_default())
        )),
    }
}

fn quote_fn(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !v.is_null())
        .map(|v| quote(&strval(v)))
        .collect();
    s(parts.join(" "))
}

fn squote(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !v.is_null())
        .map(|v| format!("'{}'", strval(v)))
        .collect();
    s(parts.join(" "))
}

/// Sprig's `indent`, every line indented (Istio's own `indent` replaces it in the map,
/// but `nindent` keeps Sprig's).
pub fn indent_all(spaces: usize, text: &str) -> String {
    let pad = " ".repeat(spaces);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

fn nindent(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("nindent", &args, 2)?;
    let n = usize::try_from(int("nindent", &args[0])?).unwrap_or(0);
    s(format!("\n{}", indent_all(n, &strval(&args[1]))))
}

/// `json.Marshal`: keys sorted (serde_json's map is), and `<`, `>`, `&`, U+2028 and
/// U+2029 escaped as Go escapes them.
pub fn go_json(v: &Value, pretty: bool) -> String {
    let raw = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    raw.unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn to_json(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toJson", &args, 1)?;
    s(go_json(&args[0], false))
}

fn to_pretty_json(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toPrettyJson", &args, 1)?;
    s(go_json(&args[0], true))
}

fn to_string(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toString", &args, 1)?;
    s(strval(&args[0]))
}

fn has_key(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("hasKey", &args, 2)?;
    let key = string("hasKey", &args[1])?;
    Ok(Value::Bool(
        args[0].as_object().is_some_and(|m| m.contains_key(key)),
    ))
}

fn keys(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for m in args.iter().filter_map(Value::as_object) {
        out.extend(m.keys().map(|k| Value::String(k.clone())));
    }
    Ok(Value::Array(out))
}

fn dict(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let mut map = Map::new();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .cloned()
            .unwrap_or_else(|| Value::String(String::new()));
        map.insert(strval(&pair[0]), value);
    }
    Ok(Value::Object(map))
}

fn get(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("get", &args, 2)?;
    let key = string("get", &args[1])?;
    Ok(args[0]
        .as_object()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_else(|| Value::String(String::new())))
}

fn set(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("set", &args, 3)?;
    let mut args = args.into_iter();
    let mut map = match args.next() {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(other) => return Err(format!("set: not a map: {}", value::to_string(&other))),
    };
    let key = args.next().unwrap_or_default();
    let key = string("set", &key)?.to_owned();
    map.insert(key, args.next().unwrap_or_default());
    Ok(Value::Object(map))
}

fn list(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    Ok(Value::Array(args))
}

fn append(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("append", &args, 2)?;
    let mut args = args.into_iter();
    let mut items = match args.next() {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => return Err(format!("Cannot push on type {}", value::type_name(&other))),
    };
    items.push(args.next().unwrap_or_default());
    Ok(Value::Array(items))
}

fn first(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("first", &args, 1)?;
    Ok(args[0]
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(Value::Null))
}

fn last(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("last", &args, 1)?;
    Ok(args[0]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or(Value::Null))
}

fn has(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("has", &args, 2)?;
    Ok(Value::Bool(
        args[1].as_array().is_some_and(|a| a.contains(&args[0])),
    ))
}

fn two_strings<'v>(name: &str, args: &'v [Value]) -> Result<(&'v str, &'v str), String> {
    arity(name, args, 2)?;
    Ok((string(name, &args[0])?, string(name, &args[1])?))
}

fn contains(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (needle, haystack) = two_strings("contains", &args)?;
    Ok(Value::Bool(haystack.contains(needle)))
}

fn has_prefix(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (prefix, text) = two_strings("hasPrefix", &args)?;
    Ok(Value::Bool(text.starts_with(prefix)))
}

fn has_suffix(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (suffix, text) = two_strings("hasSuffix", &args)?;
    Ok(Value::Bool(text.ends_with(suffix)))
}

fn trim_prefix(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (prefix, text) = two_strings("trimPrefix", &args)?;
    s(text.strip_prefix(prefix).unwrap_or(text).to_owned())
}

fn trim_suffix(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (suffix, text) = two_strings("trimSuffix", &args)?;
    s(text.strip_suffix(suffix).unwrap_or(text).to_owned())
}

fn trim(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("trim", &args, 1)?;
    s(strval(&args[0]).trim().to_owned())
}

fn trim_all(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (cutset, text) = two_strings("trimAll", &args)?;
    s(text.trim_matches(|c| cutset.contains(c)).to_owned())
}

fn lower(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("lower", &args, 1)?;
    s(strval(&args[0]).to_lowercase())
}

fn upper(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("upper", &args, 1)?;
    s(strval(&args[0]).to_uppercase())
}

fn replace(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("replace", &args, 3)?;
    let (old, new) = (string("replace", &args[0])?, string("replace", &args[1])?);
    s(strval(&args[2]).replace(old, new))
}

fn split(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (sep, text) = two_strings("split", &args)?;
    let map: Map<String, Value> = text
        .split(sep)
        .enumerate()
        .map(|(i, part)| (format!("_{i}"), Value::String(part.to_owned())))
        .collect();
    Ok(Value::Object(map))
}

fn split_list(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (sep, text) = two_strings("splitList", &args)?;
    Ok(Value::Array(
        text.split(sep)
            .map(|p| Value::String(p.to_owned()))
            .collect(),
    ))
}

fn join(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("join", &args, 2)?;
    let sep = string("join", &args[0])?;
    let parts: Vec<String> = match &args[1] {
        Value::Array(items) => items.iter().filter(|v| !v.is_null()).map(strval).collect(),
        Value::Null => Vec::new(),
        other => vec![strval(other)],
    };
    s(parts.join(sep))
}

/// `trunc N S`: the first N bytes, or with N negative the last -N.
fn trunc(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("trunc", &args, 2)?;
    let n = int("trunc", &args[0])?;
    let text = strval(&args[1]);
    let len = text.len() as i64;
    let cut = if n >= 0 && len > n {
        text.get(..n as usize)
    } else if n < 0 && len + n > 0 {
        text.get((len + n) as usize..)
    } else {
        None
    };
    s(cut.map_or(text.clone(), str::to_owned))
}

fn repeat(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("repeat", &args, 2)?;
    let n = usize::try_from(int("repeat", &args[0])?).unwrap_or(0);
    s(strval(&args[1]).repeat(n.min(1 << 16)))
}

/// The Go kind of a decoded JSON value.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn kind_is(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("kindIs", &args, 2)?;
    Ok(Value::Bool(string("kindIs", &args[0])? == kind(&args[1])))
}

fn kind_of(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("kindOf", &args, 1)?;
    s(kind(&args[0]).to_owned())
}

fn type_of(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("typeOf", &args, 1)?;
    s(value::type_name(&args[0]).to_owned())
}

fn b64enc(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("b64enc", &args, 1)?;
    s(base64::engine::general_purpose::STANDARD.encode(strval(&args[0])))
}

fn b64dec(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("b64dec", &args, 1)?;
    // Sprig returns the error text in place of the value.
    s(
        match base64::engine::general_purpose::STANDARD.decode(strval(&args[0])) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        },
    )
}

/// Sprig's `toInt64`: numbers, numeric strings and bools; anything else 0.
fn int64(v: &Value) -> i64 {
    match v {
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        Value::Number(n) => as_int(v).unwrap_or_else(|| n.as_f64().map_or(0, |f| f as i64)),
        _ => 0,
    }
}

fn to_int(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("int", &args, 1)?;
    Ok(Value::from(int64(&args[0])))
}

fn add(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    Ok(Value::from(
        args.iter().map(int64).fold(0i64, i64::wrapping_add),
    ))
}

fn add1(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("add1", &args, 1)?;
    Ok(Value::from(int64(&args[0]).wrapping_add(1)))
}

fn sub(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("sub", &args, 2)?;
    Ok(Value::from(int64(&args[0]).wrapping_sub(int64(&args[1]))))
}

fn mul(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("mul", &args, 1)?;
    Ok(Value::from(
        args.iter().map(int64).fold(1i64, i64::wrapping_mul),
    ))
}

fn regex_match(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let (pattern, text) = two_strings("regexMatch", &args)?;
    let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    Ok(Value::Bool(re.is_match(text)))
}

fn regex_replace_all(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("regexReplaceAll", &args, 3)?;
    let pattern = string("regexReplaceAll", &args[0])?;
    let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    let replacement = string("regexReplaceAll", &args[2])?;
    s(re.replace_all(&strval(&args[1]), replacement).into_owned())
}
