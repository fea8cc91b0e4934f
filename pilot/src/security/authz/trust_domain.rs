//! Trust domain aliases: a policy naming `cluster.local/ns/a/sa/b` (or any of the mesh's
//! trust domains) also matches the same identity under the others.

/// The name policies may use for "this mesh's trust domain, whatever it is".
const CLUSTER_LOCAL: &str = "cluster.local";

/// The mesh trust domain followed by its aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub trust_domains: Vec<String>,
}

impl Bundle {
    pub fn new(trust_domain: &str, aliases: &[String]) -> Bundle {
        let mut trust_domains = vec![trust_domain.to_owned()];
        trust_domains.extend(aliases.iter().cloned());
        Bundle { trust_domains }
    }

    /// Each principal of the form `<td>/ns/<ns>/sa/<sa>` whose trust domain is one of the
    /// bundle's (or `cluster.local`) becomes one principal per trust domain of the bundle.
    /// Others are kept as written.
    pub fn replace_aliases(&self, principals: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for principal in principals {
            let parts: Vec<&str> = principal.split('/').collect();
            // `*` as trust domain, or not an identity at all: nothing to enforce.
            if parts.len() != 5 || parts[0] == "*" {
                out.push(principal.clone());
                continue;
            }
            let td = parts[0];
            if td != CLUSTER_LOCAL && !string_match(td, &self.trust_domains) {
                tracing::warn!(
                    target: "authorization",
                    "trust domain {td} from principal {principal} does not match the current \
                     trust domain or its aliases"
                );
                out.push(principal.clone());
                continue;
            }
            let mut expanded: Vec<String> = Vec::new();
            for t in &self.trust_domains {
                // A principal whose trust domain is a `*suffix` pattern matching `t` stays as
                // written, so that one pattern is not spelled out once per alias.
                let p = if suffix_match(t, td) {
                    principal.clone()
                } else {
                    format!("{t}/{}", parts[1..].join("/"))
                };
                if !expanded.contains(&p) {
                    expanded.push(p);
                }
            }
            out.extend(expanded);
        }
        out
    }

    /// Each trust domain value that is one of the bundle's becomes all of them.
    pub fn expand_aliases(&self, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            let add: Vec<&String> = if self.trust_domains.contains(v) {
                self.trust_domains.iter().collect()
            } else {
                vec![v]
            };
            for a in add {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }
}

/// Whether `a` matches some entry of `list`, either side possibly a `*`, `prefix*` or
/// `*suffix` pattern.
fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

/// Whether `pattern` is a `*suffix` pattern that `a` ends with.
fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn replaces_aliases() {
        let b = Bundle::new("td1", &strings(&["td2"]));
        let cases: [(&[&str], &[&str]); 6] = [
            (&["td1/ns/a/sa/b"], &["td1/ns/a/sa/b", "td2/ns/a/sa/b"]),
            (&["td2/ns/a/sa/b"], &["td1/ns/a/sa/b", "td2/ns/a/sa/b"]),
            (
                &["cluster.local/ns/a/sa/b"],
                &["td1/ns/a/sa/b", "td2/ns/a/sa/b"],
            ),
            (&["other/ns/a/sa/b"], &["other/ns/a/sa/b"]),
            (&["*/ns/a/sa/b"], &["*/ns/a/sa/b"]),
            (&["*td1/ns/a/sa/b"], &["*td1/ns/a/sa/b", "td2/ns/a/sa/b"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                b.replace_aliases(&strings(input)),
                strings(want),
                "{input:?}"
            );
        }
        assert_eq!(b.replace_aliases(&strings(&["sa/b"])), strings(&["sa/b"]));
    }

    #[test]
    fn expands_aliases() {
        let b = Bundle::new("td1", &strings(&["td2"]));
        assert_eq!(
            b.expand_aliases(&strings(&["td2", "x", "td1"])),
            strings(&["td1", "td2", "x"])
        );
    }
}
