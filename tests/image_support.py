"""Shared helpers for the image tests: build the images once per session, run tools."""

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Fixed, so that two builds in the session must agree byte for byte.
SOURCE_DATE_EPOCH = "1700000000"
REPOSITORY = "imagetest.local/istio-pilot"
VERSION = "0.0.0-test"
DEV_TAG = VERSION + "-dev"


def run(cmd, check=True, **kw):
    """Runs a command, returning CompletedProcess with text output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run([str(c) for c in cmd], **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        )
    return p


@functools.lru_cache(maxsize=None)
def imagebuilder():
    """Path of the imagebuilder binary (built in debug mode, like the tests' pilot)."""
    run(["cargo", "build", "-q", "-p", "imagebuilder"], cwd=ROOT)
    return ROOT / "target" / "debug" / "imagebuilder"


@functools.lru_cache(maxsize=None)
def workdir():
    return Path(tempfile.mkdtemp(prefix="imagetest-"))


@functools.lru_cache(maxsize=None)
def pilot_binary():
    """The pilot-discovery binary from $PILOT_DISCOVERY, stripped (debug info is large)."""
    src = os.environ.get("PILOT_DISCOVERY") or str(ROOT / "target" / "debug" / "pilot-discovery")
    if not Path(src).exists():
        raise AssertionError(f"pilot-discovery binary not found at {src}; set PILOT_DISCOVERY")
    dst = workdir() / "pilot-discovery"
    shutil.copy(src, dst)
    run(["strip", dst])
    return dst


def build_args(out, *extra):
    return [
        imagebuilder(), "build",
        "--binary", pilot_binary(),
        "--out", out,
        "--repository", REPOSITORY,
        "--version", VERSION,
        "--source-date-epoch", SOURCE_DATE_EPOCH,
        "--revision", "0123456789abcdef0123456789abcdef01234567",
        *extra,
    ]


@functools.lru_cache(maxsize=None)
def build(name="first"):
    """Builds both variants into a fresh directory; returns (out dir, refs)."""
    out = workdir() / name
    p = run(build_args(out), cwd=ROOT)
    refs = json.loads((out / "refs.json").read_text())
    assert json.loads(p.stdout) == refs
    return out, refs


def image(refs, variant):
    return next(i for i in refs["images"] if i["variant"] == variant)


def docker_available():
    p = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False)
    if p.returncode != 0:
        raise AssertionError(f"Docker daemon not reachable: {p.stderr.strip()}")


@functools.lru_cache(maxsize=None)
def loaded():
    """Loads both docker archives into the local engine; returns refs."""
    docker_available()
    _, refs = build()
    for i in refs["images"]:
        p = run(["docker", "load", "-i", i["archive"]])
        assert i["reference"] in p.stdout, p.stdout
    return refs
