#!/usr/bin/env python3
"""Writes a Debian security tracker JSON export of realistic size for the scan benchmark.

    python3 bench/scan/debian_tracker.py OUT_DIR [--packages 1500] [--cves 30000] [--sbom SBOM...]

The export's shape is the tracker's (`https://security-tracker.debian.org/tracker/data/json`):
source package -> CVE -> {description, scope, releases: codename -> {status, fixed_version,
urgency, repositories}}. Package names are made up except the source packages of the given
SBOMs (the image's own: glibc, openssl, ...), which are included so that the scan does real
matching work on them: most of their CVEs resolved in an earlier version, some open, some
fixed in a later one. Seeded, so every run writes the same bytes.
"""

import argparse
import json
import os
import random

RELEASES = ["bullseye", "bookworm", "trixie", "sid"]
URGENCIES = ["unimportant", "low", "medium", "high", "not yet assigned", "low*", "medium**"]


def image_sources(sboms: list[str]) -> dict[str, str]:
    """Source package -> source version of every Debian component in the SBOMs."""
    found = {}
    for path in sboms:
        with open(path) as f:
            bom = json.load(f)
        for c in bom.get("components", []):
            props = {p["name"]: p.get("value") for p in c.get("properties", [])}
            src = props.get("imagebuilder:debian:source")
            ver = props.get("imagebuilder:debian:source_version")
            if src and ver:
                found[src] = ver
    return found


def release_entry(rng: random.Random, installed: str | None) -> dict:
    """One release's state of one CVE. For the image's packages, `resolved` is mostly in an
    earlier version (no finding), sometimes never affected (`0`), sometimes fixed only in a
    later version than the installed one (a finding)."""
    urgency = rng.choice(URGENCIES)
    roll = rng.random()
    if roll < 0.70:
        if installed is None:
            fixed = f"{rng.randint(1, 9)}.{rng.randint(0, 20)}-{rng.randint(1, 5)}"
        else:
            fixed = rng.choices(["0", "0.1-1", installed + "+deb12u99"], weights=[3, 6, 1])[0]
        return {"status": "resolved", "repositories": {}, "fixed_version": fixed, "urgency": urgency}
    if roll < 0.85:
        return {"status": "open", "repositories": {}, "urgency": urgency}
    return {"status": "undetermined", "repositories": {}, "urgency": urgency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--packages", type=int, default=1500)
    ap.add_argument("--cves", type=int, default=30000)
    ap.add_argument("--sbom", action="append", default=[])
    args = ap.parse_args()
    rng = random.Random(1)

    own = image_sources(args.sbom)
    names = sorted(own) + [f"pkg{i:04d}" for i in range(max(0, args.packages - len(own)))]
    tracker: dict[str, dict] = {n: {} for n in names}
    for i in range(args.cves):
        cve = f"CVE-{2014 + i % 12}-{10000 + i}"
        # Most CVEs concern one source package, some two or three (a library and its forks).
        for name in rng.sample(names, k=rng.choice([1, 1, 1, 2, 3])):
            tracker[name][cve] = {
                "description": f"A flaw in {name} allows a remote attacker to cause a denial of service ({cve}).",
                "scope": rng.choice(["remote", "local"]),
                "releases": {r: release_entry(rng, own.get(name)) for r in RELEASES},
            }
    os.makedirs(os.path.join(args.out, "debian"), exist_ok=True)
    path = os.path.join(args.out, "debian", "tracker.json")
    with open(path, "w") as f:
        json.dump(tracker, f, separators=(",", ":"), sort_keys=True)
    entries = sum(len(v) for v in tracker.values())
    print(f"{path}: {len(names)} source packages ({len(own)} from the image), {args.cves} CVEs, "
          f"{entries} package/CVE entries, {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
