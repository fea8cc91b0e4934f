//! `InRelease` signature verification.
//!
//! Verification is delegated to `gpgv` from Debian's `gpgv` package, checked against the
//! keyrings of `debian-archive-keyring`: it is the verifier apt itself uses, it reads those
//! keyrings as shipped, and it keeps a full OpenPGP implementation out of this build. Only
//! the bytes `gpgv` reports as signed are parsed afterwards.

use std::path::Path;
use std::process::Command;

use super::Error;

/// Default keyring of the Debian archive signing keys.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Verifies a clearsigned `InRelease` document and returns the signed text.
pub fn verify_inrelease(inrelease: &[u8], keyring: &Path, url: &str) -> Result<String, Error> {
    let sig_err = |reason: String| Error::Signature {
        url: url.to_string(),
        reason,
    };
    if !keyring.exists() {
        return Err(sig_err(format!(
            "keyring {} not found (install debian-archive-keyring)",
            keyring.display()
        )));
    }
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let input = dir.path().join("InRelease");
    let output = dir.path().join("Release");
    std::fs::write(&input, inrelease).map_err(|e| Error::io(input.display(), e))?;
    let out = Command::new("gpgv")
        .arg("--quiet")
        .arg("--keyring")
        .arg(keyring)
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .output()
        .map_err(|e| sig_err(format!("running gpgv (install the gpgv package): {e}")))?;
    if !out.status.success() {
        return Err(sig_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = std::fs::read(&output).map_err(|e| Error::io(output.display(), e))?;
    String::from_utf8(text).map_err(|e| sig_err(format!("signed text is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_or_tampered_text_is_rejected() {
        if !Path::new(DEBIAN_KEYRING).exists() {
            panic!("{DEBIAN_KEYRING} missing: run scripts/install-deps.sh");
        }
        let fake = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n";
        let err = verify_inrelease(fake, Path::new(DEBIAN_KEYRING), "test").unwrap_err();
        assert!(err.to_string().contains("signature check failed"), "{err}");
    }
}
