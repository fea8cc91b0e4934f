//! Envoy matchers built from policy values, where `*` alone, a leading `*` or a trailing
//! `*` mean "anything", "ends with" and "starts with", as upstream reads them.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher::path_segment::Segment, metadata_matcher::PathSegment,
    path_matcher, string_matcher::MatchPattern, value_matcher, ListMatcher, MetadataMatcher,
    OrMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
};

pub fn exact(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Exact(v.to_owned()), ignore_case)
}

pub fn prefix(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Prefix(v.to_owned()), ignore_case)
}

pub fn suffix(v: &str, ignore_case: bool) -> StringMatcher {
    string(MatchPattern::Suffix(v.to_owned()), ignore_case)
}

pub fn regex(r: &str) -> StringMatcher {
    string(
        MatchPattern::SafeRegex(RegexMatcher {
            regex: r.to_owned(),
            ..Default::default()
        }),
        false,
    )
}

fn string(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    }
}

/// A matcher for `v` (see the module doc); `*` alone is the regex `.+`, never an empty
/// prefix, which Envoy rejects.
pub fn glob(v: &str) -> StringMatcher {
    glob_with_prefix(v, "")
}

/// Like [`glob`], matching `prefix` first (`spiffe://` for principals). `*` alone ignores
/// the prefix; a leading `*` becomes a regex once there is a prefix to keep.
pub fn glob_with_prefix(v: &str, pre: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if pre.is_empty() {
            suffix(rest, false)
        } else {
            regex(&format!("{pre}.*{}", quote_meta(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(&format!("{pre}{rest}"), false)
    } else {
        exact(&format!("{pre}{v}"), false)
    }
}

/// Escapes the characters RE2 treats as special, exactly the set Go's `regexp.QuoteMeta`
/// escapes, so generated regexes read as upstream's do.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header matcher; `*` alone means "present".
pub fn header(name: &str, v: &str) -> HeaderMatcher {
    header_with_case(name, v, false)
}

/// The `:authority` matcher of `hosts`: host names compare case-insensitively.
pub fn host(name: &str, v: &str) -> HeaderMatcher {
    header_with_case(name, v, true)
}

fn header_with_case(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let spec = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else if let Some(rest) = v.strip_prefix('*') {
        HeaderMatchSpecifier::StringMatch(suffix(rest, ignore_case))
    } else if let Some(rest) = v.strip_suffix('*') {
        HeaderMatchSpecifier::StringMatch(prefix(rest, ignore_case))
    } else {
        HeaderMatchSpecifier::StringMatch(exact(v, ignore_case))
    };
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

pub fn path(v: &str) -> PathMatcher {
    PathMatcher {
        rule: Some(path_matcher::Rule::Path(glob(v))),
    }
}

pub fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

/// One matcher, or an OR of several.
pub fn or_values(mut matchers: Vec<ValueMatcher>) -> ValueMatcher {
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: matchers,
        })),
    }
}

/// An OR of [`glob`] matchers over `values`.
pub fn string_or(values: &[String]) -> ValueMatcher {
    or_values(values.iter().map(|v| string_value(glob(v))).collect())
}

pub fn list_one_of(v: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(v))),
            },
        ))),
    }
}

/// Metadata of `filter` at `keys`, compared with `value`.
pub fn metadata(filter: &str, keys: &[&str], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: filter.to_owned(),
        path: keys
            .iter()
            .map(|k| PathSegment {
                segment: Some(Segment::Key((*k).to_owned())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// Metadata that is either a list with an element matching `value`, or a scalar matching
/// it: JWT claims may be either.
pub fn metadata_list_or_scalar(
    filter: &str,
    keys: &[&str],
    value: ValueMatcher,
) -> MetadataMatcher {
    let either = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: vec![list_one_of(value.clone()), value],
        })),
    };
    metadata(filter, keys, either)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(m: &StringMatcher) -> (&MatchPattern, bool) {
        (m.match_pattern.as_ref().unwrap(), m.ignore_case)
    }

    #[test]
    fn globs() {
        let cases = [
            ("a", "", MatchPattern::Exact("a".into())),
            ("a*", "", MatchPattern::Prefix("a".into())),
            ("*a", "", MatchPattern::Suffix("a".into())),
            ("*", "", regex(".+").match_pattern.unwrap()),
            ("a", "spiffe://", MatchPattern::Exact("spiffe://a".into())),
            ("a*", "spiffe://", MatchPattern::Prefix("spiffe://a".into())),
            (
                "*.a",
                "spiffe://",
                regex(r"spiffe://.*\.a").match_pattern.unwrap(),
            ),
            ("*", "spiffe://", regex(".+").match_pattern.unwrap()),
        ];
        for (v, pre, want) in cases {
            let m = glob_with_prefix(v, pre);
            assert_eq!(pattern(&m), (&want, false), "{v} {pre}");
        }
    }

    #[test]
    fn quote_meta_escapes_what_go_escapes() {
        assert_eq!(quote_meta("my-sa.x+(y)"), r"my-sa\.x\+\(y\)");
        assert_eq!(quote_meta("a#b&c~d"), "a#b&c~d");
    }

    #[test]
    fn hosts_ignore_case_headers_do_not() {
        let h = host(":authority", "Example.com");
        let Some(HeaderMatchSpecifier::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match")
        };
        assert!(m.ignore_case);
        let h = header(":method", "GET");
        let Some(HeaderMatchSpecifier::StringMatch(m)) = h.header_match_specifier else {
            panic!("string match")
        };
        assert!(!m.ignore_case);
        assert_eq!(
            header("x", "*").header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
    }
}
