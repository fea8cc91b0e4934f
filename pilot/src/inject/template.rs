//! Go `text/template`, for the sidecar injector's templates: upstream's chart ships them
//! as Go templates (with Sprig's functions and Istio's own), and an injector ConfigMap
//! rendered by that chart must work unchanged.
//!
//! Our own engine rather than a crate: the one Rust implementation of Go templates on
//! crates.io, `gtmpl`, ranges over maps in hash order (Go sorts the keys, and the
//! rendered pod must not change from one request to the next), gives functions no way
//! to run a named template (`include`), has its own value type instead of JSON, and has
//! had no release in years. Go's documentation of `text/template` is the spec; the
//! module is split as Go's is: [`lex`] (trimming and comments done there), [`parse`]
//! (the checks Go makes at parse time: functions exist, variables are declared,
//! `break`/`continue` inside `range`), [`exec`], and the functions in [`funcs`].
//!
//! Data is JSON ([`serde_json::Value`]). Where Go would walk typed structs the data
//! holds their JSON, so a field falls back from its Go name to its JSON name (`.Spec` →
//! `spec`, `.APIVersion` → `apiVersion`), and the proto getters upstream's templates call
//! (`GetTracing`, `GetValue`, `String`) are honoured. What JSON cannot say is left to
//! whoever builds the data: Go prints an unset string field of a struct as empty and a
//! missing key of a `map[string]string` as empty, where a missing key here prints
//! `<no value>` (Go's output for a missing key of a `map[string]interface{}`), and
//! indexing nil or a missing value gives nil, as indexing a nil map does in Go.

mod exec;
pub mod funcs;
mod lex;
mod parse;
pub mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

pub use self::funcs::Func;
use self::parse::List;
use self::value::Val;

/// A parse or execution error, naming the template source and line as Go does
/// (`template: inject:12: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("template: {name}:{line}: {message}")]
    Parse {
        name: String,
        line: usize,
        message: String,
    },
    #[error("template: {source_name}:{line}: executing \"{template}\": {message}")]
    Exec {
        source_name: String,
        line: usize,
        template: String,
        message: String,
    },
    #[error("template: no template \"{0}\" associated with the template set")]
    NoTemplate(String),
}

impl Error {
    fn parse(name: &str, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            name: name.to_owned(),
            line,
            message: message.into(),
        }
    }

    /// The line the error points at.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Parse { line, .. } | Error::Exec { line, .. } => Some(*line),
            Error::NoTemplate(_) => None,
        }
    }
}

/// One named template's body and the source it was parsed from.
#[derive(Debug, Clone)]
struct Parsed {
    source: String,
    list: List,
}

/// A set of named templates sharing one function map, as a Go `*template.Template`
/// with its associated templates.
#[derive(Clone)]
pub struct Templates {
    templates: BTreeMap<String, Parsed>,
    funcs: BTreeMap<&'static str, Func>,
    env: Option<BTreeMap<String, String>>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// An empty set with the functions upstream's injector gives its templates: Go's
    /// built-ins, Sprig's, Istio's (which win over Sprig's of the same name), and
    /// Helm's `include`.
    pub fn new() -> Self {
        Templates {
            templates: BTreeMap::new(),
            funcs: funcs::all(),
            env: None,
        }
    }

    /// Makes the `env` function read `vars` instead of the process environment.
    pub fn with_env(mut self, vars: BTreeMap<String, String>) -> Self {
        self.env = Some(vars);
        self
    }

    /// Adds (or replaces) a function.
    pub fn with_func(mut self, name: &'static str, func: Func) -> Self {
        self.funcs.insert(name, func);
        self
    }

    /// Parses `text` as template `name`, adding every template it `define`s. As Go, a
    /// text of nothing but definitions and whitespace leaves `name` as it was.
    pub fn parse(&mut self, name: &str, text: &str) -> Result<(), Error> {
        let tokens = lex::lex(name, text)?;
        let funcs = &self.funcs;
        let is_func = |f: &str| funcs.contains_key(f) || f == "and" || f == "or";
        let mut parser = parse::Parser::new(name, tokens, &is_func);
        let list = parser.parse()?;
        for (defined, body) in std::mem::take(&mut parser.defined) {
            self.insert(name, defined, body);
        }
        self.insert(name, name.to_owned(), list);
        Ok(())
    }

    /// Adds a template; as Go, a blank body does not replace an existing one.
    fn insert(&mut self, source: &str, name: String, list: List) {
        if parse::is_blank(&list) && self.templates.contains_key(&name) {
            return;
        }
        self.templates.insert(
            name,
            Parsed {
                source: source.to_owned(),
                list,
            },
        );
    }

    /// Whether a template of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.templates.contains_key(name)
    }

    /// Runs template `name` with `data` as `.` and `$`.
    pub fn execute(&self, name: &str, data: &Value) -> Result<String, Error> {
        exec::Exec::run(self, name, Val::Value(data.clone()), 0)
    }
}

/// What a function can reach besides its arguments.
pub struct Context<'a> {
    set: &'a Templates,
    depth: usize,
}

impl Context<'_> {
    /// Runs another template of the set, for `include`.
    pub fn include(&self, name: &str, data: Value) -> Result<String, Error> {
        exec::Exec::run(self.set, name, Val::Value(data), self.depth + 1)
    }

    /// An environment variable, from the set's environment or the process's.
    pub fn env(&self, key: &str) -> Option<String> {
        match &self.set.env {
            Some(vars) => vars.get(key).cloned(),
            None => std::env::var(key).ok(),
        }
    }
}
