//! The `--configDir` folder the file-mode drivers write: atomic replacement of a file, and
//! the VirtualService whose edits make full pushes.

use std::path::Path;

use anyhow::{Context, Result};

/// Replaces `dir/name` atomically (written beside the folder in `root`, then renamed into
/// it), so the server never reads half a file.
pub fn write_atomic(root: &Path, dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = root.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming into {name}"))?;
    Ok(())
}

/// VirtualService `svc-0` in `default` with an HTTP timeout of `round` seconds: each new
/// `round` changes the routes of every sidecar.
pub fn virtual_service(round: usize) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-0, namespace: default}}
spec:
  hosts: [svc-0.default.svc.cluster.local]
  http:
  - timeout: {round}s
    route:
    - destination: {{host: svc-0.default.svc.cluster.local}}
"#
    )
}
