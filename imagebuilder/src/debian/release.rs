//! The signed `Release` text of a suite: which suite it is, when it stops being valid, and the
//! digests of the indexes it covers.
//!
//! A signature alone does not make a Release current: an old, validly signed Release (one
//! with known-vulnerable packages) or the Release of another suite can be served in its place.
//! apt refuses both, and so does [`Release::check`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::index::paragraphs;
use super::sha256::Sha256;
use super::Error;

/// How far in the future a `Date` may be before the Release is refused (apt's
/// `Acquire::Max-FutureTime`).
pub const MAX_FUTURE: Duration = Duration::from_secs(10);

/// A time field of the Release, as written and as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub text: String,
    pub time: SystemTime,
}

/// The fields of a verified `Release` text that a build relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: Option<Stamp>,
    pub valid_until: Option<Stamp>,
    /// The `SHA256` entries: `path -> (digest, size)`.
    pub files: BTreeMap<String, (Sha256, u64)>,
}

impl Release {
    /// Reads the text `gpgv` reported as signed; `url` names it in errors.
    pub fn parse(text: &str, url: &str) -> Result<Release, Error> {
        let paras = paragraphs(text);
        let fields = paras.first().cloned().unwrap_or_default();
        let stamp = |name: &str| -> Result<Option<Stamp>, Error> {
            let Some(text) = fields.get(name) else {
                return Ok(None);
            };
            let time = parse_date(text).ok_or_else(|| Error::BadRelease {
                url: url.to_string(),
                reason: format!("{name}: {text:?} is not a date"),
            })?;
            Ok(Some(Stamp {
                text: text.clone(),
                time,
            }))
        };
        let mut files = BTreeMap::new();
        for list in paras.iter().filter_map(|p| p.get("SHA256")) {
            for line in list.lines() {
                if let [hash, size, path] = line.split_whitespace().collect::<Vec<_>>()[..] {
                    if let (Ok(hash), Ok(size)) = (hash.parse(), size.parse()) {
                        files.insert(path.to_string(), (hash, size));
                    }
                }
            }
        }
        Ok(Release {
            suite: fields.get("Suite").cloned(),
            codename: fields.get("Codename").cloned(),
            date: stamp("Date")?,
            valid_until: stamp("Valid-Until")?,
            files,
        })
    }

    /// Refuses a Release of another suite than `asked`, one past its `Valid-Until`, and one
    /// dated in the future.
    pub fn check(&self, url: &str, asked: &str, now: SystemTime) -> Result<(), Error> {
        if self.suite.as_deref() != Some(asked) && self.codename.as_deref() != Some(asked) {
            let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
            return Err(Error::WrongSuite {
                url: url.to_string(),
                asked: asked.to_string(),
                suite: or_none(&self.suite),
                codename: or_none(&self.codename),
            });
        }
        if let Some(v) = self.valid_until.as_ref().filter(|v| v.time < now) {
            return Err(Error::Expired {
                url: url.to_string(),
                valid_until: v.text.clone(),
                ago: ago(now, v.time),
            });
        }
        if let Some(d) = self.date.as_ref().filter(|d| d.time > now + MAX_FUTURE) {
            return Err(Error::NotYetValid {
                url: url.to_string(),
                date: d.text.clone(),
            });
        }
        Ok(())
    }
}

/// `now - then`, to the second, for messages.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Parses the dates of Release files, `[Www, ]DD Mon YYYY HH:MM:SS ZONE` (RFC 1123 as apt
/// reads it; the zone is `UTC`, `GMT`, `UT`, `Z` or `±HHMM`).
pub fn parse_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    // The weekday is redundant; apt ignores it too.
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let [day, month, year, clock, zone] = s.split_whitespace().collect::<Vec<_>>()[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse().ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else {
        return None;
    };
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "UT" | "Z" => 0,
        z => {
            let (sign, digits) = match z.as_bytes().first()? {
                b'+' => (1, &z[1..]),
                b'-' => (-1, &z[1..]),
                _ => return None,
            };
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hh: i64 = digits[..2].parse().ok()?;
            let mm: i64 = digits[2..].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
