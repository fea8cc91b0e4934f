//! A line-based editor for block-style YAML that changes only the lines it must:
//! keys, order, comments and blank lines elsewhere stay byte for byte.
//!
//! It understands block mappings, block sequences (of mappings or scalars) and
//! treats flow collections and block scalars as opaque values. Reading values is
//! left to `serde_yaml`; this only finds where a value sits and rewrites it.

use std::fmt;

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// The sequence item whose mapping has `key: value`.
    Item { key: String, value: String },
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "{k}"),
            Seg::Item { key, value } => write!(f, "[{key}={value}]"),
        }
    }
}

/// Renders a path as `a.b[name=x].c`.
pub fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        if matches!(seg, Seg::Key(_)) && !s.is_empty() {
            s.push('.');
        }
        s.push_str(&seg.to_string());
    }
    s
}

/// Shorthand for a path of plain keys.
pub fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

/// Why an edit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: {problem}")]
    Shape { path: String, problem: String },
}

/// A mapping entry found on a line.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    /// Column of the key.
    col: usize,
    key: String,
    /// Byte range of the inline value in the line (empty when the value is a block).
    value: (usize, usize),
    /// Lines of the child block: `line + 1 .. end`.
    end: usize,
}

/// A YAML document held as lines.
pub struct Document {
    lines: Vec<String>,
    trailing_newline: bool,
}

impl Document {
    pub fn parse(text: &str) -> Self {
        Document {
            lines: text.lines().map(str::to_string).collect(),
            trailing_newline: text.ends_with('\n') || text.is_empty(),
        }
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.trailing_newline && !s.is_empty() {
            s.push('\n');
        }
        s
    }

    /// Indentation and content of a line that carries structure (not blank, not a comment).
    fn significant(&self, i: usize) -> Option<(usize, &str)> {
        let line = self.lines.get(i)?;
        let rest = line.trim_start();
        if rest.is_empty() || rest.starts_with('#') || rest == "---" || rest.starts_with("--- ") {
            return None;
        }
        Some((line.len() - rest.len(), rest))
    }

    /// End (exclusive) of the block owned by a line at `col`, starting after `line`:
    /// deeper lines, and a sequence at the same column. Trailing blank and comment
    /// lines are not part of it.
    fn block_end(&self, line: usize, col: usize, limit: usize) -> usize {
        let mut last = line + 1;
        let mut i = line + 1;
        while i < limit {
            if let Some((ind, rest)) = self.significant(i) {
                let same_col_seq = ind == col && (rest == "-" || rest.starts_with("- "));
                if ind < col || (ind == col && !same_col_seq) {
                    break;
                }
                // A block scalar's content may be less indented than its key's children
                // only in malformed YAML; everything deeper belongs here.
                last = i + 1;
            }
            i += 1;
        }
        last
    }

    /// Mapping entries in `start..end` at the mapping's own column. `first_col` is the
    /// column of the first entry when it sits after a `- ` on the first line.
    fn entries(&self, start: usize, end: usize, first_col: Option<usize>) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut col = None;
        let mut i = start;
        while i < end {
            let (ind, rest) = match (i == start, first_col) {
                (true, Some(c)) => match self.lines.get(i) {
                    Some(l) if l.len() > c => (c, &l[c..]),
                    _ => break,
                },
                _ => match self.significant(i) {
                    Some(x) => x,
                    None => {
                        i += 1;
                        continue;
                    }
                },
            };
            let col = *col.get_or_insert(ind);
            if ind < col {
                break;
            }
            if ind > col {
                i += 1;
                continue;
            }
            let Some((key, value)) = split_key(rest) else {
                i += 1;
                continue;
            };
            let block_end = self.block_end(i, col, end);
            out.push(Entry {
                line: i,
                col,
                key,
                value: (ind + value.0, ind + value.1),
                end: block_end,
            });
            i = block_end.max(i + 1);
        }
        out
    }

    /// Sequence items in `start..end`: (dash line, dash column, end of the item).
    fn items(&self, start: usize, end: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut col = None;
        for i in start..end {
            if let Some((ind, rest)) = self.significant(i) {
                let c = *col.get_or_insert(ind);
                if ind == c && (rest == "-" || rest.starts_with("- ")) {
                    if let Some(last) = out.last_mut() {
                        let (_, _, e): &mut (usize, usize, usize) = last;
                        *e = i;
                    }
                    out.push((i, ind, end));
                }
            }
        }
        // Trim trailing comments and blanks from each item.
        for item in &mut out {
            let mut e = item.2;
            while e > item.0 + 1 && self.significant(e - 1).is_none() {
                e -= 1;
            }
            item.2 = e;
        }
        out
    }

    /// Finds the entry at `path`, walking from the whole document.
    fn find(&self, path: &[Seg]) -> Option<Entry> {
        let (mut start, mut end, mut first_col) = (0, self.lines.len(), None);
        let mut found = None;
        let mut i = 0;
        while i < path.len() {
            match &path[i] {
                Seg::Key(k) => {
                    let e = self
                        .entries(start, end, first_col)
                        .into_iter()
                        .find(|e| &e.key == k)?;
                    (start, end, first_col) = (e.line + 1, e.end, None);
                    found = Some(e);
                }
                Seg::Item { key, value } => {
                    let item = self.items(start, end).into_iter().find(|&(l, c, e)| {
                        self.entries(l, e, Some(c + 2))
                            .iter()
                            .any(|en| &en.key == key && unquote(self.value_of(en)) == *value)
                    })?;
                    (start, end, first_col) = (item.0, item.2, Some(item.1 + 2));
                    found = None;
                }
            }
            i += 1;
        }
        found
    }

    fn value_of(&self, e: &Entry) -> &str {
        &self.lines[e.line][e.value.0..e.value.1]
    }

    /// The inline scalar at `path`, if the key exists with one.
    pub fn get(&self, path: &[Seg]) -> Option<String> {
        let e = self.find(path)?;
        let v = self.value_of(&e);
        (!v.is_empty()).then(|| unquote(v))
    }

    /// Sets the scalar at `path`, creating missing mappings; returns the old value.
    pub fn set_scalar(&mut self, path: &[Seg], value: &str) -> Result<Option<String>, EditError> {
        let rendered = quote_if_needed(value);
        if let Some(e) = self.find(path) {
            let old = self.value_of(&e).to_string();
            if old.is_empty() && e.end > e.line + 1 {
                return Err(EditError::Shape {
                    path: path_string(path),
                    problem: "holds a mapping or list, expected a single value".into(),
                });
            }
            let line = &mut self.lines[e.line];
            let sep = if old.is_empty() { " " } else { "" };
            line.replace_range(e.value.0..e.value.1, &format!("{sep}{rendered}"));
            return Ok((!old.is_empty()).then(|| unquote(&old)));
        }
        self.insert(path, &[format!("{}: {rendered}", last_key(path)?)])?;
        Ok(None)
    }

    /// Appends scalars or `name:` objects to the list at `path`, creating it; entries
    /// already present are skipped. Returns the values added.
    pub fn append_list(
        &mut self,
        path: &[Seg],
        values: &[String],
        as_name_objects: bool,
    ) -> Result<Vec<String>, EditError> {
        let render = |v: &str| {
            if as_name_objects {
                format!("name: {}", quote_if_needed(v))
            } else {
                quote_if_needed(v)
            }
        };
        let Some(e) = self.find(path) else {
            if values.is_empty() {
                return Ok(Vec::new());
            }
            let mut lines = vec![format!("{}:", last_key(path)?)];
            lines.extend(values.iter().map(|v| format!("  - {}", render(v))));
            self.insert(path, &lines)?;
            return Ok(values.to_vec());
        };
        let inline = self.value_of(&e).trim().to_string();
        let existing: Vec<String> = if inline.starts_with('[') {
            flow_items(&inline)
        } else {
            self.items(e.line + 1, e.end)
                .iter()
                .filter_map(|&(l, c, end)| {
                    let first = self.lines[l][c + 1..].trim();
                    if as_name_objects {
                        self.entries(l, end, Some(c + 2))
                            .iter()
                            .find(|en| en.key == "name")
                            .map(|en| unquote(self.value_of(en)))
                    } else {
                        Some(unquote(first))
                    }
                })
                .collect()
        };
        let new: Vec<String> = values
            .iter()
            .filter(|v| !existing.contains(v))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(new);
        }
        if inline.starts_with('[') {
            let mut all: Vec<String> = existing.iter().map(|v| render(v)).collect();
            all.extend(new.iter().map(|v| render(v)));
            let text = if as_name_objects {
                all.iter().map(|v| format!("{{{v}}}")).collect::<Vec<_>>()
            } else {
                all
            };
            self.lines[e.line]
                .replace_range(e.value.0..e.value.1, &format!("[{}]", text.join(", ")));
            return Ok(new);
        }
        if !inline.is_empty() {
            return Err(EditError::Shape {
                path: path_string(path),
                problem: format!("expected a list, found {inline:?}"),
            });
        }
        let items = self.items(e.line + 1, e.end);
        let (at, dash_col) = match items.last() {
            Some(&(_, c, end)) => (end, c),
            None => (e.line + 1, e.col + 2),
        };
        let lines: Vec<String> = new
            .iter()
            .map(|v| format!("{}- {}", " ".repeat(dash_col), render(v)))
            .collect();
        self.lines.splice(at..at, lines);
        Ok(new)
    }

    /// Inserts `lines` (relative indentation) as the entry at `path`, creating the
    /// missing parent mappings at the end of the deepest existing one.
    fn insert(&mut self, path: &[Seg], lines: &[String]) -> Result<(), EditError> {
        // The deepest existing ancestor.
        let mut depth = path.len() - 1;
        let parent = loop {
            if depth == 0 {
                break None;
            }
            if let Some(e) = self.find(&path[..depth]) {
                break Some(e);
            }
            if matches!(path[depth - 1], Seg::Item { .. }) {
                return Err(EditError::Shape {
                    path: path_string(&path[..depth]),
                    problem: "no such list item".into(),
                });
            }
            depth -= 1;
        };
        let step = self.indent_step();
        let (at, col) = match &parent {
            None => (self.root_end(), self.root_col()),
            Some(p) => {
                let inline = self.value_of(p).trim().to_string();
                if inline == "{}" {
                    let (a, b) = p.value;
                    let line = &mut self.lines[p.line];
                    // Drop the space before the `{}` too.
                    let a = if a > 0 && line.as_bytes()[a - 1] == b' ' {
                        a - 1
                    } else {
                        a
                    };
                    line.replace_range(a..b, "");
                } else if !inline.is_empty() {
                    return Err(EditError::Shape {
                        path: path_string(&path[..depth]),
                        problem: format!("expected a mapping, found {inline:?}"),
                    });
                }
                let children = self.entries(p.line + 1, p.end, None);
                let col = children.first().map_or(p.col + step, |c| c.col);
                (p.end, col)
            }
        };
        let mut new = Vec::new();
        for (n, seg) in path[depth..path.len() - 1].iter().enumerate() {
            let Seg::Key(k) = seg else {
                return Err(EditError::Shape {
                    path: path_string(path),
                    problem: "cannot create a list item".into(),
                });
            };
            new.push(format!("{}{k}:", " ".repeat(col + n * step)));
        }
        let inner = col + (path.len() - 1 - depth) * step;
        for l in lines {
            // Nested lines of the inserted entry use two-space relative indentation.
            let rel = l.len() - l.trim_start().len();
            new.push(format!(
                "{}{}",
                " ".repeat(inner + rel / 2 * step),
                l.trim_start()
            ));
        }
        self.lines.splice(at..at, new);
        Ok(())
    }

    fn root_col(&self) -> usize {
        (0..self.lines.len())
            .find_map(|i| self.significant(i).map(|(c, _)| c))
            .unwrap_or(0)
    }

    fn root_end(&self) -> usize {
        let mut e = self.lines.len();
        while e > 0 && self.significant(e - 1).is_none() {
            e -= 1;
        }
        e
    }

    /// The indentation step the document uses (2 if it has no nesting).
    fn indent_step(&self) -> usize {
        let root = self.root_col();
        (0..self.lines.len())
            .filter_map(|i| self.significant(i).map(|(c, _)| c))
            .filter(|&c| c > root)
            .map(|c| c - root)
            .min()
            .unwrap_or(2)
    }
}

fn last_key(path: &[Seg]) -> Result<&str, EditError> {
    match path.last() {
        Some(Seg::Key(k)) => Ok(k),
        _ => Err(EditError::Shape {
            path: path_string(path),
            problem: "a path must end in a key".into(),
        }),
    }
}

/// Splits `key: value # comment` into the key and the byte range of the value.
fn split_key(rest: &str) -> Option<(String, (usize, usize))> {
    let bytes = rest.as_bytes();
    let mut quote = None;
    let mut colon = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') if i == 0 => quote = Some(b),
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return None,
            (None, b':') if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                colon = Some(i);
                break;
            }
            (None, b'{' | b'[') if i == 0 => return None,
            _ => {}
        }
    }
    let colon = colon?;
    let key = unquote(rest[..colon].trim());
    let after = colon + 1;
    let value_start = after + (rest.len() - after - rest[after..].trim_start().len());
    let value_end = value_start + value_len(&rest[value_start..]);
    Some((key, (value_start, value_end)))
}

/// Length of a value up to a trailing ` # comment`, trailing spaces excluded.
fn value_len(v: &str) -> usize {
    let bytes = v.as_bytes();
    let mut quote = None;
    let mut end = v.len();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') if i == 0 => quote = Some(b),
            (None, b'#') if i > 0 && bytes[i - 1] == b' ' => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    v[..end].trim_end().len()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

fn flow_items(v: &str) -> Vec<String> {
    v.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| {
            let s = s
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim();
            unquote(s.strip_prefix("name:").unwrap_or(s))
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Quotes a scalar that YAML would read as something other than this string.
fn quote_if_needed(v: &str) -> String {
    let plain = !v.is_empty()
        && !v.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with(' ')
        && serde_yaml::from_str::<serde_yaml::Value>(v)
            .map(|p| p.as_str() == Some(v))
            .unwrap_or(false);
    if plain {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOP: &str = "\
# The control plane.
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  hub: docker.io/istio # upstream hub
  tag: 1.24.2
  values:
    global:
      # registry credentials
      imagePullSecrets: []
    pilot:
      env: {}
  components:
    pilot:
      k8s:
        env:
          - name: A # first
            value: \"1\"
";

    #[test]
    fn replaces_a_value_and_keeps_its_comment() {
        let mut d = Document::parse(IOP);
        let old = d.set_scalar(&keys(&["spec", "hub"]), "dhi.io").unwrap();
        assert_eq!(old.as_deref(), Some("docker.io/istio"));
        assert!(d.text().contains("  hub: dhi.io # upstream hub\n"));
        assert_eq!(d.text().lines().count(), IOP.lines().count());
    }

    #[test]
    fn inserts_under_an_existing_mapping() {
        let mut d = Document::parse(IOP);
        d.set_scalar(
            &keys(&["spec", "values", "pilot", "image"]),
            "dhi.io/istio-pilot:1.24.2",
        )
        .unwrap();
        let t = d.text();
        assert!(
            t.contains(
                "    pilot:\n      env: {}\n      image: dhi.io/istio-pilot:1.24.2\n  components:"
            ),
            "{t}"
        );
    }

    #[test]
    fn creates_missing_parents_and_replaces_flow_empties() {
        let mut d = Document::parse("a:\n  b: {}\nz: 1\n");
        d.set_scalar(&keys(&["a", "b", "c", "d"]), "x").unwrap();
        assert_eq!(d.text(), "a:\n  b:\n    c:\n      d: x\nz: 1\n");
        let mut d = Document::parse("z: 1\n");
        d.set_scalar(&keys(&["pilot", "image"]), "i:1").unwrap();
        assert_eq!(d.text(), "z: 1\npilot:\n  image: i:1\n");
    }

    #[test]
    fn appends_to_lists() {
        let mut d = Document::parse(IOP);
        let p = keys(&["spec", "values", "global", "imagePullSecrets"]);
        d.append_list(&p, &["creds".into()], false).unwrap();
        assert!(d.text().contains("      imagePullSecrets: [creds]\n"));
        let mut d = Document::parse("s:\n  - a\n  # end\nt: 1\n");
        d.append_list(&keys(&["s"]), &["a".into(), "b".into()], false)
            .unwrap();
        assert_eq!(d.text(), "s:\n  - a\n  - b\n  # end\nt: 1\n");
        let mut d = Document::parse("spec:\n  x: 1\n");
        d.append_list(&keys(&["spec", "ips"]), &["n".into()], true)
            .unwrap();
        assert_eq!(d.text(), "spec:\n  x: 1\n  ips:\n    - name: n\n");
    }

    #[test]
    fn finds_list_items_by_key() {
        let text = "spec:\n  containers:\n  - name: side\n    image: a\n  - name: discovery # main\n    image: b # old\n    args: [x]\n";
        let mut d = Document::parse(text);
        let p = vec![
            Seg::Key("spec".into()),
            Seg::Key("containers".into()),
            Seg::Item {
                key: "name".into(),
                value: "discovery".into(),
            },
            Seg::Key("image".into()),
        ];
        assert_eq!(d.get(&p).as_deref(), Some("b"));
        d.set_scalar(&p, "c").unwrap();
        assert_eq!(d.text(), text.replace("image: b # old", "image: c # old"));
    }
}
