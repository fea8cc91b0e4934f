//! Remembered TokenReview answers, keyed by the SHA-256 of the token (the token itself is
//! never kept): an acceptance for at most [`ACCEPTED_TTL`] and never past the token's own
//! `exp`, a refusal for [`REFUSED_TTL`], as the API server's own token cache does. Each
//! kind has a bounded number of entries, so a flood of distinct junk tokens evicts only
//! other refusals, never an accepted token; the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{ReviewedToken, TokenReviewError};

/// How long an accepted token is taken on trust: the API server's own cache of
/// service-account tokens keeps a success 10 s.
pub const ACCEPTED_TTL: Duration = Duration::from_secs(10);
/// How long a refused token stays refused without asking again.
pub const REFUSED_TTL: Duration = Duration::from_secs(5);
/// Accepted tokens remembered at once.
pub const MAX_ACCEPTED: usize = 4096;
/// Refused tokens remembered at once.
pub const MAX_REFUSED: usize = 4096;

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenHash {
    /// A prefix, enough to tell tokens apart in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A review's outcome as remembered.
pub type Outcome = Result<ReviewedToken, TokenReviewError>;

/// Both kinds of remembered answers.
#[derive(Debug)]
pub struct ReviewCache {
    accepted: Bounded<ReviewedToken>,
    refused: Bounded<TokenReviewError>,
}

impl Default for ReviewCache {
    fn default() -> Self {
        ReviewCache::new(MAX_ACCEPTED, MAX_REFUSED)
    }
}

impl ReviewCache {
    pub fn new(max_accepted: usize, max_refused: usize) -> Self {
        ReviewCache {
            accepted: Bounded::new(max_accepted),
            refused: Bounded::new(max_refused),
        }
    }

    /// The remembered outcome for `key`, if it has not expired.
    pub fn get(&self, key: &TokenHash, now: Instant) -> Option<Outcome> {
        if let Some(ok) = self.accepted.get(key, now) {
            return Some(Ok(ok.clone()));
        }
        self.refused.get(key, now).map(|e| Err(e.clone()))
    }

    /// Remembers `outcome` if it is an answer from the API server: an acceptance until
    /// `token_exp` at the latest (`None` when the token does not say), a refusal the API
    /// server gave. Failures to ask (errors, overload) are not remembered.
    pub fn insert(
        &mut self,
        key: TokenHash,
        outcome: &Outcome,
        token_exp: Option<Instant>,
        now: Instant,
    ) {
        match outcome {
            Ok(reviewed) => {
                let mut expires = now + ACCEPTED_TTL;
                if let Some(exp) = token_exp {
                    expires = expires.min(exp);
                }
                if expires > now {
                    self.refused.remove(&key);
                    self.accepted.insert(key, reviewed.clone(), expires, now);
                }
            }
            Err(e) if e.is_answer() => {
                self.refused.insert(key, e.clone(), now + REFUSED_TTL, now);
            }
            Err(_) => {}
        }
    }

    /// Entries held (expired ones included until they are swept), accepted and refused.
    pub fn len(&self) -> (usize, usize) {
        (self.accepted.entries.len(), self.refused.entries.len())
    }
}

/// Entries with an expiry, at most `capacity`, the oldest evicted first.
#[derive(Debug)]
struct Bounded<V> {
    capacity: usize,
    entries: HashMap<TokenHash, (V, Instant)>,
    /// Keys in insertion order with the expiry they were inserted with; a key inserted
    /// again leaves a stale record, recognised by its expiry.
    order: VecDeque<(TokenHash, Instant)>,
}

impl<V> Bounded<V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &TokenHash, now: Instant) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v)
    }

    fn remove(&mut self, key: &TokenHash) {
        self.entries.remove(key);
    }

    fn insert(&mut self, key: TokenHash, value: V, expires: Instant, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        // Expired entries at the front go first, then the oldest while full.
        while let Some(&(k, at)) = self.order.front() {
            let current = self.entries.get(&k).map(|(_, e)| *e);
            let stale = current != Some(at);
            let expired = current.is_some_and(|e| e <= now);
            let full = self.entries.len() >= self.capacity && !self.entries.contains_key(&key);
            if !(stale || expired || full) {
                break;
            }
            self.order.pop_front();
            if !stale {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (value, expires));
        self.order.push_back((key, expires));
        // Stale records of keys inserted again could pile up behind a long-lived entry.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(k, at)| entries.get(k).is_some_and(|(_, e)| e == at));
        }
    }
}

#[cfg(test)]
mod tests;
