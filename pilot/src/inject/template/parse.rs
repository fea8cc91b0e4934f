//! The parser: tokens into a tree of nodes per template, as Go's `text/template/parse`.
//! Checks what Go checks at parse time: functions exist, variables are declared,
//! `break`/`continue` sit inside `range`, `define` only at the top level.

use std::collections::BTreeMap;

use serde_json::Value;

use super::lex::{Kind, Token};
use super::Error;

pub(super) type List = Vec<Node>;

/// Control structures and parentheses nested deeper than this are refused: parsing and
/// executing recurse through them. Real templates nest a handful.
pub(super) const MAX_NESTING: usize = 48;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    /// `{{pipeline}}`: printed unless it declares or assigns variables.
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    /// `{{template "name" pipeline}}`.
    Template {
        line: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(super) struct Branch {
    pub pipe: Pipe,
    pub list: List,
    pub else_list: Option<List>,
}

#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub line: usize,
    /// Variables declared (`:=`) or assigned (`=`), with `$`.
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    Dot,
    Nil,
    Const(Value),
    /// `.a.b`
    Field(Vec<String>),
    /// `$x.a.b`
    Variable(String, Vec<String>),
    /// A function name.
    Func(String),
    /// `(pipeline).a.b`
    Chain(Box<Arg>, Vec<String>),
    Pipe(Pipe),
}

/// What ends a list of nodes.
enum ListEnd {
    Eof,
    End,
    /// `{{else}}`, or `{{else if ...}}`/`{{else with ...}}` with the keyword.
    Else(Option<String>),
}

pub(super) struct Parser<'a> {
    name: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    is_func: &'a dyn Fn(&str) -> bool,
    vars: Vec<String>,
    range_depth: usize,
    nesting: usize,
    /// Templates defined with `define`/`block` in this text.
    pub defined: BTreeMap<String, List>,
}

impl<'a> Parser<'a> {
    pub fn new(name: &'a str, tokens: Vec<Token>, is_func: &'a dyn Fn(&str) -> bool) -> Self {
        Parser {
            name,
            tokens,
            pos: 0,
            is_func,
            vars: vec!["$".to_owned()],
            range_depth: 0,
            nesting: 0,
            defined: BTreeMap::new(),
        }
    }

    /// The top-level list; `define`d templates are collected in `defined`.
    pub fn parse(&mut self) -> Result<List, Error> {
        let (list, end) = self.list(true)?;
        match end {
            ListEnd::Eof => Ok(list),
            ListEnd::End => Err(self.error("unexpected {{end}}")),
            ListEnd::Else(_) => Err(self.error("unexpected {{else}}")),
        }
    }

    fn line(&self) -> usize {
        match self.tokens.get(self.pos) {
            Some(token) => token.line,
            // At the end: the last line of the text.
            None => self.tokens.last().map_or(1, |t| match &t.kind {
                Kind::Text(text) => t.line + text.matches('\n').count(),
                _ => t.line,
            }),
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::parse(self.name, self.line(), message)
    }

    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.pos).map(|t| &t.kind)
    }

    fn next(&mut self) -> Result<Token, Error> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| self.error("unexpected EOF"))?;
        self.pos += 1;
        Ok(token)
    }

    fn expect_close(&mut self, context: &str) -> Result<(), Error> {
        match self.next()?.kind {
            Kind::Close => Ok(()),
            other => {
                self.pos -= 1;
                Err(self.error(format!("unexpected {} in {context}", describe(&other))))
            }
        }
    }

    /// Nodes up to the end of the text, an `{{end}}` or an `{{else}}`.
    fn list(&mut self, top: bool) -> Result<(List, ListEnd), Error> {
        let mut list = Vec::new();
        while let Some(token) = self.tokens.get(self.pos).cloned() {
            self.pos += 1;
            match token.kind {
                Kind::Text(text) => list.push(Node::Text(text)),
                Kind::Open => {
                    if let Some(end) = self.action(top, &mut list)? {
                        return Ok((list, end));
                    }
                }
                other => return Err(self.error(format!("unexpected {}", describe(&other)))),
            }
        }
        Ok((list, ListEnd::Eof))
    }

    /// After `{{`: a control structure, or a pipeline to print. Returns the list's end
    /// when the action is one.
    fn action(&mut self, top: bool, list: &mut List) -> Result<Option<ListEnd>, Error> {
        let line = self.line();
        let keyword = match self.peek() {
            Some(Kind::Ident(word)) => word.clone(),
            _ => {
                let pipe = self.pipeline("command", false)?;
                list.push(Node::Action(pipe));
                return Ok(None);
            }
        };
        match keyword.as_str() {
            "end" => {
                self.pos += 1;
                self.expect_close("end")?;
                Ok(Some(ListEnd::End))
            }
            "else" => {
                self.pos += 1;
                match self.peek() {
                    Some(Kind::Ident(w)) if w == "if" || w == "with" => {
                        let w = w.clone();
                        Ok(Some(ListEnd::Else(Some(w))))
                    }
                    _ => {
                        self.expect_close("else")?;
                        Ok(Some(ListEnd::Else(None)))
                    }
                }
            }
            "if" | "with" | "range" => {
                self.pos += 1;
                list.push(self.control(&keyword)?);
                Ok(None)
            }
            "define" => {
                self.pos += 1;
                if !top {
                    return Err(self.error("unexpected define: only allowed at the top level"));
                }
                let name = self.template_name("define")?;
                self.expect_close("define clause")?;
                let body = self.body("define")?;
                self.add_definition(name, body);
                Ok(None)
            }
            "block" => {
                self.pos += 1;
                let name = self.template_name("block")?;
                let pipe = self.pipeline("block", false)?;
                let body = self.body("block")?;
                self.add_definition(name.clone(), body);
                list.push(Node::Template {
                    line,
                    name,
                    pipe: Some(pipe),
                });
                Ok(None)
            }
            "template" => {
                self.pos += 1;
                let name = self.template_name("template")?;
                let pipe = if matches!(self.peek(), Some(Kind::Close)) {
                    self.pos += 1;
                    None
                } else {
                    Some(self.pipeline("template clause", false)?)
                };
                list.push(Node::Template { line, name, pipe });
                Ok(None)
            }
            "break" | "continue" => {
                self.pos += 1;
                if self.range_depth == 0 {
                    return Err(self.error(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                }
                self.expect_close(&keyword)?;
                list.push(if keyword == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
                Ok(None)
            }
            _ => {
                let pipe = self.pipeline("command", false)?;
                list.push(Node::Action(pipe));
                Ok(None)
            }
        }
    }

    fn add_definition(&mut self, name: String, body: List) {
        // As Go: a definition that is only whitespace does not replace an earlier one.
        if is_blank(&body) && self.defined.contains_key(&name) {
            return;
        }
        self.defined.insert(name, body);
    }

    /// The body of a `define`/`block`: its own variable scope, `$` only.
    fn body(&mut self, context: &str) -> Result<List, Error> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
        let range_depth = std::mem::take(&mut self.range_depth);
        let result = self.list(false);
        self.vars = vars;
        self.range_depth = range_depth;
        match result? {
            (list, ListEnd::End) => Ok(list),
            (_, ListEnd::Eof) => Err(self.error(format!("unexpected EOF in {context}"))),
            (_, ListEnd::Else(_)) => {
                Err(self.error(format!("unexpected {{{{else}}}} in {context}")))
            }
        }
    }

    fn template_name(&mut self, context: &str) -> Result<String, Error> {
        match self.next()?.kind {
            Kind::Str(name) => Ok(name),
            other => {
                self.pos -= 1;
                Err(self.error(format!(
                    "unexpected {} in {context} clause",
                    describe(&other)
                )))
            }
        }
    }

    /// `if`, `with`, `range` after the keyword, through the `{{end}}`.
    fn control(&mut self, keyword: &str) -> Result<Node, Error> {
        self.enter()?;
        let mark = self.vars.len();
        let result = self.control_scoped(keyword);
        self.vars.truncate(mark);
        self.nesting -= 1;
        result
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error(format!("exceeded maximum nesting depth ({MAX_NESTING})")));
        }
        self.nesting += 1;
        Ok(())
    }

    fn control_scoped(&mut self, keyword: &str) -> Result<Node, Error> {
        let pipe = self.pipeline(keyword, keyword == "range")?;
        if keyword == "range" {
            self.range_depth += 1;
        }
        let body = self.list(false);
        if keyword == "range" {
            self.range_depth -= 1;
        }
        let (list, end) = body?;
        let else_list = match end {
            ListEnd::End => None,
            ListEnd::Eof => return Err(self.error(format!("unexpected EOF in {keyword}"))),
            ListEnd::Else(None) => match self.list(false)? {
                (else_list, ListEnd::End) => Some(else_list),
                (_, ListEnd::Else(_)) => {
                    return Err(self.error(format!("expected end; found {{{{else}}}} in {keyword}")))
                }
                (_, ListEnd::Eof) => return Err(self.error(format!("unexpected EOF in {keyword}"))),
            },
            // `{{else if}}`: a nested `if` that shares this one's `{{end}}`.
            ListEnd::Else(Some(chained)) => {
                if chained != keyword {
                    return Err(self.error(format!("unexpected else {chained} in {keyword}")));
                }
                self.pos += 1;
                Some(vec![self.control(keyword)?])
            }
        };
        let branch = Branch {
            pipe,
            list,
            else_list,
        };
        Ok(match keyword {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    /// A pipeline up to `}}` (consumed), with its declarations.
    fn pipeline(&mut self, context: &str, range: bool) -> Result<Pipe, Error> {
        let line = self.line();
        let mut decl = Vec::new();
        let mut assign = false;
        // `$x :=`, `$x =`, and in range `$i, $v :=`.
        if let Some(Kind::Variable(first)) = self.peek() {
            let first = first.clone();
            let following = self.tokens.get(self.pos + 1).map(|t| t.kind.clone());
            match following {
                Some(Kind::Declare) | Some(Kind::Assign) => {
                    assign = following == Some(Kind::Assign);
                    self.pos += 2;
                    decl.push(first);
                }
                Some(Kind::Comma) if range => {
                    let second = self.tokens.get(self.pos + 2).map(|t| t.kind.clone());
                    let op = self.tokens.get(self.pos + 3).map(|t| t.kind.clone());
                    match (second, op) {
                        (
                            Some(Kind::Variable(second)),
                            Some(op @ (Kind::Declare | Kind::Assign)),
                        ) => {
                            assign = op == Kind::Assign;
                            self.pos += 4;
                            decl.push(first);
                            decl.push(second);
                        }
                        _ => return Err(self.error("range can only initialize variables")),
                    }
                }
                Some(Kind::Comma) => {
                    return Err(self.error(format!("too many declarations in {context}")))
                }
                _ => {}
            }
        }
        for var in &decl {
            if assign {
                self.check_variable(var)?;
            } else {
                self.vars.push(var.clone());
            }
        }
        let mut cmds = Vec::new();
        loop {
            match self.peek() {
                Some(Kind::Close) => {
                    self.pos += 1;
                    break;
                }
                None => return Err(self.error(format!("unclosed action in {context}"))),
                _ => {}
            }
            cmds.push(self.command(context)?);
            match self.peek() {
                Some(Kind::Pipe) => {
                    self.pos += 1;
                }
                Some(Kind::Close) => {}
                Some(other) => {
                    let other = describe(&other.clone());
                    return Err(self.error(format!("unexpected {other} in {context}")));
                }
                None => return Err(self.error(format!("unclosed action in {context}"))),
            }
        }
        self.check_pipeline(context, &decl, &cmds)?;
        Ok(Pipe {
            line,
            decl,
            assign,
            cmds,
        })
    }

    /// A parenthesised pipeline, after the `(`, through the `)`.
    fn sub_pipeline(&mut self) -> Result<Pipe, Error> {
        self.enter()?;
        let result = self.sub_pipeline_nested();
        self.nesting -= 1;
        result
    }

    fn sub_pipeline_nested(&mut self) -> Result<Pipe, Error> {
        let line = self.line();
        let mut cmds = Vec::new();
        loop {
            if matches!(self.peek(), Some(Kind::RParen)) {
                self.pos += 1;
                break;
            }
            cmds.push(self.command("parenthesized pipeline")?);
            match self.peek() {
                Some(Kind::Pipe) => self.pos += 1,
                Some(Kind::RParen) => {}
                _ => return Err(self.error("unclosed left paren")),
            }
        }
        self.check_pipeline("parenthesized pipeline", &[], &cmds)?;
        Ok(Pipe {
            line,
            decl: Vec::new(),
            assign: false,
            cmds,
        })
    }

    fn check_pipeline(&self, context: &str, decl: &[String], cmds: &[Cmd]) -> Result<(), Error> {
        if cmds.is_empty() {
            let what = if decl.is_empty() {
                "value"
            } else {
                "value after declaration"
            };
            return Err(self.error(format!("missing {what} for {context}")));
        }
        for (i, cmd) in cmds.iter().enumerate().skip(1) {
            if matches!(cmd.args.first(), Some(Arg::Dot | Arg::Nil | Arg::Const(_))) {
                return Err(self.error(format!(
                    "non executable command in pipeline stage {}",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    fn check_variable(&self, name: &str) -> Result<(), Error> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(self.error(format!("undefined variable \"{name}\"")))
        }
    }

    fn command(&mut self, context: &str) -> Result<Cmd, Error> {
        let mut args = Vec::new();
        loop {
            match self.peek() {
                Some(Kind::Pipe | Kind::Close | Kind::RParen) | None => break,
                _ => {}
            }
            let spaced = self.tokens.get(self.pos).is_some_and(|t| t.spaced);
            if !args.is_empty() && !spaced && !matches!(self.peek(), Some(Kind::LParen)) {
                let other = describe(&self.peek().cloned().unwrap_or(Kind::Close));
                return Err(self.error(format!("missing space before {other} in {context}")));
            }
            args.push(self.operand()?);
        }
        if args.is_empty() {
            return Err(self.error(format!("empty command in {context}")));
        }
        if matches!(args.first(), Some(Arg::Nil)) {
            return Err(self.error("nil is not a command"));
        }
        Ok(Cmd { args })
    }

    /// A term and the fields chained right after it.
    fn operand(&mut self) -> Result<Arg, Error> {
        let term = self.term()?;
        let mut fields = Vec::new();
        while let Some(token) = self.tokens.get(self.pos) {
            match &token.kind {
                Kind::Field(f) if !token.spaced => {
                    fields.push(f.clone());
                    self.pos += 1;
                }
                _ => break,
            }
        }
        if fields.is_empty() {
            return Ok(term);
        }
        Ok(match term {
            Arg::Field(mut base) => {
                base.extend(fields);
                Arg::Field(base)
            }
            Arg::Variable(name, mut base) => {
                base.extend(fields);
                Arg::Variable(name, base)
            }
            Arg::Pipe(_) => Arg::Chain(Box::new(term), fields),
            Arg::Dot => return Err(self.error("unexpected . after term \".\"")),
            Arg::Nil | Arg::Const(_) | Arg::Func(_) | Arg::Chain(..) => {
                return Err(self.error(format!("unexpected .{} after term", fields[0])))
            }
        })
    }

    fn term(&mut self) -> Result<Arg, Error> {
        let token = self.next()?;
        Ok(match token.kind {
            Kind::Ident(name) => {
                if !(self.is_func)(&name) {
                    self.pos -= 1;
                    return Err(self.error(format!("function \"{name}\" not defined")));
                }
                Arg::Func(name)
            }
            Kind::Dot => Arg::Dot,
            Kind::Nil => Arg::Nil,
            Kind::Variable(name) => {
                self.pos -= 1;
                self.check_variable(&name)?;
                self.pos += 1;
                Arg::Variable(name, Vec::new())
            }
            Kind::Field(name) => Arg::Field(vec![name]),
            Kind::Bool(b) => Arg::Const(Value::Bool(b)),
            Kind::Number(n) => Arg::Const(Value::Number(n)),
            Kind::Str(s) => Arg::Const(Value::String(s)),
            Kind::LParen => Arg::Pipe(self.sub_pipeline()?),
            other => {
                self.pos -= 1;
                return Err(self.error(format!("unexpected {} in operand", describe(&other))));
            }
        })
    }
}

/// Whether a body is nothing but whitespace.
pub(super) fn is_blank(list: &List) -> bool {
    list.iter()
        .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Text(_) => "text".to_owned(),
        Kind::Open => "\"{{\"".to_owned(),
        Kind::Close => "\"}}\"".to_owned(),
        Kind::Ident(s) => format!("<{s}>"),
        Kind::Field(s) => format!("<.{s}>"),
        Kind::Variable(s) => format!("<{s}>"),
        Kind::Dot => "<.>".to_owned(),
        Kind::Str(s) => format!("{s:?}"),
        Kind::Number(n) => n.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Nil => "<nil>".to_owned(),
        Kind::LParen => "\"(\"".to_owned(),
        Kind::RParen => "\")\"".to_owned(),
        Kind::Pipe => "\"|\"".to_owned(),
        Kind::Declare => "\":=\"".to_owned(),
        Kind::Assign => "\"=\"".to_owned(),
        Kind::Comma => "\",\"".to_owned(),
    }
}
