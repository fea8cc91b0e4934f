//! Where registry credentials may go: never over plain HTTP unless `--plain-http` was given.
//!
//! oci-client sends the Docker config's user and password to the token `realm` named by the
//! registry's `WWW-Authenticate` challenge, whatever that URL's scheme. So before it is
//! handed any credential, [`check`] reads the challenge itself, over HTTPS with redirects to
//! plain HTTP refused, with the parser oci-client uses, and refuses a realm that is not
//! HTTPS. Reading the challenge a second time is sound: the answer comes over TLS from the
//! registry itself, which could ask for the credentials directly (a Basic challenge) anyway;
//! what is refused is putting them on the wire in the clear. The other ways out are closed
//! already: oci-client does not authenticate upload locations of another host or scheme,
//! and reqwest drops `Authorization` on a redirect that changes host, port or scheme.

use std::time::Duration;

use http::header::WWW_AUTHENTICATE;
use oci_client::secrets::RegistryAuth;
use tracing::warn;

use super::push::PushOptions;
use super::Error;

/// The client for requests imagebuilder makes to the registry itself: HTTPS only (a
/// redirect to `http://` is an error) unless `--plain-http`.
pub fn http_client(o: &PushOptions) -> Result<reqwest::Client, Error> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .https_only(!o.plain_http)
        .danger_accept_invalid_certs(o.insecure)
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Client(e.to_string()))
}

/// Refuses, before any credential is sent, a registry whose challenge or redirects would
/// carry `creds` over plain HTTP when `--plain-http` was not given for it.
pub async fn check(o: &PushOptions, creds: &RegistryAuth) -> Result<(), Error> {
    if matches!(creds, RegistryAuth::Anonymous) {
        return Ok(());
    }
    if o.plain_http {
        warn!(registry = %o.registry, "credentials go over plain HTTP (--plain-http)");
        return Ok(());
    }
    let url = format!("https://{}/v2/", o.registry);
    let refuse = |target: String, why: String| Error::PlainHttpCredentials {
        registry: o.registry.clone(),
        target,
        why,
    };
    let resp = match http_client(o)?.get(&url).send().await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(to) = e.url().filter(|u| e.is_redirect() && u.scheme() != "https") {
                return Err(refuse(to.to_string(), format!("{url} redirects there")));
            }
            return Err(Error::Unreachable {
                url,
                reason: chain(&e),
            });
        }
    };
    if let Some(realm) = plain_realm(resp.headers().get_all(WWW_AUTHENTICATE)) {
        return Err(refuse(
            realm,
            "the token realm of the registry's challenge".into(),
        ));
    }
    Ok(())
}

/// The first `Bearer` realm of the challenges that is not an `https://` URL.
pub fn plain_realm<'a>(headers: impl IntoIterator<Item = &'a http::HeaderValue>) -> Option<String> {
    headers
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|text| {
            http_auth::ChallengeParser::new(text)
                .flatten()
                .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
                .flat_map(|c| c.params.into_iter())
                .filter(|(k, _)| k.eq_ignore_ascii_case("realm"))
                .map(|(_, v)| v.to_unescaped())
                .collect::<Vec<_>>()
        })
        .find(|realm| reqwest::Url::parse(realm).map_or(true, |u| u.scheme() != "https"))
}

/// An error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
