//! The function map: Go's built-ins here, Sprig's in [`sprig`], Istio's in [`istio`].
//! Arguments arrive as JSON values (a missing value as nil); an `Err` becomes Go's
//! `error calling NAME: ...` with the template and line.

pub mod istio;
pub mod printf;
pub mod sprig;

use std::collections::BTreeMap;

use serde_json::Value;

use super::value::{self, as_int, equal, order, truthy, type_name};
use super::Context;

/// A template function.
pub type Func = fn(&Context<'_>, Vec<Value>) -> Result<Value, String>;

/// Go's built-ins, then Sprig's, then Istio's over them (as upstream's injector adds
/// its function map after Sprig's). `and` and `or` are evaluated by the executor.
pub fn all() -> BTreeMap<&'static str, Func> {
    let mut funcs: BTreeMap<&'static str, Func> = BTreeMap::new();
    let builtins: [(&'static str, Func); 13] = [
        ("not", not),
        ("eq", eq),
        ("ne", ne),
        ("lt", lt),
        ("le", le),
        ("gt", gt),
        ("ge", ge),
        ("len", len),
        ("index", index),
        ("print", print),
        ("println", println),
        ("printf", printf::printf),
        ("include", include),
    ];
    funcs.extend(builtins);
    funcs.extend(sprig::FUNCS.iter().copied());
    funcs.extend(istio::FUNCS.iter().copied());
    funcs
}

/// `want` arguments exactly.
pub fn arity(name: &str, args: &[Value], want: usize) -> Result<(), String> {
    if args.len() == want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ))
    }
}

/// At least `want` arguments.
pub fn at_least(name: &str, args: &[Value], want: usize) -> Result<(), String> {
    if args.len() >= want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want at least {want} got {}",
            args.len()
        ))
    }
}

/// A string argument, or the error Go's reflection would give.
pub fn string<'v>(name: &str, v: &'v Value) -> Result<&'v str, String> {
    v.as_str()
        .ok_or_else(|| format!("{name}: expected string; found {}", value::to_string(v)))
}

/// An integer argument (JSON decoded by Go is float64, so whole floats count).
pub fn int(name: &str, v: &Value) -> Result<i64, String> {
    as_int(v).ok_or_else(|| format!("{name}: expected integer; found {}", value::to_string(v)))
}

fn not(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("not", &args, 1)?;
    Ok(Value::Bool(!truthy(&args[0])))
}

fn eq(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("eq", &args, 2)?;
    for other in &args[1..] {
        if equal(&args[0], other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn ne(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("ne", &args, 2)?;
    Ok(Value::Bool(!equal(&args[0], &args[1])?))
}

fn compare(
    name: &str,
    args: &[Value],
    ok: fn(std::cmp::Ordering) -> bool,
) -> Result<Value, String> {
    arity(name, args, 2)?;
    Ok(Value::Bool(ok(order(&args[0], &args[1])?)))
}

fn lt(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    compare("lt", &args, |o| o.is_lt())
}

fn le(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    compare("le", &args, |o| o.is_le())
}

fn gt(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    compare("gt", &args, |o| o.is_gt())
}

fn ge(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    compare("ge", &args, |o| o.is_ge())
}

fn len(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("len", &args, 1)?;
    let n = match &args[0] {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        Value::Null => return Err("len of nil pointer".to_owned()),
        other => return Err(format!("len of type {}", type_name(other))),
    };
    Ok(Value::from(n))
}

/// `index x 1 2`: lists by position, maps by key. A missing key, or indexing nil, gives
/// nil (Go's zero value of the element).
fn index(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("index", &args, 1)?;
    let mut args = args.into_iter();
    let mut item = args.next().unwrap_or_default();
    for key in args {
        item = match (&item, &key) {
            (Value::Null, _) => Value::Null,
            (Value::Object(map), Value::String(k)) => map.get(k).cloned().unwrap_or(Value::Null),
            (Value::Object(_), other) => {
                return Err(format!(
                    "value has type {}; should be string",
                    type_name(other)
                ))
            }
            (Value::Array(list), k) => {
                let Some(i) = as_int(k) else {
                    return Err(format!(
                        "cannot index slice/array with type {}",
                        type_name(k)
                    ));
                };
                match usize::try_from(i).ok().and_then(|i| list.get(i)) {
                    Some(v) => v.clone(),
                    None => return Err(format!("index out of range: {i}")),
                }
            }
            (Value::String(s), k) => {
                let Some(i) = as_int(k) else {
                    return Err(format!("cannot index string with type {}", type_name(k)));
                };
                match usize::try_from(i).ok().and_then(|i| s.as_bytes().get(i)) {
                    Some(b) => Value::from(*b),
                    None => return Err(format!("index out of range: {i}")),
                }
            }
            (other, _) => return Err(format!("can't index item of type {}", type_name(other))),
        };
    }
    Ok(item)
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && !args[i - 1].is_string() && !arg.is_string() {
            out.push(' ');
        }
        value::write_v(&mut out, arg);
    }
    out
}

fn print(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    Ok(Value::String(sprint(&args)))
}

fn println(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let out: Vec<String> = args.iter().map(value::to_string).collect();
    Ok(Value::String(out.join(" ") + "\n"))
}

/// Helm's `include`: runs a named template and returns its output as a string.
fn include(ctx: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("include", &args, 2)?;
    let mut args = args.into_iter();
    let name = args.next().unwrap_or_default();
    let name = string("include", &name)?.to_owned();
    let data = args.next().unwrap_or_default();
    ctx.include(&name, data)
        .map(Value::String)
        .map_err(|e| e.to_string())
}
