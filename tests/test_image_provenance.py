"""SLSA v1 provenance of a build: byte-reproducible, subjects are the manifests written, every input
listed, valid against in-toto Statement v1 and SLSA Provenance v1 schemas (tests/fixtures/provenance)."""

import json
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from image_support import ROOT, build, image

SCHEMAS = Path(__file__).resolve().parent / "fixtures" / "provenance"


def provenance(name="first"):
    out, refs = build(name)
    path = Path(refs["provenance"])
    assert path == out / "provenance.intoto.json"
    return path.read_bytes(), refs


def test_two_builds_give_identical_provenance_bytes():
    a, refs_a = provenance("first")
    b, refs_b = provenance("second")
    assert a == b
    assert refs_a["provenance_digest"] == refs_b["provenance_digest"]


def test_provenance_validates_against_the_schemas():
    text, _ = provenance()
    doc = json.loads(text)
    statement = json.loads((SCHEMAS / "intoto-statement-v1.schema.json").read_text())
    slsa = json.loads((SCHEMAS / "slsa-provenance-v1.schema.json").read_text())
    registry = Registry().with_resources([
        (s["$id"], Resource.from_contents(s)) for s in (statement, slsa)
    ]).with_resource("intoto-statement-v1.schema.json", Resource.from_contents(statement))
    checker = jsonschema.FormatChecker()
    jsonschema.Draft202012Validator(statement, registry=registry, format_checker=checker).validate(doc)
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    jsonschema.Draft202012Validator(slsa, registry=registry, format_checker=checker).validate(doc["predicate"])
    # The schemas refuse what the specs forbid (so the checks above can fail).
    bad = json.loads(text)
    bad["subject"][0]["digest"] = {"sha256": "not hex"}
    assert not jsonschema.Draft202012Validator(statement, registry=registry).is_valid(bad)
    bad = json.loads(text)
    bad["predicate"]["runDetails"]["builder"].pop("id")
    assert not jsonschema.Draft202012Validator(slsa, registry=registry).is_valid(bad["predicate"])


def test_subjects_are_the_manifests_and_every_input_is_listed():
    text, refs = provenance()
    doc = json.loads(text)
    subjects = {s["name"]: "sha256:" + s["digest"]["sha256"] for s in doc["subject"]}
    assert subjects == {image(refs, v)["reference"]: image(refs, v)["manifest"] for v in ("runtime", "dev")}

    definition = doc["predicate"]["buildDefinition"]
    params = definition["externalParameters"]
    assert params["source"]["digest"]["gitCommit"] == "0123456789abcdef0123456789abcdef01234567"
    import hashlib
    lock_bytes = (ROOT / "imagebuilder" / "packages.lock.json").read_bytes()
    assert params["packagesLock"]["digest"]["sha256"] == hashlib.sha256(lock_bytes).hexdigest()
    assert params["sourceDateEpoch"] == 1700000000
    meta = doc["predicate"]["runDetails"]["metadata"]
    assert meta["startedOn"] == meta["finishedOn"] == "2023-11-14T22:13:20Z"

    deps = definition["resolvedDependencies"]
    by_uri = {d.get("uri"): d for d in deps}
    lock = json.loads(lock_bytes)
    for variant in lock["variants"].values():
        for p in variant["packages"]:
            uri = p["mirror"].rstrip("/") + "/" + p["filename"]
            assert by_uri[uri]["digest"]["sha256"] == p["sha256"], uri
    sbom = json.loads(Path(image(refs, "runtime")["sbom"]).read_text())
    crates = [c for c in sbom["components"] if c.get("purl", "").startswith("pkg:cargo/")]
    for c in crates:
        d = by_uri[c["purl"]]
        if c.get("hashes"):
            assert d["digest"]["sha256"] == c["hashes"][0]["content"], c["purl"]
    rustc = [d for d in deps if d.get("name") == "rustc"]
    assert rustc and rustc[0]["annotations"]["version"].startswith("rustc version 1.")
    binary = next(d for d in deps if d.get("name") == "pilot-discovery")
    bom_binary = next(c for c in sbom["components"] if c["bom-ref"] == "file:/usr/local/bin/pilot-discovery")
    assert binary["digest"]["sha256"] == bom_binary["hashes"][0]["content"]
