"""Hostile `--configDir` inputs against a running istiod: a YAML alias bomb (the classic nested
"billion laughs", and one anchor named thousands of times) replacing a good file is refused with
a clear error while the file's last good objects keep serving; a folder with link loops is read
once, and istiod keeps watching it.
"""

from __future__ import annotations

import json
import os

from conftest import wait_until

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec: {ports: [{name: http, port: 80}]}
"""

BILLION_LAUGHS = SERVICE + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10 if prev else ['lol'] * 10)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi"))

WIDE = SERVICE + f"x: &x [{','.join(['1'] * 3000)}]\ny: [{','.join(['*x'] * 3000)}]\n"


def services(istiod) -> list[str]:
    return sorted(c["name"] for c in json.loads(istiod.get("/debug/configz"))["configs"]
                  if c["kind"] == "Service")


def error_of(istiod, name: str) -> str | None:
    for e in json.loads(istiod.get("/debug/configz"))["errors"]:
        if e["source"].endswith(name):
            return e["error"]
    return None


def test_an_alias_bomb_is_refused_and_the_last_good_config_serves(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    (config / "svc.yaml").write_text(SERVICE)
    istiod = istiod_factory(config)
    assert services(istiod) == ["echo"]
    for bomb, message in [(BILLION_LAUGHS, "repetition limit exceeded"),
                          (WIDE, "aliases repeat too much")]:
        (config / "svc.yaml").write_text(bomb)
        error = wait_until(lambda: error_of(istiod, "svc.yaml"), timeout=30, what="the bomb is refused")
        assert "invalid YAML" in error and message in error, error
        assert services(istiod) == ["echo"], "the last good objects keep serving"
        assert istiod.ready()
        (config / "svc.yaml").write_text(SERVICE)
        wait_until(lambda: error_of(istiod, "svc.yaml") is None, timeout=30, what="the good file again")


def test_link_loops_in_the_folder_are_read_once(tmp_path, istiod_factory):
    config = tmp_path / "config"
    (config / "a").mkdir(parents=True)
    (config / "a" / "svc.yaml").write_text(SERVICE)
    os.symlink(config, config / "a" / "up")
    os.symlink(".", config / "self")
    istiod = istiod_factory(config)
    assert services(istiod) == ["echo"]
    (config / "a" / "more.yaml").write_text(SERVICE.replace("name: echo", "name: more"))
    wait_until(lambda: services(istiod) == ["echo", "more"], timeout=30, what="the new file is read")
