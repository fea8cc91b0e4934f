"""Image signatures in cosign's format: `imagebuilder generate-key-pair`, `push --sign-key`,
`sign` and `verify` against Debian's docker-registry on loopback, with skopeo's sigstore
verification (containers/image, `sigstoreSigned` policy, `use-sigstore-attachments`) as the
independent judge, and openssl, PyNaCl and skopeo's sigstore signing reading the key files.

Debian 12's skopeo has sigstore patched out; scripts/sigstore-skopeo.sh provides Debian 13's.
"""

import base64
import functools
import hashlib
import json
import os
import stat
import urllib.error
import urllib.request

import nacl.secret
import pytest

from image_support import DEV_TAG, ROOT, VERSION, build, image, imagebuilder, run
from test_image_push import Registry

PASSWORD = "correct horse battery staple"
SIG_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def env(password=PASSWORD):
    e = {k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"}
    if password is not None:
        e["COSIGN_PASSWORD"] = password
    return e


def generate(prefix, password=PASSWORD, *extra, check=True):
    return run([imagebuilder(), "generate-key-pair", "--output-key-prefix", prefix, *extra], env=env(password), check=check)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    generate(d / "cosign")
    generate(d / "other")
    return d


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


def repo(ns):
    return f"{ns}/dhi-istio-pilot"


def push(reg, ns, *extra, password=PASSWORD, check=True):
    out, _ = build()
    args = [imagebuilder(), "push", "--out", out, "--registry", reg.host, "--namespace", ns, "--plain-http", *extra]
    return run(args, env=env(password), check=check)


def sign(reg, ns, key, tag, password=PASSWORD, check=True):
    args = [imagebuilder(), "sign", "--key", key, "--registry", reg.host, "--repository", repo(ns), "--tag", tag, "--plain-http"]
    return run(args, env=env(password), check=check)


def verify(reg, ns, pub, tag, check=True):
    return run([imagebuilder(), "verify", "--key", pub, f"{reg.host}/{repo(ns)}:{tag}", "--plain-http"], check=check)


def request(reg, method, path, body=None, content_type=None):
    req = urllib.request.Request(f"http://{reg.host}{path}", data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def manifest(reg, ns, ref):
    return reg.get(f"/v2/{repo(ns)}/manifests/{ref}", MANIFEST_TYPE)


def put_manifest(reg, ns, ref, body):
    assert request(reg, "PUT", f"/v2/{repo(ns)}/manifests/{ref}", body, MANIFEST_TYPE) == 201


def sig_tag(digest):
    return digest.replace(":", "-") + ".sig"


def sig_layers(reg, ns, digest):
    return json.loads(manifest(reg, ns, sig_tag(digest)))["layers"]


def tags(reg, ns):
    try:
        return json.loads(reg.get(f"/v2/{repo(ns)}/tags/list")).get("tags") or []
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


@functools.lru_cache(maxsize=None)
def sigstore_skopeo():
    """A skopeo built with sigstore support."""
    return run(["bash", ROOT / "scripts" / "sigstore-skopeo.sh"]).stdout.strip().splitlines()[-1]


def skopeo(reg, tmp_path, policy, *args):
    """skopeo with `policy` and sigstore attachments on for the registry."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    regd = tmp_path / "registries.d"
    regd.mkdir(exist_ok=True)
    (regd / "loopback.yaml").write_text(f"docker:\n  {reg.host}:\n    use-sigstore-attachments: true\n")
    return run([sigstore_skopeo(), "--policy", path, "--registries.d", regd, *args], check=False)


def skopeo_copy(reg, ns, tag, pub, tmp_path):
    """Copies the image under a policy that requires a sigstore signature by `pub` naming its
    repository; returns the CompletedProcess."""
    policy = {
        "default": [{"type": "reject"}],
        "transports": {"docker": {reg.host: [{
            "type": "sigstoreSigned",
            "keyPath": str(pub),
            "signedIdentity": {"type": "matchRepository"},
        }]}},
    }
    dest = tmp_path / f"copy-{ns}-{tag}-{len(list(tmp_path.iterdir()))}"
    return skopeo(reg, tmp_path, policy, "copy", "--src-tls-verify=false",
                  f"docker://{reg.host}/{repo(ns)}:{tag}", f"dir:{dest}")


def assert_copied(p):
    assert p.returncode == 0, f"skopeo refused a signed image:\n{p.stderr}"


def assert_refused(p):
    assert p.returncode != 0, "skopeo copied an image the policy should refuse"
    assert "Source image rejected" in p.stderr, p.stderr


def test_key_pair_is_in_cosign_format(tmp_path):
    prefix = tmp_path / "cosign"
    generate(prefix)
    pub, key = tmp_path / "cosign.pub", tmp_path / "cosign.key"
    run(["openssl", "pkey", "-pubin", "-in", pub, "-noout"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), text
    body = "".join(text.strip().splitlines()[1:-1])
    envelope = json.loads(base64.b64decode(body))
    assert envelope["kdf"]["name"] == "scrypt"
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    # Decrypted independently (hashlib's scrypt, libsodium's secretbox): a PKCS#8 key that
    # openssl reads, whose public key is cosign.pub.
    salt, nonce, sealed = (base64.b64decode(x) for x in
                           (envelope["kdf"]["salt"], envelope["cipher"]["nonce"], envelope["ciphertext"]))
    p = envelope["kdf"]["params"]
    box_key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=p["N"], r=p["r"], p=p["p"], maxmem=64 * 1024 * 1024, dklen=32)
    der = nacl.secret.SecretBox(box_key).decrypt(sealed, nonce)
    (tmp_path / "key.der").write_bytes(der)
    derived = run(["openssl", "pkey", "-inform", "DER", "-in", tmp_path / "key.der", "-pubout"]).stdout
    assert derived == pub.read_text()
    # No overwriting without --force; no key without a passphrase variable.
    p = generate(prefix, check=False)
    assert p.returncode != 0 and "exists already" in p.stderr, p.stderr
    p = generate(tmp_path / "nopass", None, check=False)
    assert p.returncode != 0 and "COSIGN_PASSWORD" in p.stderr, p.stderr
    generate(prefix, PASSWORD, "--force")
    assert run(["openssl", "pkey", "-pubin", "-in", pub, "-pubout"]).stdout != derived


def test_pushed_and_signed_image_is_accepted_by_skopeo_and_verify(registry, keys, tmp_path):
    _, refs = build()
    p = push(registry, "signed", "--sign-key", keys / "cosign.key")
    pushed = json.loads(p.stdout)
    for v in ("runtime", "dev"):
        digest = image(refs, v)["manifest"]
        entry = next(x for x in pushed if x["digest"] == digest)
        assert entry["signatures"] == f"{registry.host}/{repo('signed')}:{sig_tag(digest)}"
        layers = sig_layers(registry, "signed", digest)
        assert len(layers) == 1 and layers[0]["mediaType"] == SIG_TYPE, layers
        payload = json.loads(registry.get(f"/v2/{repo('signed')}/blobs/{layers[0]['digest']}"))
        assert payload == {
            "critical": {
                "identity": {"docker-reference": f"{registry.host}/{repo('signed')}"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
        assert base64.b64decode(layers[0]["annotations"][SIG_ANNOTATION])[0] == 0x30, "a DER signature"
    assert_copied(skopeo_copy(registry, "signed", VERSION, keys / "cosign.pub", tmp_path))
    assert_copied(skopeo_copy(registry, "signed", DEV_TAG, keys / "cosign.pub", tmp_path))
    v = verify(registry, "signed", keys / "cosign.pub", VERSION)
    out = json.loads(v.stdout)
    assert out["reference"] == f"{registry.host}/{repo('signed')}@{image(refs, 'runtime')['manifest']}"
    assert [s["claims"]["manifest_digest"] for s in out["verified"]] == [image(refs, "runtime")["manifest"]]
    assert "The signatures were verified against the specified public key" in v.stderr
    # By digest, the dev image too.
    dev = image(refs, "dev")["manifest"]
    v = run([imagebuilder(), "verify", "--key", keys / "cosign.pub", f"{registry.host}/{repo('signed')}@{dev}", "--plain-http"])
    assert json.loads(v.stdout)["reference"] == f"{registry.host}/{repo('signed')}@{dev}"
    # Signing again with the same key adds nothing.
    push(registry, "signed", "--sign-key", keys / "cosign.key")
    assert len(sig_layers(registry, "signed", image(refs, "runtime")["manifest"])) == 1


def test_unsigned_image_is_refused(registry, keys, tmp_path):
    push(registry, "unsigned")
    assert_refused(skopeo_copy(registry, "unsigned", VERSION, keys / "cosign.pub", tmp_path))
    p = verify(registry, "unsigned", keys / "cosign.pub", VERSION, check=False)
    assert p.returncode != 0 and "no signatures" in p.stderr, p.stderr


def test_image_signed_with_another_key_is_refused_until_ours_is_added(registry, keys, tmp_path):
    _, refs = build()
    push(registry, "otherkey", "--sign-key", keys / "other.key")
    assert_refused(skopeo_copy(registry, "otherkey", VERSION, keys / "cosign.pub", tmp_path))
    p = verify(registry, "otherkey", keys / "cosign.pub", VERSION, check=False)
    assert p.returncode != 0 and "does not verify with the public key" in p.stderr, p.stderr
    verify(registry, "otherkey", keys / "other.pub", VERSION)
    # Our signature is appended beside the other one; both keys now verify.
    s = json.loads(sign(registry, "otherkey", keys / "cosign.key", VERSION).stdout)
    assert s["count"] == 2 and s["added"], s
    assert len(sig_layers(registry, "otherkey", image(refs, "runtime")["manifest"])) == 2
    assert_copied(skopeo_copy(registry, "otherkey", VERSION, keys / "cosign.pub", tmp_path))
    assert_copied(skopeo_copy(registry, "otherkey", VERSION, keys / "other.pub", tmp_path))
    verify(registry, "otherkey", keys / "cosign.pub", VERSION)


def test_moved_tag_and_replayed_signature_are_refused(registry, keys, tmp_path):
    _, refs = build()
    runtime, dev = image(refs, "runtime")["manifest"], image(refs, "dev")["manifest"]
    push(registry, "moved")
    sign(registry, "moved", keys / "cosign.key", VERSION)
    assert_copied(skopeo_copy(registry, "moved", VERSION, keys / "cosign.pub", tmp_path))
    # The tag now names the (unsigned) dev image.
    put_manifest(registry, "moved", VERSION, manifest(registry, "moved", DEV_TAG))
    assert_refused(skopeo_copy(registry, "moved", VERSION, keys / "cosign.pub", tmp_path))
    p = verify(registry, "moved", keys / "cosign.pub", VERSION, check=False)
    assert p.returncode != 0 and "no signatures" in p.stderr, p.stderr
    # The runtime image's signature put where the dev image's would be: it names another digest.
    put_manifest(registry, "moved", sig_tag(dev), manifest(registry, "moved", sig_tag(runtime)))
    assert_refused(skopeo_copy(registry, "moved", VERSION, keys / "cosign.pub", tmp_path))
    p = verify(registry, "moved", keys / "cosign.pub", VERSION, check=False)
    assert p.returncode != 0 and f"signs manifest {runtime}, not {dev}" in p.stderr, p.stderr


def test_signature_of_another_repository_is_refused(registry, keys, tmp_path):
    _, refs = build()
    digest = image(refs, "runtime")["manifest"]
    push(registry, "origin", "--sign-key", keys / "cosign.key")
    push(registry, "copycat")
    sig = manifest(registry, "origin", sig_tag(digest))
    m = json.loads(sig)
    for d in [m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]:
        assert request(registry, "POST", f"/v2/{repo('copycat')}/blobs/uploads/?mount={d}&from={repo('origin')}") == 201
    put_manifest(registry, "copycat", sig_tag(digest), sig)
    assert_refused(skopeo_copy(registry, "copycat", VERSION, keys / "cosign.pub", tmp_path))
    p = verify(registry, "copycat", keys / "cosign.pub", VERSION, check=False)
    want = f"signs repository {registry.host}/{repo('origin')}, not {registry.host}/{repo('copycat')}"
    assert p.returncode != 0 and want in p.stderr, p.stderr


def test_wrong_passphrase_is_a_clear_error_and_pushes_nothing(registry, keys):
    p = push(registry, "wrongpass", "--sign-key", keys / "cosign.key", password="not it", check=False)
    assert p.returncode != 0
    assert "wrong passphrase" in p.stderr, p.stderr
    assert tags(registry, "wrongpass") == []
    push(registry, "wrongpass")
    p = sign(registry, "wrongpass", keys / "cosign.key", VERSION, password="not it", check=False)
    assert p.returncode != 0 and "wrong passphrase" in p.stderr, p.stderr
    p = sign(registry, "wrongpass", keys / "cosign.key", VERSION, password=None, check=False)
    assert p.returncode != 0 and "set COSIGN_PASSWORD" in p.stderr, p.stderr
    assert not any(t.endswith(".sig") for t in tags(registry, "wrongpass"))


def test_containers_image_signs_with_our_key_file_and_verify_reads_its_signature(registry, keys, tmp_path):
    """skopeo's own sigstore signing decrypts cosign.key (Go's scrypt and secretbox), and
    `imagebuilder verify` accepts the signature it writes (with `optional` claims)."""
    push(registry, "unsigned-source")
    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSWORD)
    accept = {"default": [{"type": "insecureAcceptAnything"}]}
    copy = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false",
            "--sign-by-sigstore-private-key", keys / "cosign.key", "--sign-passphrase-file", passfile,
            f"docker://{registry.host}/{repo('unsigned-source')}:{VERSION}",
            f"docker://{registry.host}/{repo('peer-signed')}:{VERSION}"]
    p = skopeo(registry, tmp_path, accept, *copy)
    assert p.returncode == 0, p.stderr
    v = json.loads(verify(registry, "peer-signed", keys / "cosign.pub", VERSION).stdout)
    # containers/image names the tag it signed as well as the repository.
    assert v["verified"][0]["claims"]["docker_reference"] == f"{registry.host}/{repo('peer-signed')}:{VERSION}"
    p = verify(registry, "peer-signed", keys / "other.pub", VERSION, check=False)
    assert p.returncode != 0, p.stdout
    # A wrong passphrase does not open our key file there either.
    passfile.write_text("not it")
    p = skopeo(registry, tmp_path, accept, *copy)
    assert p.returncode != 0 and "decryption failed" in p.stderr, p.stderr
