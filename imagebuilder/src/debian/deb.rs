//! Reading a `.deb`: the control paragraph, `md5sums`, and the data files as a tree.
//! Maintainer scripts are never run: images are assembled from files alone.

use std::io::Read;
use std::path::Path;

use crate::layer::{Entry, Kind, Tree};

use super::Error;

/// The parts of a `.deb` an image needs.
#[derive(Debug, Clone)]
pub struct DebContents {
    /// The `control` paragraph.
    pub control: String,
    pub md5sums: Option<String>,
    pub files: Tree,
}

fn malformed(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Malformed {
        package: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn decompress<'a>(name: &str, data: &'a [u8], path: &Path) -> Result<Box<dyn Read + 'a>, Error> {
    if name.ends_with(".xz") {
        Ok(Box::new(liblzma::read::XzDecoder::new(data)))
    } else if name.ends_with(".gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(data)))
    } else if name.ends_with(".tar") {
        Ok(Box::new(data))
    } else {
        Err(malformed(
            path,
            format!("unsupported member compression: {name}"),
        ))
    }
}

/// The path of a member of one of the package's tar archives.
fn member_path<R: Read>(e: &tar::Entry<'_, R>, path: &Path) -> Result<String, Error> {
    Ok(e.path()
        .map_err(|e| malformed(path, e))?
        .to_string_lossy()
        .into_owned())
}

/// Extracts a `.deb` file.
pub fn read(path: &Path) -> Result<DebContents, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let mut archive = ar::Archive::new(file);
    let (mut control_tar, mut data_tar) = (None, None);
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.map_err(|e| malformed(path, e))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).to_string();
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path.display(), e))?;
        if name.starts_with("control.tar") {
            control_tar = Some((name, buf));
        } else if name.starts_with("data.tar") {
            data_tar = Some((name, buf));
        }
    }
    let (cname, cdata) = control_tar.ok_or_else(|| malformed(path, "no control.tar member"))?;
    let (dname, ddata) = data_tar.ok_or_else(|| malformed(path, "no data.tar member"))?;

    let mut control = None;
    let mut md5sums = None;
    let mut ctar = tar::Archive::new(decompress(&cname, &cdata, path)?);
    for e in ctar.entries().map_err(|e| malformed(path, e))? {
        let mut e = e.map_err(|e| malformed(path, e))?;
        let slot = match member_path(&e, path)?.trim_start_matches("./") {
            "control" => &mut control,
            "md5sums" => &mut md5sums,
            _ => continue,
        };
        let mut s = String::new();
        e.read_to_string(&mut s).map_err(|e| malformed(path, e))?;
        *slot = Some(s);
    }
    let control = control.ok_or_else(|| malformed(path, "no control file"))?;

    let mut files = Tree::new();
    let mut hardlinks = Vec::new();
    let mut dtar = tar::Archive::new(decompress(&dname, &ddata, path)?);
    for e in dtar.entries().map_err(|e| malformed(path, e))? {
        let mut e = e.map_err(|e| malformed(path, e))?;
        let p = member_path(&e, path)?;
        let h = e.header();
        let mode = h.mode().map_err(|e| malformed(path, e))?;
        let uid = h.uid().map_err(|e| malformed(path, e))?;
        let gid = h.gid().map_err(|e| malformed(path, e))?;
        let link = e
            .link_name()
            .map_err(|e| malformed(path, e))?
            .map(|l| l.to_string_lossy().into_owned());
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(|e| malformed(path, e))?;
                Kind::File(data)
            }
            tar::EntryType::Symlink => Kind::Symlink(link.unwrap_or_default()),
            tar::EntryType::Link => {
                hardlinks.push((p, link.unwrap_or_default(), mode, uid, gid));
                continue;
            }
            other => {
                return Err(malformed(
                    path,
                    format!("{p}: unsupported entry type {other:?}"),
                ))
            }
        };
        files.insert(
            &p,
            Entry {
                kind,
                mode,
                uid,
                gid,
            },
        );
    }
    // Hard links become copies: layers stay self-contained and order-independent.
    for (p, target, mode, uid, gid) in hardlinks {
        let kind = files
            .get(&target)
            .map(|t| t.kind.clone())
            .ok_or_else(|| malformed(path, format!("{p}: hard link to missing {target}")))?;
        files.insert(
            &p,
            Entry {
                kind,
                mode,
                uid,
                gid,
            },
        );
    }
    Ok(DebContents {
        control,
        md5sums,
        files,
    })
}

/// The source package a binary package was built from, as `(name, version)`: the control
/// paragraph's `Source: name [(version)]`, defaulting to the package's own name and version.
pub fn source_package(control: &str) -> Option<(String, String)> {
    let para = super::index::paragraphs(control).into_iter().next()?;
    let name = para.get("Package")?;
    let version = para.get("Version")?;
    let Some(source) = para.get("Source") else {
        return Some((name.clone(), version.clone()));
    };
    let (src_name, src_version) = match source.split_once('(') {
        Some((n, v)) => (n.trim(), v.trim_end().trim_end_matches(')').trim()),
        None => (source.trim(), version.as_str()),
    };
    Some((src_name.to_string(), src_version.to_string()))
}

/// License names from a Debian copyright file (the `License:` fields of the DEP-5 format).
pub fn copyright_licenses(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            if !v.is_empty() && !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_from_dep5() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: GPL-2+\n\nFiles: lib/*\nLicense: LGPL-2.1+\n text\n\nLicense: GPL-2+\n full text\n";
        assert_eq!(copyright_licenses(text), ["GPL-2+", "LGPL-2.1+"]);
        assert!(copyright_licenses("free-form text only").is_empty());
    }

    #[test]
    fn source_package_from_control() {
        let cases = [
            ("Package: libc6\nVersion: 2.36-9+deb12u10\nSource: glibc\n", ("glibc", "2.36-9+deb12u10")),
            ("Package: libgcc-s1\nVersion: 12.2.0-14+deb12u1\nSource: gcc-12 (12.2.0-14+deb12u1)\n", ("gcc-12", "12.2.0-14+deb12u1")),
            // A binary-only upload: the binary's version has +bN, the source's has not.
            ("Package: libfoo1\nVersion: 1.0-1+b2\nSource: foo (1.0-1)\n", ("foo", "1.0-1")),
            ("Package: bash\nVersion: 5.2.15-2+b7\n", ("bash", "5.2.15-2+b7")),
        ];
        for (control, (name, version)) in cases {
            assert_eq!(
                source_package(control),
                Some((name.to_string(), version.to_string())),
                "{control}"
            );
        }
        assert_eq!(source_package("Description: no name\n"), None);
    }

    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn build_deb(dir: &Path) -> std::path::PathBuf {
        use std::io::Write;
        let mut control = tar::Builder::new(Vec::new());
        let ctl = b"Package: demo\nVersion: 1.0-1\nArchitecture: amd64\n";
        let mut h = header();
        h.set_size(ctl.len() as u64);
        h.set_mode(0o644);
        control
            .append_data(&mut h, "./control", &ctl[..])
            .expect("append");
        let control = crate::layer::gzip(&control.into_inner().expect("tar")).expect("gz");

        let mut data = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        data.append_data(&mut h, "./usr/bin/", std::io::empty())
            .expect("dir");
        let mut h = header();
        h.set_size(2);
        h.set_mode(0o4755);
        data.append_data(&mut h, "./usr/bin/demo", &b"hi"[..])
            .expect("file");
        let mut h = header();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o755);
        data.append_link(&mut h, "./usr/bin/demo2", "./usr/bin/demo")
            .expect("link");
        let data = crate::layer::gzip(&data.into_inner().expect("tar")).expect("gz");

        let path = dir.join("demo.deb");
        let mut ar = ar::Builder::new(std::fs::File::create(&path).expect("create"));
        for (name, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control),
            ("data.tar.gz", data),
        ] {
            let h = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
            ar.append(&h, &body[..]).expect("ar append");
        }
        ar.into_inner().expect("ar").flush().expect("flush");
        path
    }

    #[test]
    fn reads_a_deb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deb = read(&build_deb(dir.path())).expect("read");
        assert!(deb.control.contains("Package: demo"));
        let f = deb.files.get("usr/bin/demo").expect("file");
        assert_eq!(f.mode, 0o4755);
        assert_eq!(
            deb.files.get("usr/bin/demo2").expect("link").kind,
            Kind::File(b"hi".to_vec())
        );
    }
}
