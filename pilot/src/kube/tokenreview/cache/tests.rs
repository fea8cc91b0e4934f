//! The cache's bounds: expiry, capacity, and refusals never evicting acceptances.

use super::*;

fn token(n: usize) -> TokenHash {
    TokenHash::of(&format!("token-{n}"))
}

fn reviewed(sa: &str) -> Outcome {
    Ok(ReviewedToken {
        namespace: "demo".into(),
        service_account: sa.into(),
        pod_name: None,
        pod_uid: None,
    })
}

fn refused() -> Outcome {
    Err(TokenReviewError::NotAuthenticated)
}

#[test]
fn entries_expire() {
    let mut cache = ReviewCache::default();
    let now = Instant::now();
    cache.insert(token(1), &reviewed("a"), None, now);
    cache.insert(token(2), &refused(), None, now);
    assert!(matches!(cache.get(&token(1), now), Some(Ok(_))));
    assert!(matches!(cache.get(&token(2), now), Some(Err(_))));
    assert!(cache.get(&token(2), now + REFUSED_TTL).is_none());
    assert!(cache.get(&token(1), now + REFUSED_TTL).is_some());
    assert!(cache.get(&token(1), now + ACCEPTED_TTL).is_none());
    // An `exp` sooner than the TTL wins; one already past keeps nothing.
    cache.insert(
        token(3),
        &reviewed("b"),
        Some(now + Duration::from_secs(2)),
        now,
    );
    assert!(cache.get(&token(3), now + Duration::from_secs(1)).is_some());
    assert!(cache.get(&token(3), now + Duration::from_secs(2)).is_none());
    cache.insert(token(4), &reviewed("c"), Some(now), now);
    assert!(cache.get(&token(4), now).is_none());
}

#[test]
fn only_answers_are_remembered() {
    let mut cache = ReviewCache::default();
    let now = Instant::now();
    for (n, e) in [
        TokenReviewError::Busy,
        TokenReviewError::Timeout,
        TokenReviewError::NotAJwt("x"),
    ]
    .into_iter()
    .enumerate()
    {
        cache.insert(token(n), &Err(e), None, now);
        assert!(cache.get(&token(n), now).is_none());
    }
    assert_eq!(cache.len(), (0, 0));
}

#[test]
fn a_flood_of_refusals_evicts_only_refusals_oldest_first() {
    let mut cache = ReviewCache::new(4, 8);
    let now = Instant::now();
    for n in 0..4 {
        cache.insert(token(n), &reviewed("a"), None, now);
    }
    for n in 100..10_100 {
        cache.insert(token(n), &refused(), None, now);
    }
    assert_eq!(cache.len(), (4, 8), "bounded");
    for n in 0..4 {
        assert!(
            matches!(cache.get(&token(n), now), Some(Ok(_))),
            "acceptance {n} kept"
        );
    }
    assert!(
        cache.get(&token(100), now).is_none(),
        "the oldest refusal went"
    );
    assert!(cache.get(&token(10_099), now).is_some(), "the newest stays");
    // A full set of acceptances drops its oldest too.
    cache.insert(token(4), &reviewed("b"), None, now);
    assert!(cache.get(&token(0), now).is_none());
    assert!(cache.get(&token(4), now).is_some());
}

#[test]
fn a_token_accepted_after_a_refusal_is_accepted() {
    let mut cache = ReviewCache::default();
    let now = Instant::now();
    cache.insert(token(1), &refused(), None, now);
    cache.insert(token(1), &reviewed("a"), None, now);
    assert!(matches!(cache.get(&token(1), now), Some(Ok(_))));
}

#[test]
fn inserting_one_key_again_and_again_stays_bounded() {
    let mut cache = ReviewCache::new(2, 2);
    let start = Instant::now();
    for i in 0..1000u64 {
        let now = start + Duration::from_millis(i);
        cache.insert(token(1), &refused(), None, now);
        cache.insert(token(2), &refused(), None, now);
    }
    assert!(
        cache.refused.order.len() <= 4,
        "{}",
        cache.refused.order.len()
    );
    assert_eq!(cache.len(), (0, 2));
}

#[test]
fn the_hash_is_sha256_and_its_debug_form_a_prefix() {
    let h = TokenHash::of("abc");
    // SHA-256("abc") starts ba7816bf8f01.
    assert_eq!(format!("{h:?}"), "ba7816bf8f01");
}
