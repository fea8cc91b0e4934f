"""Gateway certificates over SDS without a cluster: `v1` Secrets in `--configDir` are served to a
gateway proxy authenticated on 15012 (a JWT of its ServiceAccount), over delta ADS: the
certificate first, the new one when the file changes, and the name removed when the Secret
goes. A malformed Secret next to it is logged and left out; the good one keeps serving."""

from __future__ import annotations

import queue

import yaml

from ca_support import Issuer, Istiod
from conftest import wait_until
from sds_support import DeltaSdsStream, certificate, inline, tls_secret

NS = "gw"


def write(d: Istiod, name: str, *objs):
    (d.workdir / "config" / name).write_text(yaml.safe_dump_all(list(objs)))


def test_config_dir_secrets_over_delta_ads(tmp_path):
    issuer = Issuer(tmp_path)
    d = Istiod(tmp_path / "istiod", env={"JWT_RULE": issuer.rule(), "PILOT_DEBOUNCE_AFTER": "50ms"})
    cert, key = certificate("gw.example.com")
    broken = tls_secret(NS, "broken", b"not a certificate", key)
    write(d, "certs.yaml", tls_secret(NS, "my-cert", cert, key), broken)
    d.start()
    channel = d.channel()
    stream = DeltaSdsStream(channel, NS, "ingress", issuer.token(ns=NS, sa="ingress"))
    try:
        r = stream.subscribe(["kubernetes://my-cert", "kubernetes://broken"])
        got = stream.secrets(r)
        assert set(got) == {"kubernetes://my-cert"}, got
        tls = got["kubernetes://my-cert"]["tls_certificate"]
        assert (inline(tls["certificate_chain"]), inline(tls["private_key"])) == (cert, key)
        assert 'kubernetes://broken: invalid certificate in "tls.crt"' in d.logs()

        new_cert, new_key = certificate("gw2.example.com")
        write(d, "certs.yaml", tls_secret(NS, "my-cert", new_cert, new_key), broken)
        r = stream.next(timeout=20)
        got = stream.secrets(r)
        assert list(got) == ["kubernetes://my-cert"], "only the changed resource is sent"
        assert inline(got["kubernetes://my-cert"]["tls_certificate"]["certificate_chain"]) == new_cert

        write(d, "certs.yaml", broken)
        r = stream.next(timeout=20)
        assert list(r.removed_resources) == ["kubernetes://my-cert"]
        try:
            extra = stream.responses.get(timeout=2)
        except queue.Empty:
            extra = None
        assert extra is None, f"nothing more to send: {extra}"
        assert d.proc.poll() is None
        wait_until(lambda: "pilot_sds_certificate_errors_total" in d.metrics(), timeout=5,
                   what="the SDS error counter")
    finally:
        stream.close()
        channel.close()
        d.stop()
