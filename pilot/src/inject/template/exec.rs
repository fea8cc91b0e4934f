//! The executor: walks a parsed template against a JSON value, as Go's
//! `text/template` executes against Go values.

use serde_json::Value;

use super::parse::{Arg, Branch, Cmd, List, Node, Pipe};
use super::value::{self, json_name, truthy, type_name, Val};
use super::{Context, Error, Templates};

/// How deep `if`/`with`/`range` bodies and `template`/`include` calls may nest, all
/// counted together: deep enough for any real template, shallow enough that a template
/// calling itself fails instead of exhausting a 2 MiB thread stack.
pub(super) const MAX_DEPTH: usize = 100;

/// How a list of nodes ended.
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'a> {
    set: &'a Templates,
    /// The source the running template was parsed from, and its name, for errors.
    source: &'a str,
    template: &'a str,
    vars: Vec<(String, Val)>,
    depth: usize,
}

impl<'a> Exec<'a> {
    /// Runs template `name` with `dot` as data, `depth` calls deep.
    pub fn run(set: &'a Templates, name: &str, dot: Val, depth: usize) -> Result<String, Error> {
        let Some((template_name, tmpl)) = set.templates.get_key_value(name) else {
            return Err(Error::NoTemplate(name.to_owned()));
        };
        if depth > MAX_DEPTH {
            return Err(Error::Exec {
                source_name: tmpl.source.clone(),
                line: 0,
                template: name.to_owned(),
                message: too_deep(),
            });
        }
        let mut exec = Exec {
            set,
            source: &tmpl.source,
            template: template_name,
            vars: vec![("$".to_owned(), dot.clone())],
            depth,
        };
        let mut out = String::new();
        exec.walk(&dot, &tmpl.list, &mut out)?;
        Ok(out)
    }

    fn error(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Exec {
            source_name: self.source.to_owned(),
            line,
            template: self.template.to_owned(),
            message: message.into(),
        }
    }

    fn walk(&mut self, dot: &Val, list: &List, out: &mut String) -> Result<Flow, Error> {
        for node in list {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        match v {
                            Val::Missing => out.push_str("<no value>"),
                            Val::Value(v) => value::write_v(out, &v),
                        }
                    }
                }
                Node::If(branch) | Node::With(branch) => {
                    let with = matches!(node, Node::With(_));
                    let flow = self.if_or_with(dot, branch, with, out)?;
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(branch) => self.range(dot, branch, out)?,
                Node::Template { line, name, pipe } => {
                    let data = match pipe {
                        Some(pipe) => self.pipeline(dot, pipe)?,
                        None => Val::Missing,
                    };
                    let text =
                        Exec::run(self.set, name, data, self.depth + 1).map_err(|e| match e {
                            Error::NoTemplate(name) => {
                                self.error(*line, format!("no such template \"{name}\""))
                            }
                            other => other,
                        })?;
                    out.push_str(&text);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    /// Counts one more level of nesting for the duration of `f`.
    fn nested<T>(
        &mut self,
        line: usize,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(line, too_deep()));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn if_or_with(
        &mut self,
        dot: &Val,
        branch: &Branch,
        with: bool,
        out: &mut String,
    ) -> Result<Flow, Error> {
        self.nested(branch.pipe.line, |exec| {
            exec.if_or_with_nested(dot, branch, with, out)
        })
    }

    fn if_or_with_nested(
        &mut self,
        dot: &Val,
        branch: &Branch,
        with: bool,
        out: &mut String,
    ) -> Result<Flow, Error> {
        let mark = self.vars.len();
        let result = (|| {
            let v = self.pipeline(dot, &branch.pipe)?;
            let truth = truthy(v.as_value()) && v != Val::Missing;
            if truth {
                let inner = if with { v } else { dot.clone() };
                self.walk(&inner, &branch.list, out)
            } else if let Some(else_list) = &branch.else_list {
                self.walk(dot, else_list, out)
            } else {
                Ok(Flow::Normal)
            }
        })();
        self.vars.truncate(mark);
        result
    }

    fn range(&mut self, dot: &Val, branch: &Branch, out: &mut String) -> Result<(), Error> {
        self.nested(branch.pipe.line, |exec| exec.range_nested(dot, branch, out))
    }

    fn range_nested(&mut self, dot: &Val, branch: &Branch, out: &mut String) -> Result<(), Error> {
        let pipe = &branch.pipe;
        let mark = self.vars.len();
        let v = self.commands(dot, pipe)?;
        let items: Vec<(Value, Value)> = match v.as_value() {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (Value::from(i), item.clone()))
                .collect(),
            // Go ranges over a map in key order.
            Value::Object(map) => map
                .iter()
                .map(|(k, item)| (Value::String(k.clone()), item.clone()))
                .collect(),
            Value::Number(_) => {
                let Some(n) = value::as_int(v.as_value()) else {
                    return Err(self.error(pipe.line, "range can't iterate over a float"));
                };
                (0..n.max(0))
                    .map(|i| (Value::from(i), Value::from(i)))
                    .collect()
            }
            other => {
                return Err(self.error(
                    pipe.line,
                    format!("range can't iterate over {}", value::to_string(other)),
                ))
            }
        };
        if items.is_empty() {
            if let Some(else_list) = &branch.else_list {
                self.walk(dot, else_list, out)?;
            }
            return Ok(());
        }
        for (key, item) in items {
            let iteration = self.vars.len();
            match pipe.decl.as_slice() {
                [] => {}
                [one] => self.declare(one, Val::Value(item.clone()), pipe.assign),
                [first, second, ..] => {
                    self.declare(first, Val::Value(key), pipe.assign);
                    self.declare(second, Val::Value(item.clone()), pipe.assign);
                }
            }
            let flow = self.walk(&Val::Value(item), &branch.list, out);
            self.vars.truncate(iteration);
            match flow? {
                Flow::Break => break,
                Flow::Continue | Flow::Normal => {}
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn declare(&mut self, name: &str, v: Val, assign: bool) {
        if assign {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = v;
                return;
            }
        }
        self.vars.push((name.to_owned(), v));
    }

    /// Runs a pipeline and binds its variables.
    fn pipeline(&mut self, dot: &Val, pipe: &Pipe) -> Result<Val, Error> {
        let v = self.commands(dot, pipe)?;
        for name in &pipe.decl {
            self.declare(name, v.clone(), pipe.assign);
        }
        Ok(v)
    }

    /// The pipeline's commands, each one's result the last argument of the next.
    fn commands(&mut self, dot: &Val, pipe: &Pipe) -> Result<Val, Error> {
        let mut last = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(dot, cmd, last, pipe.line)?);
        }
        Ok(last.unwrap_or(Val::Missing))
    }

    fn command(
        &mut self,
        dot: &Val,
        cmd: &Cmd,
        last: Option<Val>,
        line: usize,
    ) -> Result<Val, Error> {
        let has_args = cmd.args.len() > 1 || last.is_some();
        match &cmd.args[0] {
            Arg::Func(name) => self.call(dot, name, &cmd.args[1..], last, line),
            Arg::Field(path) => {
                if has_args {
                    return Err(self.not_a_method(line, path));
                }
                self.fields(dot, path, line)
            }
            Arg::Variable(name, path) => {
                if has_args {
                    return Err(self.not_a_method(line, path));
                }
                self.fields(self.variable(name, line)?, path, line)
            }
            Arg::Chain(base, path) => {
                if has_args {
                    return Err(self.not_a_method(line, path));
                }
                let v = self.arg(dot, base, line)?;
                self.fields(&v, path, line)
            }
            other => {
                if has_args {
                    return Err(self.error(
                        line,
                        format!("can't give argument to non-function {}", describe(other)),
                    ));
                }
                self.arg(dot, other, line)
            }
        }
    }

    fn not_a_method(&self, line: usize, path: &[String]) -> Error {
        match path.last() {
            Some(field) => self.error(line, format!("{field} is not a method but has arguments")),
            None => self.error(line, "can't give argument to non-function"),
        }
    }

    fn variable(&self, name: &str, line: usize) -> Result<&Val, Error> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| self.error(line, format!("undefined variable: {name}")))
    }

    fn arg(&mut self, dot: &Val, arg: &Arg, line: usize) -> Result<Val, Error> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Nil => Ok(Val::Value(Value::Null)),
            Arg::Const(v) => Ok(Val::Value(v.clone())),
            Arg::Field(path) => self.fields(dot, path, line),
            Arg::Variable(name, path) => self.fields(self.variable(name, line)?, path, line),
            Arg::Func(name) => self.call(dot, name, &[], None, line),
            Arg::Chain(base, path) => {
                let v = self.arg(dot, base, line)?;
                self.fields(&v, path, line)
            }
            Arg::Pipe(pipe) => self.pipeline(dot, pipe),
        }
    }

    /// `.a.b.c` from `v`, walking by reference and cloning only what is found.
    fn fields(&self, v: &Val, path: &[String], line: usize) -> Result<Val, Error> {
        let Val::Value(root) = v else {
            return Ok(Val::Missing);
        };
        const NULL: Value = Value::Null;
        let mut current = root;
        for name in path {
            current = match field(current, name).map_err(|message| self.error(line, message))? {
                Found::Value(v) => v,
                Found::Nil => &NULL,
                Found::Missing => return Ok(Val::Missing),
            };
        }
        Ok(Val::Value(current.clone()))
    }

    fn call(
        &mut self,
        dot: &Val,
        name: &str,
        args: &[Arg],
        last: Option<Val>,
        line: usize,
    ) -> Result<Val, Error> {
        let count = args.len() + usize::from(last.is_some());
        if name == "and" || name == "or" {
            // Evaluated left to right, stopping at the first that decides, as Go.
            if count == 0 {
                return Err(self.error(
                    line,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let mut v = Val::Missing;
            for arg in args {
                v = self.arg(dot, arg, line)?;
                if truthy(v.as_value()) == (name == "or") {
                    return Ok(v);
                }
            }
            if let Some(last) = last {
                v = last;
            }
            return Ok(v);
        }
        let Some(func) = self.set.funcs.get(name) else {
            return Err(self.error(line, format!("\"{name}\" is not a defined function")));
        };
        let mut values = Vec::with_capacity(count);
        for arg in args {
            values.push(self.arg(dot, arg, line)?.into_value());
        }
        if let Some(last) = last {
            values.push(last.into_value());
        }
        let ctx = Context {
            set: self.set,
            depth: self.depth,
        };
        func(&ctx, values)
            .map(Val::Value)
            .map_err(|message| self.error(line, format!("error calling {name}: {message}")))
    }
}

fn too_deep() -> String {
    format!("exceeded maximum template depth ({MAX_DEPTH})")
}

/// What a field lookup found.
enum Found<'v> {
    Value(&'v Value),
    /// A proto getter of an unset field: nil.
    Nil,
    /// No such key.
    Missing,
}

/// One field of a value. Maps are looked up by key; templates written against Go types
/// name fields the Go way, so `.Name` falls back to the JSON name `name`, and the Go
/// methods the injector templates call on proto values are honoured: `GetX` reads `x`
/// (nil when unset, and nil-safe on nil as proto getters are), `GetValue` of a wrapper
/// and `String` of an enum are the value itself.
fn field<'v>(receiver: &'v Value, name: &str) -> Result<Found<'v>, String> {
    let getter = name
        .strip_prefix("Get")
        .filter(|rest| rest.starts_with(char::is_uppercase));
    match receiver {
        Value::Object(map) => {
            if let Some(v) = map.get(name).or_else(|| map.get(&json_name(name))) {
                return Ok(Found::Value(v));
            }
            Ok(match getter {
                Some(rest) => map.get(&json_name(rest)).map_or(Found::Nil, Found::Value),
                None => Found::Missing,
            })
        }
        Value::Null if getter.is_some() => Ok(Found::Nil),
        Value::Null => Err(format!("nil pointer evaluating interface {{}}.{name}")),
        Value::String(_) if name == "String" => Ok(Found::Value(receiver)),
        Value::Bool(_) | Value::Number(_) | Value::String(_) if name == "GetValue" => {
            Ok(Found::Value(receiver))
        }
        other => Err(format!(
            "can't evaluate field {name} in type {}",
            type_name(other)
        )),
    }
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Dot => ".".to_owned(),
        Arg::Nil => "nil".to_owned(),
        Arg::Const(v) => value::to_string(v),
        _ => "command".to_owned(),
    }
}
