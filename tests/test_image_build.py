"""The image build: layout, variants, SBOMs, reproducibility, policy (real umoci, skopeo)."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from image_support import (
    DEV_TAG, REPOSITORY, ROOT, VERSION, build, build_args, image, pilot_binary, run, workdir,
)


def test_two_builds_give_identical_digests():
    out1, refs1 = build("first")
    out2, refs2 = build("second")
    assert refs1["index"] == refs2["index"]
    for a, b in zip(refs1["images"], refs2["images"]):
        for k in ("manifest", "config", "layers", "sbom_digest"):
            assert a[k] == b[k], k
    assert (out1 / "oci/index.json").read_bytes() == (out2 / "oci/index.json").read_bytes()
    for v in (VERSION, DEV_TAG):
        name = f"istio-pilot-{v}.docker.tar"
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()


def test_dev_reuses_runtime_layers_byte_for_byte():
    _, refs = build()
    rt, dev = image(refs, "runtime"), image(refs, "dev")
    assert dev["layers"][: len(rt["layers"])] == rt["layers"]
    assert len(dev["layers"]) == len(rt["layers"]) + 1


def test_index_names_every_tag():
    out, refs = build()
    index = json.loads((out / "oci/index.json").read_text())
    names = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    assert names == {VERSION: image(refs, "runtime")["manifest"], DEV_TAG: image(refs, "dev")["manifest"]}
    # Every digest in refs.json is a blob in the layout.
    for i in refs["images"]:
        for d in [i["manifest"], i["config"], *i["layers"]]:
            blob = out / "oci/blobs/sha256" / d.removeprefix("sha256:")
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == d.removeprefix("sha256:")


def skopeo_config(out, tag):
    p = run(["skopeo", "inspect", "--config", f"oci:{out}/oci:{tag}"])
    return json.loads(p.stdout)


def test_skopeo_reads_both_variants():
    out, refs = build()
    rt = skopeo_config(out, VERSION)
    c = rt["config"]
    assert c["User"] == "1337:1337"
    assert c["Entrypoint"] == ["/usr/local/bin/pilot-discovery"]
    assert "Cmd" not in c
    assert sorted(c["ExposedPorts"]) == ["15010/tcp", "15012/tcp", "15014/tcp", "15017/tcp", "8080/tcp"]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in c["Env"]
    labels = c["Labels"]
    for k in ("source", "revision", "version", "created", "title", "description", "licenses", "base.name"):
        assert labels[f"org.opencontainers.image.{k}"], k
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert rt["created"] == "2023-11-14T22:13:20Z"
    dev = skopeo_config(out, DEV_TAG)
    assert dev["config"]["User"] in ("0:0", "root", "")
    p = run(["skopeo", "inspect", f"oci:{out}/oci:{DEV_TAG}"])
    assert json.loads(p.stdout)["Digest"] == image(refs, "dev")["manifest"]


@pytest.fixture(scope="module")
def rootfs():
    out, _ = build()
    roots = {}
    for variant, tag in (("runtime", VERSION), ("dev", DEV_TAG)):
        bundle = workdir() / f"bundle-{variant}"
        if not bundle.exists():
            run(["umoci", "unpack", "--image", f"{out}/oci:{tag}", bundle])
        roots[variant] = bundle / "rootfs"
    return roots


def test_runtime_filesystem_is_hardened(rootfs):
    r = rootfs["runtime"]
    for shell in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "bin/busybox"):
        assert not os.path.lexists(r / shell), shell
    for pm in ("usr/bin/dpkg", "usr/bin/apt", "usr/bin/apt-get"):
        assert not os.path.lexists(r / pm), pm
    assert (r / "usr/local/bin/pilot-discovery").read_bytes() == pilot_binary().read_bytes()
    passwd = (r / "etc/passwd").read_text()
    assert passwd.splitlines()[0] == "root:x:0:0:root:/root:/sbin/nologin"
    for line in ("istio-proxy:x:1337:1337:", "nonroot:x:65532:65532:", "nobody:x:65534:65534:"):
        assert line in passwd
    assert "istio-proxy:x:1337:" in (r / "etc/group").read_text()
    assert stat.S_IMODE(os.lstat(r / "tmp").st_mode) == 0o1777
    assert os.stat(r / "home/istio-proxy").st_uid == 1337
    assert os.stat(r / "home/nonroot").st_uid == 65532
    assert "ID=debian" in (r / "etc/os-release").read_text()
    assert "BEGIN CERTIFICATE" in (r / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert "Package: libc6" in (r / "var/lib/dpkg/status.d/libc6").read_text()
    for dirpath, dirnames, filenames in os.walk(r):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), p
            if p != r / "tmp":
                assert not st.st_mode & stat.S_IWOTH, p
    # The runtime SBOM ships inside the image.
    out, _ = build()
    assert (r / "usr/share/sbom/pilot-discovery.cdx.json").read_bytes() == (out / "sbom/runtime.cdx.json").read_bytes()


def test_dev_filesystem_has_tools(rootfs):
    d = rootfs["dev"]
    assert os.path.lexists(d / "bin/sh")
    for tool in ("bin/dash", "usr/bin/dpkg", "usr/bin/apt", "usr/bin/curl", "usr/bin/openssl", "bin/ps", "bin/ip", "bin/busybox"):
        assert os.path.lexists(d / tool), tool
    assert "Package: curl" in (d / "var/lib/dpkg/status").read_text()
    assert (d / "usr/local/bin/pilot-discovery").exists()


def sbom_of(variant):
    out, _ = build()
    return (out / "sbom" / f"{variant}.cdx.json").read_text()


@pytest.mark.parametrize("variant", ["runtime", "dev"])
def test_sbom_validates_with_cyclonedx_strict_schema(variant):
    text = sbom_of(variant)
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert errors is None, errors


def test_sbom_content():
    rt = json.loads(sbom_of("runtime"))
    dev = json.loads(sbom_of("dev"))
    assert rt["metadata"]["component"]["type"] == "container"
    assert rt["metadata"]["component"]["name"] == REPOSITORY
    comps = {c["bom-ref"]: c for c in rt["components"]}
    binary = comps["file:/usr/local/bin/pilot-discovery"]
    assert binary["hashes"][0]["content"] == hashlib.sha256(pilot_binary().read_bytes()).hexdigest()
    debs = [c for c in rt["components"] if c.get("purl", "").startswith("pkg:deb/debian/")]
    names = {c["name"] for c in debs}
    assert {"libc6", "libgcc-s1", "ca-certificates"} <= names
    assert "dash" not in names
    for c in debs:
        assert c["purl"].endswith("?arch=" + c["purl"].split("arch=")[1])
        assert "distro=debian-12" in c["purl"]
        assert c["hashes"][0]["alg"] == "SHA-256"
    assert any(c.get("licenses") for c in debs), "licenses come from copyright files"
    crates = [c for c in rt["components"] if c.get("purl", "").startswith("pkg:cargo/")]
    assert any(c["name"] == "tokio" for c in crates)
    assert not any(c["name"] == "serde_derive" for c in crates), "proc macros are not linked"
    deps = {d["ref"]: d.get("dependsOn", []) for d in rt["dependencies"]}
    assert "file:/usr/local/bin/pilot-discovery" in deps[rt["metadata"]["component"]["bom-ref"]]
    assert deps["file:/usr/local/bin/pilot-discovery"]
    dev_names = {c["name"] for c in dev["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert names < dev_names and {"dash", "curl", "apt"} <= dev_names


def test_lock_file_pins_every_package():
    lock = json.loads((ROOT / "imagebuilder/packages.lock.json").read_text())
    for v in ("runtime", "dev"):
        for p in lock["variants"][v]["packages"]:
            assert len(p["sha256"]) == 64 and p["version"] and p["arch"] in ("amd64", "all")


def test_offline_build_from_an_empty_cache_fails_clearly(tmp_path):
    p = run(build_args(tmp_path / "out", "--offline", "--cache", tmp_path / "empty"), cwd=ROOT, check=False)
    assert p.returncode != 0
    assert "not in the cache" in p.stderr


def test_policy_rejects_root_runtime(tmp_path):
    p = run(build_args(tmp_path / "out", "--user", "0:0"), cwd=ROOT, check=False)
    assert p.returncode != 0
    assert "image policy violated" in p.stderr and "root" in p.stderr
    assert not (tmp_path / "out" / "oci").exists(), "nothing is written when the policy fails"


def test_verify_reproducible_command(tmp_path):
    args = build_args(tmp_path / "out")
    args[1] = "verify-reproducible"
    p = run(args, cwd=ROOT)
    assert "reproducible" in p.stdout
