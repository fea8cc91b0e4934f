//! A `vulnerabilities` section added to an SBOM: the scan's findings, each pointing at the
//! affected component by `bom-ref`, with VEX analyses where statements exist.

use cyclonedx_bom::models::bom::{Bom, SpecVersion};
use cyclonedx_bom::validation::Validate;
use serde_json::{json, Map, Value};

use crate::Error;

/// One vulnerability of one component.
#[derive(Debug, Clone, PartialEq)]
pub struct Vulnerability {
    /// The advisory id (`RUSTSEC-2020-0071`, `CVE-2023-4911`).
    pub id: String,
    /// Name and URL of the advisory's source.
    pub source: (String, String),
    /// Other ids of the same vulnerability.
    pub aliases: Vec<String>,
    /// `bom-ref` of the affected component.
    pub affects: String,
    pub installed: String,
    pub fixed: Option<String>,
    /// A CycloneDX severity: `critical`, `high`, `medium`, `low`, `info`, `none`, `unknown`.
    pub severity: String,
    /// CVSS vector (`CVSS:3.1/...`) and base score.
    pub cvss: Option<(String, f64)>,
    pub description: Option<String>,
    pub analysis: Option<Analysis>,
}

/// What a VEX statement says about a vulnerability (CycloneDX `analysis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// `not_affected`, `resolved`, `exploitable`, `in_triage`, ...
    pub state: String,
    /// `code_not_present`, `code_not_reachable`, ...
    pub justification: Option<String>,
    pub detail: Option<String>,
}

/// The CycloneDX rating method of a CVSS vector.
fn cvss_method(vector: &str) -> &'static str {
    if vector.starts_with("CVSS:3.1/") {
        "CVSSv31"
    } else if vector.starts_with("CVSS:3.0/") {
        "CVSSv3"
    } else if vector.starts_with("CVSS:4.0/") {
        "CVSSv4"
    } else {
        "CVSSv2"
    }
}

fn advisory_source(id: &str) -> Option<Value> {
    let (name, url) = if id.starts_with("CVE-") {
        ("NVD", format!("https://nvd.nist.gov/vuln/detail/{id}"))
    } else if id.starts_with("GHSA-") {
        ("GitHub", format!("https://github.com/advisories/{id}"))
    } else if id.starts_with("RUSTSEC-") {
        (
            "RustSec",
            format!("https://rustsec.org/advisories/{id}.html"),
        )
    } else if id.starts_with("DSA-") || id.starts_with("DLA-") || id.starts_with("DEBIAN-") {
        ("OSV", format!("https://osv.dev/vulnerability/{id}"))
    } else {
        return None;
    };
    Some(json!({"name": name, "url": url}))
}

fn entry(v: &Vulnerability) -> Value {
    let source = json!({"name": v.source.0, "url": v.source.1});
    let mut rating = Map::new();
    rating.insert("source".into(), source.clone());
    rating.insert("severity".into(), json!(v.severity));
    if let Some((vector, score)) = &v.cvss {
        rating.insert("score".into(), json!(score));
        rating.insert("method".into(), json!(cvss_method(vector)));
        rating.insert("vector".into(), json!(vector));
    }
    let mut e = Map::new();
    e.insert(
        "bom-ref".into(),
        json!(format!("vuln:{}:{}", v.id, v.affects)),
    );
    e.insert("id".into(), json!(v.id));
    e.insert("source".into(), source);
    let references: Vec<Value> = v
        .aliases
        .iter()
        .filter_map(|a| advisory_source(a).map(|s| json!({"id": a, "source": s})))
        .collect();
    if !references.is_empty() {
        e.insert("references".into(), json!(references));
    }
    e.insert("ratings".into(), json!([rating]));
    if let Some(d) = &v.description {
        e.insert("description".into(), json!(d));
    }
    if let Some(f) = &v.fixed {
        e.insert("recommendation".into(), json!(format!("Upgrade to {f}")));
    }
    if let Some(a) = &v.analysis {
        let mut an = Map::new();
        an.insert("state".into(), json!(a.state));
        if let Some(j) = &a.justification {
            an.insert("justification".into(), json!(j));
        }
        if let Some(d) = &a.detail {
            an.insert("detail".into(), json!(d));
        }
        e.insert("analysis".into(), Value::Object(an));
    }
    let mut versions = vec![json!({"version": v.installed, "status": "affected"})];
    if let Some(f) = &v.fixed {
        versions.push(json!({"version": f, "status": "unaffected"}));
    }
    e.insert(
        "affects".into(),
        json!([{"ref": v.affects, "versions": versions}]),
    );
    Value::Object(e)
}

/// Returns `sbom` (CycloneDX 1.5 JSON) with a `vulnerabilities` section listing `vulns`, as
/// the next version of the same BOM, after checking it with the crate's validator.
pub fn with_vulnerabilities(sbom: &[u8], vulns: &[Vulnerability]) -> Result<Vec<u8>, Error> {
    let mut doc: Value = serde_json::from_slice(sbom).map_err(|e| Error::Json(e.to_string()))?;
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| Error::Json("the SBOM is not a JSON object".into()))?;
    obj.insert(
        "vulnerabilities".into(),
        Value::Array(vulns.iter().map(entry).collect()),
    );
    let version = obj.get("version").and_then(Value::as_u64).unwrap_or(1);
    obj.insert("version".into(), json!(version + 1));

    let text = serde_json::to_vec(&doc).map_err(|e| Error::Json(e.to_string()))?;
    let bom = Bom::parse_from_json_v1_5(&text[..]).map_err(|e| Error::Invalid(e.to_string()))?;
    let result = bom.validate_version(SpecVersion::V1_5);
    if result.has_errors() {
        return Err(Error::Invalid(format!("{result:?}")));
    }
    let mut pretty = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Json(e.to_string()))?;
    pretty.push(b'\n');
    Ok(pretty)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SBOM: &str = r#"{
      "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
      "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
      "components": [
        {"type": "library", "bom-ref": "crate:time@0.1.43", "name": "time", "version": "0.1.43",
         "purl": "pkg:cargo/time@0.1.43"}
      ]
    }"#;

    fn vuln() -> Vulnerability {
        Vulnerability {
            id: "RUSTSEC-2020-0071".into(),
            source: (
                "RustSec".into(),
                "https://rustsec.org/advisories/RUSTSEC-2020-0071.html".into(),
            ),
            aliases: vec!["CVE-2020-26235".into(), "GHSA-wcg3-cvx6-7396".into()],
            affects: "crate:time@0.1.43".into(),
            installed: "0.1.43".into(),
            fixed: Some("0.2.23".into()),
            severity: "medium".into(),
            cvss: Some(("CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H".into(), 6.2)),
            description: Some("Potential segfault in the time crate".into()),
            analysis: None,
        }
    }

    #[test]
    fn adds_a_valid_vulnerabilities_section() {
        let mut suppressed = vuln();
        suppressed.id = "RUSTSEC-2099-0001".into();
        suppressed.cvss = None;
        suppressed.severity = "unknown".into();
        suppressed.analysis = Some(Analysis {
            state: "not_affected".into(),
            justification: Some("code_not_reachable".into()),
            detail: Some("never called".into()),
        });
        let out = with_vulnerabilities(SBOM.as_bytes(), &[vuln(), suppressed]).expect("valid");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["version"], 2);
        let vulns = v["vulnerabilities"].as_array().expect("vulnerabilities");
        assert_eq!(vulns.len(), 2);
        assert_eq!(vulns[0]["affects"][0]["ref"], "crate:time@0.1.43");
        assert_eq!(vulns[0]["ratings"][0]["method"], "CVSSv31");
        assert_eq!(vulns[0]["references"][0]["id"], "CVE-2020-26235");
        assert_eq!(vulns[1]["analysis"]["state"], "not_affected");
    }

    #[test]
    fn an_invalid_analysis_state_is_refused() {
        let mut bad = vuln();
        bad.analysis = Some(Analysis {
            state: "maybe".into(),
            justification: None,
            detail: None,
        });
        assert!(with_vulnerabilities(SBOM.as_bytes(), &[bad]).is_err());
    }
}
