//! Which Debian repositories to read: a `--mirror` flag, else the host's apt sources.

use std::path::Path;

use super::index::paragraphs;

/// One suite of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Mirror root, e.g. `http://deb.debian.org/debian` (no trailing slash).
    pub uri: String,
    /// Suite, e.g. `bookworm-updates`.
    pub suite: String,
}

/// The Debian 12 suites of a mirror and of its security archive.
pub fn from_mirror(mirror: &str, security: Option<&str>) -> Vec<Source> {
    let m = mirror.trim_end_matches('/').to_string();
    let mut out = vec![
        Source {
            uri: m.clone(),
            suite: "bookworm".into(),
        },
        Source {
            uri: m,
            suite: "bookworm-updates".into(),
        },
    ];
    if let Some(s) = security {
        out.push(Source {
            uri: s.trim_end_matches('/').to_string(),
            suite: "bookworm-security".into(),
        });
    }
    out
}

/// Reads `bookworm*` suites with the `main` component from apt's configuration in `root`.
pub fn from_apt(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut push = |uri: &str, suite: &str, components: &str| {
        if suite.starts_with("bookworm") && components.split_whitespace().any(|c| c == "main") {
            let s = Source {
                uri: uri.trim_end_matches('/').to_string(),
                suite: suite.to_string(),
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
    };
    let dir = root.join("etc/apt/sources.list.d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.insert(0, root.join("etc/apt/sources.list"));
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if f.extension().is_some_and(|e| e == "sources") {
            for p in paragraphs(&text) {
                if p.get("Types")
                    .is_some_and(|t| !t.split_whitespace().any(|t| t == "deb"))
                {
                    continue;
                }
                let (Some(uris), Some(suites)) = (p.get("URIs"), p.get("Suites")) else {
                    continue;
                };
                let comps = p.get("Components").cloned().unwrap_or_default();
                for u in uris.split_whitespace() {
                    for s in suites.split_whitespace() {
                        push(u, s, &comps);
                    }
                }
            }
        } else if f.extension().is_some_and(|e| e == "list") {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
                if words.next() != Some("deb") {
                    continue;
                }
                let (Some(u), Some(s)) = (words.next(), words.next()) else {
                    continue;
                };
                let comps: Vec<&str> = words.collect();
                push(u, s, &comps.join(" "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let root = tempfile::tempdir().expect("tempdir");
        let d = root.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("debian.sources"),
            "Types: deb\nURIs: http://m/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://m/src\nSuites: bookworm\nComponents: main\n",
        )
        .expect("write");
        std::fs::write(
            root.path().join("etc/apt/sources.list"),
            "deb [arch=amd64] http://m/debian-security bookworm-security main # sec\ndeb http://other stable main\n",
        )
        .expect("write");
        let s = from_apt(root.path());
        let got: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.uri.as_str(), s.suite.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("http://m/debian-security", "bookworm-security"),
                ("http://m/debian", "bookworm"),
                ("http://m/debian", "bookworm-updates"),
            ]
        );
    }
}
