"""Unknown flags of `pilot-discovery discovery`: like upstream, an unknown flag is ignored with a
warning, so that arguments written for another istiod version still start this one; one that
names a TLS, certificate, CA or authentication setting stops istiod with an error instead, since
running without a security setting the operator asked for is worse than not starting.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import pilot_binary


def test_an_unknown_flag_is_ignored_with_a_warning(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    d = istiod_factory(config, extra_args=["--futureFlag=1", "--resync", "5m"])
    assert d.ready()
    assert "warning: ignoring unknown flag --futureFlag=1" in d.log_path.read_text()


@pytest.mark.parametrize("flag", ["--tlsMaxVersion=1.3", "--caKeyFile", "--jwtPolicy=first-party-jwt",
                                  "--secureGRPCAddress=:15013"])
def test_an_unknown_security_flag_stops_istiod(tmp_path, flag):
    config = tmp_path / "config"
    config.mkdir()
    proc = subprocess.run([pilot_binary(), "discovery", "--registries=", "--configDir", str(config),
                           "--grpcAddr=", "--httpAddr=", "--monitoringAddr=", "--secureGRPCAddr=",
                           "--httpsAddr=", flag],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    name = flag.split("=")[0]
    assert f"unknown flag {name}:" in proc.stderr and "refusing to start" in proc.stderr, proc.stderr
