//! Dependency resolution over a package universe: one candidate per name (the newest across
//! the configured suites), alternatives tried in order, virtual packages via `Provides`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::index::{Dep, Package};
use super::version;
use super::Error;

/// The packages available for resolution.
#[derive(Debug, Default)]
pub struct Universe {
    packages: BTreeMap<String, Package>,
    providers: BTreeMap<String, BTreeSet<String>>,
}

impl Universe {
    /// Builds a universe, keeping the newest version of each name.
    pub fn new(all: impl IntoIterator<Item = Package>) -> Self {
        let mut u = Universe::default();
        for p in all {
            let newer = u
                .packages
                .get(&p.name)
                .is_none_or(|old| version::compare(&p.version, &old.version).is_gt());
            if newer {
                u.packages.insert(p.name.clone(), p);
            }
        }
        for p in u.packages.values() {
            for v in &p.provides {
                u.providers
                    .entry(v.clone())
                    .or_default()
                    .insert(p.name.clone());
            }
        }
        u
    }

    fn candidate(&self, dep: &Dep) -> Option<&Package> {
        if let Some(p) = self.packages.get(&dep.name) {
            let ok = dep
                .constraint
                .as_ref()
                .is_none_or(|(op, v)| version::satisfies(&p.version, op, v));
            if ok {
                return Some(p);
            }
        }
        // A versioned dependency is not satisfied by a virtual package.
        if dep.constraint.is_some() {
            return None;
        }
        self.providers
            .get(&dep.name)
            .and_then(|names| names.iter().next())
            .and_then(|n| self.packages.get(n))
    }

    fn satisfied_by(&self, dep: &Dep, have: &BTreeSet<String>) -> bool {
        have.contains(&dep.name)
            || self
                .providers
                .get(&dep.name)
                .is_some_and(|ps| ps.iter().any(|p| have.contains(p)))
    }
}

/// Resolves `roots` and their dependencies.
///
/// `present` are packages already in a lower layer (they satisfy dependencies and are not
/// returned); a dependency group naming any of `exclude` is skipped, which is how data-only
/// packages (ca-certificates) come without the tools their maintainer scripts use.
/// Returns the new packages sorted by name.
pub fn resolve(
    universe: &Universe,
    roots: &[String],
    present: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
) -> Result<Vec<Package>, Error> {
    let mut have: BTreeSet<String> = present.clone();
    let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
    let mut queue: VecDeque<(String, Package)> = VecDeque::new();

    for r in roots {
        if have.contains(r) {
            continue;
        }
        let p = universe
            .candidate(&Dep {
                name: r.clone(),
                constraint: None,
            })
            .ok_or_else(|| Error::Resolve {
                package: r.clone(),
                reason: "no such package in the configured suites".into(),
            })?;
        if have.insert(p.name.clone()) {
            queue.push_back((r.clone(), p.clone()));
        }
    }

    while let Some((via, p)) = queue.pop_front() {
        for group in &p.depends {
            if group.iter().any(|d| exclude.contains(&d.name)) {
                continue;
            }
            if group.iter().any(|d| universe.satisfied_by(d, &have)) {
                continue;
            }
            let pick = group
                .iter()
                .find_map(|d| universe.candidate(d))
                .ok_or_else(|| {
                    let names: Vec<String> = group.iter().map(|d| d.name.clone()).collect();
                    Error::Resolve {
                        package: p.name.clone(),
                        reason: format!(
                            "no candidate for `{}` (needed via {via})",
                            names.join(" | ")
                        ),
                    }
                })?;
            if exclude.contains(&pick.name) {
                continue;
            }
            if have.insert(pick.name.clone()) {
                queue.push_back((via.clone(), pick.clone()));
            }
        }
        chosen.insert(p.name.clone(), p);
    }
    Ok(chosen.into_values().collect())
}

/// The names of the packages in `set` that `p` depends on (first satisfied alternative).
pub fn depends_within(universe: &Universe, p: &Package, set: &BTreeSet<String>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for group in &p.depends {
        for d in group {
            if set.contains(&d.name) {
                out.insert(d.name.clone());
                break;
            }
            if let Some(prov) = universe
                .providers
                .get(&d.name)
                .and_then(|ps| ps.iter().find(|n| set.contains(*n)))
            {
                out.insert(prov.clone());
                break;
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::index::parse_depends;

    fn pkg(name: &str, version: &str, depends: &str, provides: &[&str]) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            filename: format!("pool/{name}.deb"),
            sha256: crate::debian::sha256::Sha256::of(name.as_bytes()),
            size: 1,
            depends: parse_depends(depends),
            provides: provides.iter().map(|s| s.to_string()).collect(),
            mirror: "m".into(),
        }
    }

    fn names(ps: &[Package]) -> Vec<&str> {
        ps.iter().map(|p| p.name.as_str()).collect()
    }

    fn universe() -> Universe {
        Universe::new(vec![
            pkg("libc6", "2.36-9", "libgcc-s1", &[]),
            pkg(
                "libgcc-s1",
                "12.2.0-14",
                "gcc-12-base, libc6 (>= 2.35)",
                &[],
            ),
            pkg("gcc-12-base", "12.2.0-14", "", &[]),
            pkg(
                "ca-certificates",
                "20230311",
                "openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0",
                &[],
            ),
            pkg("openssl", "3.0.15-1", "libc6, libssl3", &[]),
            pkg("libssl3", "3.0.15-1", "libc6", &[]),
            pkg("debconf", "1.5.82", "perl-base", &["debconf-2.0"]),
            pkg("perl-base", "5.36.0-7", "libc6", &[]),
            pkg("mawk", "1.3.4", "libc6", &["awk"]),
            pkg("needs-awk", "1", "awk", &[]),
            pkg("libc6", "2.36-9+deb12u10", "libgcc-s1", &[]),
            pkg("too-new", "1", "libc6 (>= 9.0)", &[]),
        ])
    }

    #[test]
    fn resolves_closure_and_newest_version() {
        let u = universe();
        let got =
            resolve(&u, &["libc6".into()], &BTreeSet::new(), &BTreeSet::new()).expect("resolve");
        assert_eq!(names(&got), ["gcc-12-base", "libc6", "libgcc-s1"]);
        assert_eq!(got[1].version, "2.36-9+deb12u10");
    }

    #[test]
    fn excludes_skip_whole_groups() {
        let u = universe();
        let excl: BTreeSet<String> = ["openssl", "debconf"].map(String::from).into();
        let got =
            resolve(&u, &["ca-certificates".into()], &BTreeSet::new(), &excl).expect("resolve");
        assert_eq!(names(&got), ["ca-certificates"]);
        let all = resolve(
            &u,
            &["ca-certificates".into()],
            &BTreeSet::new(),
            &BTreeSet::new(),
        )
        .expect("resolve");
        assert_eq!(
            names(&all),
            [
                "ca-certificates",
                "debconf",
                "gcc-12-base",
                "libc6",
                "libgcc-s1",
                "libssl3",
                "openssl",
                "perl-base"
            ]
        );
    }

    #[test]
    fn present_packages_are_not_repeated_and_virtuals_resolve() {
        let u = universe();
        let present: BTreeSet<String> = ["libc6", "libgcc-s1", "gcc-12-base"]
            .map(String::from)
            .into();
        let got = resolve(&u, &["needs-awk".into()], &present, &BTreeSet::new()).expect("resolve");
        assert_eq!(names(&got), ["mawk", "needs-awk"]);
        assert_eq!(
            depends_within(&u, &got[1], &["mawk".to_string()].into()),
            ["mawk"]
        );
    }

    #[test]
    fn unsatisfiable_is_a_clear_error() {
        let u = universe();
        let err = resolve(&u, &["too-new".into()], &BTreeSet::new(), &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("libc6"), "{err}");
        let err = resolve(&u, &["nope".into()], &BTreeSet::new(), &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
