//! Credentials as `docker login` leaves them: `auths`, `credHelpers` and `credsStore` in
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Keys under which `docker login` may have stored a registry.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" || registry == "index.docker.io" {
        keys.push("https://index.docker.io/v1/".into());
    }
    keys
}

/// Runs `docker-credential-<helper> get` (or `helper` itself if it is a path).
pub fn from_helper(helper: &str, server: &str) -> Result<RegistryAuth, Error> {
    let program = if helper.contains('/') {
        helper.to_string()
    } else {
        format!("docker-credential-{helper}")
    };
    let err = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        server: server.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Helpers answer "credentials not found in native keychain" when there is nothing.
        if msg.contains("not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(err(format!(
            "{msg} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|e| err(e.to_string()))?;
    if reply.username == "<token>" {
        Ok(RegistryAuth::Bearer(reply.secret))
    } else {
        Ok(RegistryAuth::Basic(reply.username, reply.secret))
    }
}

fn from_entry(e: &AuthEntry, path: &Path) -> Result<Option<RegistryAuth>, Error> {
    if let Some(t) = &e.identitytoken {
        return Ok(Some(RegistryAuth::Bearer(t.clone())));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
    }
    let Some(b64) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason: String| Error::DockerConfig {
        path: path.display().to_string(),
        reason,
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| bad(format!("auth is not base64: {e}")))?;
    let s = String::from_utf8(raw).map_err(|e| bad(format!("auth is not UTF-8: {e}")))?;
    let (u, p) = s
        .split_once(':')
        .ok_or_else(|| bad("auth is not user:password".into()))?;
    Ok(Some(RegistryAuth::Basic(u.to_string(), p.to_string())))
}

/// The credentials for `registry` from the Docker config at `path`; anonymous if none.
pub fn for_registry(path: &Path, registry: &str) -> Result<RegistryAuth, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => {
            return Err(Error::DockerConfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| Error::DockerConfig {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let keys = keys_for(registry);
    if let Some(h) = keys.iter().find_map(|k| cfg.cred_helpers.get(k)) {
        return from_helper(h, registry);
    }
    for k in &keys {
        if let Some(e) = cfg.auths.get(k) {
            if let Some(a) = from_entry(e, path)? {
                return Ok(a);
            }
        }
    }
    if let Some(store) = &cfg.creds_store {
        return from_helper(store, registry);
    }
    Ok(RegistryAuth::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(a: RegistryAuth) -> (String, String) {
        match a {
            RegistryAuth::Basic(u, p) => (u, p),
            other => panic!("not basic: {other:?}"),
        }
    }

    #[test]
    fn reads_auths_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"},"https://r.example":{"username":"bob","password":"pw"}}}"#,
        )
        .expect("write");
        assert_eq!(
            basic(for_registry(&path, "127.0.0.1:5000").expect("auth")),
            ("alice".into(), "s3cret".into())
        );
        assert_eq!(
            basic(for_registry(&path, "r.example").expect("auth")),
            ("bob".into(), "pw".into())
        );
        assert!(matches!(
            for_registry(&path, "other").expect("auth"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            for_registry(&dir.path().join("missing.json"), "x").expect("auth"),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn runs_credential_helpers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"u-$server\\\",\\\"Secret\\\":\\\"tok\\\"}\"\n",
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"credHelpers":{{"reg.a":"{}"}},"credsStore":"{}","auths":{{"reg.b":{{}}}}}}"#,
                helper.display(),
                helper.display()
            ),
        )
        .expect("write");
        assert_eq!(
            basic(for_registry(&path, "reg.a").expect("auth")),
            ("u-reg.a".into(), "tok".into())
        );
        // An empty auths entry (as left by a creds store) falls through to credsStore.
        assert_eq!(
            basic(for_registry(&path, "reg.b").expect("auth")),
            ("u-reg.b".into(), "tok".into())
        );
    }
}
