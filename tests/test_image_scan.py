"""`imagebuilder scan` and `imagebuilder vex` on the images the build tests make: the real RustSec
advisory database, Debian tracker and OSV data in their published formats, OpenVEX suppression,
and the CycloneDX output checked by cyclonedx-python-lib's strict validator."""

import copy
import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from image_support import ROOT, build, image, imagebuilder, run, workdir

RUSTSEC = ROOT.parent / "shared" / "data" / "rustsec-advisory-db"


@pytest.fixture(scope="module")
def rustsec():
    if not (RUSTSEC / "crates").is_dir():
        pytest.skip(f"no RustSec snapshot at {RUSTSEC} (../shared/data is not checked out)")
    return RUSTSEC


def scan(*args, check_rc=None):
    p = run([imagebuilder(), "scan", *args], check=False, cwd=ROOT)
    if check_rc is not None:
        assert p.returncode == check_rc, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def validate_cyclonedx(text):
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert errors is None, errors


def sbom_path(variant="runtime"):
    out, refs = build()
    return Path(image(refs, variant)["sbom"])


def with_crates(name, *crates):
    """A copy of the runtime SBOM that also lists `crates` ((name, version) pairs)."""
    doc = json.loads(sbom_path().read_text())
    for n, v in crates:
        doc["components"].append({
            "type": "library", "bom-ref": f"crate:{n}@{v}", "name": n, "version": v,
            "purl": f"pkg:cargo/{n}@{v}",
        })
    path = workdir() / name
    path.write_text(json.dumps(doc))
    return path


def test_sbom_records_source_packages_and_codename():
    doc = json.loads(sbom_path().read_text())
    props = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert props["imagebuilder:debian:codename"] == "bookworm"
    debs = {c["name"]: c for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/")}
    source = {n: {p["name"]: p["value"] for p in c["properties"]} for n, c in debs.items()}
    assert source["libc6"]["imagebuilder:debian:source"] == "glibc"
    assert source["libgcc-s1"]["imagebuilder:debian:source"].startswith("gcc-")
    assert source["ca-certificates"]["imagebuilder:debian:source"] == "ca-certificates"
    for n, s in source.items():
        assert s["imagebuilder:debian:source_version"], n


@pytest.mark.parametrize("variant", ["runtime", "dev"])
def test_scan_of_a_build_validates_as_cyclonedx(rustsec, variant, tmp_path):
    out, refs = build()
    report = tmp_path / "scan.cdx.json"
    scan("--out", out, "--variant", variant, "--db", rustsec, "--format", "cyclonedx", "-o", report, check_rc=0)
    text = report.read_text()
    validate_cyclonedx(text)
    doc = json.loads(text)
    assert "vulnerabilities" in doc
    refs_in_sbom = {c["bom-ref"] for c in doc["components"]}
    for v in doc["vulnerabilities"]:
        assert v["affects"][0]["ref"] in refs_in_sbom
    # The JSON report names the image by its manifest digest.
    p = scan("--out", out, "--variant", variant, "--db", rustsec, "--format", "json", check_rc=0)
    j = json.loads(p.stdout)
    digest = image(refs, variant)["manifest"].replace(":", "%3A")
    assert j["image"].startswith(f"pkg:oci/istio-pilot@{digest}?"), j["image"]
    assert j["components"]["debs"] > 0 and j["components"]["crates"] > 0


def test_known_vulnerable_crate_is_reported_and_patched_one_is_not(rustsec, tmp_path):
    sbom = with_crates("vulnerable.cdx.json", ("time", "0.1.43"), ("time", "0.2.23"))
    p = scan("--sbom", sbom, "--db", rustsec, "--format", "json", check_rc=0)
    results = json.loads(p.stdout)["results"]
    time = [r for r in results if r["component"]["name"] == "time"]
    assert [(r["id"], r["installed"], r["fixed"]) for r in time] == [("RUSTSEC-2020-0071", "0.1.43", "0.2.23")]
    assert "CVE-2020-26235" in time[0]["aliases"]
    assert time[0]["component"]["purl"] == "pkg:cargo/time@0.1.43"
    assert time[0]["severity"] == "medium"

    # --fail-on: 1 at or above the threshold, 0 below it.
    worst = max((r["severity"] for r in results), key=["negligible", "unknown", "low", "medium", "high", "critical"].index)
    scan("--sbom", sbom, "--db", rustsec, "--fail-on", "medium", check_rc=1)
    if worst != "critical":
        scan("--sbom", sbom, "--db", rustsec, "--fail-on", "critical", check_rc=0)
    # A scan that cannot run exits 2.
    scan("--sbom", tmp_path / "missing.json", "--db", rustsec, check_rc=2)
    scan("--sbom", sbom, "--db", tmp_path, check_rc=2)

    # SARIF: one result per finding, pointing at the component.
    p = scan("--sbom", sbom, "--db", rustsec, "--format", "sarif", check_rc=0)
    sarif = json.loads(p.stdout)
    assert sarif["version"] == "2.1.0"
    res = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "RUSTSEC-2020-0071"]
    assert res[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "pkg:cargo/time@0.1.43"

    out = tmp_path / "scan.cdx.json"
    scan("--sbom", sbom, "--db", rustsec, "--format", "cyclonedx", "-o", out, check_rc=0)
    validate_cyclonedx(out.read_text())
    v = [v for v in json.loads(out.read_text())["vulnerabilities"] if v["id"] == "RUSTSEC-2020-0071"]
    assert v[0]["affects"][0]["ref"] == "crate:time@0.1.43"
    assert v[0]["ratings"][0]["method"] == "CVSSv31"


def test_vex_not_affected_suppresses_a_finding(rustsec, tmp_path):
    sbom = with_crates("vex.cdx.json", ("time", "0.1.43"))
    j = json.loads(scan("--sbom", sbom, "--db", rustsec, "--format", "json", check_rc=0).stdout)
    vex = tmp_path / "pilot.openvex.json"
    run([
        imagebuilder(), "vex", "--product", "pkg:oci/istio-pilot",
        "--subcomponent", "pkg:cargo/time@0.1.43",
        "--vulnerability", "CVE-2020-26235", "--status", "not_affected",
        "--justification", "vulnerable_code_not_in_execute_path",
        "--author", "platform team", "--source-date-epoch", "1700000000", "-o", vex,
    ])
    doc = json.loads(vex.read_text())
    assert doc["@context"] == "https://openvex.dev/ns/v0.2.0"
    assert doc["timestamp"] == "2023-11-14T22:13:20Z"
    assert doc["statements"][0]["status"] == "not_affected"

    p = scan("--sbom", sbom, "--db", rustsec, "--vex", vex, check_rc=0)
    assert "suppressed by VEX:" in p.stdout, p.stdout
    assert f"RUSTSEC-2020-0071 pkg:cargo/time@0.1.43: not_affected (vulnerable_code_not_in_execute_path) ({vex})" in p.stdout
    rows = [l for l in p.stdout.splitlines() if "RUSTSEC-2020-0071" in l]
    assert len(rows) == 1, "listed once, as suppressed, not as a finding"

    after = json.loads(scan("--sbom", sbom, "--db", rustsec, "--vex", vex, "--format", "json", check_rc=0).stdout)
    assert len(after["results"]) == len(j["results"]), "suppressed findings stay in the JSON, marked"
    r = next(r for r in after["results"] if r["id"] == "RUSTSEC-2020-0071")
    assert r["vex"]["status"] == "not_affected"

    # A later `affected` statement (appended) overrides; the finding is back.
    run([
        imagebuilder(), "vex", "--append", vex, "--product", "pkg:oci/istio-pilot",
        "--vulnerability", "RUSTSEC-2020-0071", "--status", "affected",
        "--action-statement", "upgrade time", "--source-date-epoch", "1700000100",
    ])
    assert json.loads(vex.read_text())["version"] == 2
    p = scan("--sbom", sbom, "--db", rustsec, "--vex", vex, "--fail-on", "medium", check_rc=1)
    assert "suppressed by VEX" not in p.stdout
    assert "affected (upgrade time)" in p.stdout

    # Statements the spec forbids are refused.
    p = run([imagebuilder(), "vex", "--product", "pkg:oci/istio-pilot", "--vulnerability", "CVE-1",
             "--status", "not_affected"], check=False)
    assert p.returncode != 0 and "justification" in p.stderr


def installed_source(sbom, package):
    doc = json.loads(sbom.read_text())
    c = next(c for c in doc["components"] if c["name"] == package)
    props = {p["name"]: p["value"] for p in c["properties"]}
    return props["imagebuilder:debian:source"], props["imagebuilder:debian:source_version"]


def test_debian_tracker_and_osv_match_source_packages(tmp_path):
    out, refs = build()
    sbom = sbom_path()
    source, version = installed_source(sbom, "libc6")
    db = tmp_path / "db"
    (db / "debian").mkdir(parents=True)
    (db / "osv").mkdir()
    tracker = {
        source: {
            "CVE-2099-0001": {"description": "fixed after the installed version", "releases": {
                "bookworm": {"status": "resolved", "fixed_version": version + "+1", "urgency": "high"}}},
            "CVE-2099-0002": {"description": "fixed at the installed version", "releases": {
                "bookworm": {"status": "resolved", "fixed_version": version, "urgency": "high"}}},
            "CVE-2099-0003": {"description": "another release only", "releases": {
                "trixie": {"status": "open", "urgency": "high"}}},
            "CVE-2099-0004": {"description": "open", "releases": {
                "bookworm": {"status": "open", "urgency": "low"}}},
        },
        "libc6": {"CVE-2099-0005": {"description": "a binary package name is not a source package", "releases": {
            "bookworm": {"status": "open", "urgency": "high"}}}},
    }
    (db / "debian" / "tracker.json").write_text(json.dumps(tracker))
    (db / "osv" / "DSA-9999-1.json").write_text(json.dumps({
        "id": "DSA-9999-1", "summary": f"{source} - security update", "upstream": ["CVE-2099-0006"],
        "affected": [{"package": {"ecosystem": "Debian:12", "name": source},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:" + version}]}]}],
    }))
    (db / "osv" / "DLA-9999-1.json").write_text(json.dumps({
        "id": "DLA-9999-1", "affected": [{"package": {"ecosystem": "Debian:11", "name": source},
                                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
    }))

    p = scan("--out", out, "--db", db, "--format", "json", check_rc=0)
    results = json.loads(p.stdout)["results"]
    libc6 = sorted(r["id"] for r in results if r["component"]["name"] == "libc6")
    assert libc6 == ["CVE-2099-0001", "CVE-2099-0004", "DSA-9999-1"], results
    r = next(r for r in results if r["id"] == "CVE-2099-0001" and r["component"]["name"] == "libc6")
    assert (r["installed"], r["fixed"], r["severity"]) == (version, version + "+1", "high")
    assert r["component"]["package"] == source
    dsa = next(r for r in results if r["id"] == "DSA-9999-1")
    assert dsa["fixed"] == "1:" + version and "CVE-2099-0006" in dsa["aliases"]
    scan("--out", out, "--db", db, "--fail-on", "high", check_rc=1)

    report = tmp_path / "scan.cdx.json"
    scan("--out", out, "--db", db, "--format", "cyclonedx", "-o", report, check_rc=0)
    validate_cyclonedx(report.read_text())


def test_shipped_vex_suppresses_the_rsa_advisory_in_the_real_image(rustsec):
    """RUSTSEC-2023-0071 (rsa, no fixed release) is in pilot-discovery's crates; the project's
    own OpenVEX document (imagebuilder/vex/pilot.openvex.json, reasoned in docs/security.md)
    says not_affected, and the scan says that it suppressed it."""
    out, _ = build()
    sbom = json.loads(sbom_path().read_text())
    rsa = [c["version"] for c in sbom["components"] if c["name"] == "rsa" and c["purl"].startswith("pkg:cargo/")]
    vex = ROOT / "imagebuilder" / "vex" / "pilot.openvex.json"
    statement = json.loads(vex.read_text())["statements"][0]
    if rsa != ["0.9.10"]:
        pytest.fail(f"rsa is now {rsa}: re-check {statement['vulnerability']['name']} and update {vex}")
    before = json.loads(scan("--out", out, "--db", rustsec, "--format", "json", check_rc=0).stdout)
    hit = [r for r in before["results"] if r["id"] == "RUSTSEC-2023-0071"]
    assert [(r["component"]["purl"], r["fixed"]) for r in hit] == [("pkg:cargo/rsa@0.9.10", None)]
    assert "vex" not in hit[0]

    p = scan("--out", out, "--db", rustsec, "--vex", vex, check_rc=0)
    assert "RUSTSEC-2023-0071 pkg:cargo/rsa@0.9.10: not_affected (vulnerable_code_not_in_execute_path)" in p.stdout, p.stdout
    after = json.loads(scan("--out", out, "--db", rustsec, "--vex", vex, "--format", "json", check_rc=0).stdout)
    r = next(r for r in after["results"] if r["id"] == "RUSTSEC-2023-0071")
    assert r["vex"]["status"] == "not_affected"
