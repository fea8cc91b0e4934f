"""imagebuilder trusts what it downloads no more than apt would: a Release must be current and
of the suite asked for, the lock file's digests must be digests, and a .deb that does not
match leaves nothing in the cache. Against a Debian mirror on loopback whose Releases are
signed by the test archive key."""

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from image_support import ROOT, build_args, run

KEY = ROOT / "imagebuilder/src/debian/testdata/archive-test-key.asc"
LOCK = ROOT / "imagebuilder/packages.lock.json"
FAR_FUTURE = "Fri, 01 Jan 2100 00:00:00 UTC"


class ArchiveKey:
    """The test archive key in its own GnuPG home: signs Releases; `keyring` verifies them."""

    def __init__(self, home: Path):
        self.home = home
        home.mkdir(mode=0o700)
        self.gpg("--import", KEY)
        self.keyring = home / "archive-test.gpg"
        self.keyring.write_bytes(self.gpg("--export").stdout)

    def gpg(self, *args, **kw):
        return subprocess.run(["gpg", "--homedir", self.home, "--batch", "--quiet", *args], check=True, capture_output=True, **kw)

    def sign(self, text: str) -> bytes:
        return self.gpg("--clearsign", "--output", "-", input=text.encode()).stdout

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"], check=False, capture_output=True)


@pytest.fixture(scope="module")
def key():
    # A short path: gpg-agent's socket lives in the home.
    home = Path(tempfile.mkdtemp(prefix="gpg-")) / "h"
    k = ArchiveKey(home)
    yield k
    k.close()
    shutil.rmtree(home.parent, ignore_errors=True)


class Mirror:
    """Files under `root` over HTTP on 127.0.0.1; records the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, path: str, data: bytes):
        p = self.root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path):
    (tmp_path / "mirror").mkdir()
    m = Mirror(tmp_path / "mirror")
    yield m
    m.close()


def release(codename: str, valid_until: str, packages_xz: bytes) -> str:
    return (
        f"Origin: Test\nSuite: oldstable\nCodename: {codename}\nDate: Sat, 01 Jan 2000 00:00:00 UTC\n"
        f"Valid-Until: {valid_until}\nArchitectures: amd64\nComponents: main\nSHA256:\n"
        f" {hashlib.sha256(packages_xz).hexdigest()} {len(packages_xz)} main/binary-amd64/Packages.xz\n"
    )


def resolve(tmp_path, mirror, key):
    """A build that must re-resolve from `mirror`'s indexes (no lock file yet)."""
    lock = tmp_path / "lock.json"
    args = build_args(tmp_path / "out", "--update-lock", "--mirror", mirror.url, "--keyring", key.keyring,
                      "--lock", lock, "--cache", tmp_path / "cache")
    return run(args, cwd=ROOT, check=False), lock


def test_an_expired_release_is_refused_naming_the_date(tmp_path, mirror, key):
    empty = lzma.compress(b"")
    mirror.put("dists/bookworm/InRelease", key.sign(release("bookworm", "Mon, 01 Jan 2001 00:00:00 UTC", empty)))
    mirror.put("dists/bookworm/main/binary-amd64/Packages.xz", empty)
    p, lock = resolve(tmp_path, mirror, key)
    assert p.returncode != 0
    assert f"{mirror.url}/dists/bookworm/InRelease: the Release expired on Mon, 01 Jan 2001 00:00:00 UTC" in p.stderr, p.stderr
    assert mirror.requests == ["/dists/bookworm/InRelease"], "its index was not read"
    assert not lock.exists()


def test_a_replayed_release_of_another_suite_is_refused(tmp_path, mirror, key):
    empty = lzma.compress(b"")
    bookworm = key.sign(release("bookworm", FAR_FUTURE, empty))
    mirror.put("dists/bookworm/InRelease", bookworm)
    mirror.put("dists/bookworm/main/binary-amd64/Packages.xz", empty)
    # bookworm's validly signed Release where bookworm-updates' belongs.
    mirror.put("dists/bookworm-updates/InRelease", bookworm)
    p, lock = resolve(tmp_path, mirror, key)
    assert p.returncode != 0
    assert (f"{mirror.url}/dists/bookworm-updates/InRelease is the Release of Suite oldstable, Codename bookworm, "
            "not of bookworm-updates") in p.stderr, p.stderr
    # bookworm itself passed every check.
    assert "/dists/bookworm/main/binary-amd64/Packages.xz" in mirror.requests
    assert not lock.exists()


def test_a_lock_file_digest_that_is_a_path_is_refused(tmp_path):
    lock = json.loads(LOCK.read_text())
    lock["variants"]["runtime"]["packages"][0]["sha256"] = "../../etc"
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(lock))
    cache = tmp_path / "a" / "b" / "cache"
    p = run(build_args(tmp_path / "out", "--offline", "--lock", path, "--cache", cache), cwd=ROOT, check=False)
    assert p.returncode != 0
    assert f"lock file {path}: " in p.stderr and '"../../etc" is not a SHA-256 digest' in p.stderr, p.stderr
    assert not (tmp_path / "a").exists(), "nothing was written for it"


def test_a_deb_that_does_not_match_the_lock_leaves_nothing_in_the_cache(tmp_path, mirror):
    lock = json.loads(LOCK.read_text())
    for variant in lock["variants"].values():
        for pkg in variant["packages"]:
            pkg["mirror"] = mirror.url
    first = lock["variants"]["runtime"]["packages"][0]
    # The right size, other bytes.
    mirror.put(first["filename"], b"\0" * first["size"])
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(lock))
    cache = tmp_path / "cache"
    p = run(build_args(tmp_path / "out", "--lock", path, "--cache", cache), cwd=ROOT, check=False)
    assert p.returncode != 0
    assert f"{mirror.url}/{first['filename']}: SHA256 mismatch (expected {first['sha256']}" in p.stderr, p.stderr
    assert mirror.requests == ["/" + first["filename"]], "a mismatch is not retried"
    assert list((cache / "debs").iterdir()) == []
