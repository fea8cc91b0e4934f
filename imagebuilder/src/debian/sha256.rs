//! SHA-256 digests as Debian writes them (64 lowercase hex digits), and hashing of streams.
//!
//! A [`Sha256`] names a cache file, so it is validated once, where it is read (the lock file,
//! an index), and cannot hold anything that would leave the cache directory.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// A SHA-256 digest: exactly 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

/// A string that is not a SHA-256 digest.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest (64 lowercase hex digits)")]
pub struct NotSha256(pub String);

impl Sha256 {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        Sha256(hex::encode(sha2::Sha256::digest(data)))
    }

    /// The digest and length of everything `r` yields.
    pub fn of_reader(mut r: impl Read) -> io::Result<(Sha256, u64)> {
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut r, &mut w)?;
        Ok(w.finish().1)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sha256 {
    type Err = NotSha256;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if s.len() == 64 && s.bytes().all(hex) {
            Ok(Sha256(s.to_string()))
        } else {
            Err(NotSha256(s.to_string()))
        }
    }
}

impl TryFrom<String> for Sha256 {
    type Error = NotSha256;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Sha256> for String {
    fn from(s: Sha256) -> String {
        s.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes and counts what is written through it on the way to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, and the digest and length of what was written.
    pub fn finish(self) -> (W, (Sha256, u64)) {
        let digest = Sha256(hex::encode(self.hasher.finalize()));
        (self.inner, (digest, self.len))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_the_right_length_parses() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(good.parse::<Sha256>().expect("valid").as_str(), good);
        for bad in [
            "../../etc",
            "",
            &good[..63],
            &format!("{good}0"),
            &good.to_uppercase(),
            &format!("{}/x", &good[..62]),
            &format!("{}g", &good[..63]),
        ] {
            let err = bad.parse::<Sha256>().unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex digits"), "{err}");
        }
    }

    #[test]
    fn serde_refuses_what_is_not_a_digest() {
        let v: Result<Sha256, _> = serde_json::from_str(r#""../../etc""#);
        let err = v.unwrap_err().to_string();
        assert!(err.contains(r#""../../etc" is not a SHA-256"#), "{err}");
        let d = Sha256::of(b"");
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(serde_json::from_str::<Sha256>(&json).expect("parse"), d);
    }

    #[test]
    fn streams_hash_like_slices() {
        let data = vec![7u8; 200_000];
        let (digest, len) = Sha256::of_reader(&data[..]).expect("read");
        assert_eq!((digest, len), (Sha256::of(&data), 200_000));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").expect("write");
        let (inner, (digest, len)) = w.finish();
        assert_eq!(
            (inner, digest, len),
            (b"abc".to_vec(), Sha256::of(b"abc"), 3)
        );
    }
}
