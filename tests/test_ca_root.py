"""The CA's root of trust: persistence across restarts, a plugged-in intermediate CA from
./etc/cacerts, and self-signed root rotation that keeps old certificates valid."""

import datetime
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_support import (Issuer, Istiod, make_csr, new_key, openssl_verify, split_certs,
                        uri_sans)


def test_restart_keeps_the_root(tmp_path):
    issuer = Issuer(tmp_path)
    d = Istiod(tmp_path / "istiod", env={"JWT_RULE": issuer.rule()})
    d.start()
    try:
        first_root = d.root_pem()
        chain = d.create_certificate(make_csr(new_key()), issuer.token())
    finally:
        d.stop()
    for f in ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem", "key.pem"]:
        assert (d.ca_dir / f).exists(), f
    assert (d.ca_dir / "ca-key.pem").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    d.root_file.unlink()
    d.start()
    try:
        assert d.root_pem() == first_root
        ok, out = openssl_verify(tmp_path, d.root_pem(), chain)
        assert ok, out
    finally:
        d.stop()


def ca_cert(subject_cn, key, issuer_name, issuer_key, days=30):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    return (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))


def test_plugged_in_intermediate_ca(tmp_path):
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = ca_cert("Test Root CA", root_key, None, root_key, days=365)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = ca_cert("Test Intermediate CA", inter_key, root.subject, root_key)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    cacerts = tmp_path / "istiod" / "etc" / "cacerts"
    cacerts.mkdir(parents=True)
    (cacerts / "ca-cert.pem").write_bytes(pem(inter))
    (cacerts / "ca-key.pem").write_bytes(inter_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (cacerts / "root-cert.pem").write_bytes(pem(root))
    (cacerts / "cert-chain.pem").write_bytes(pem(inter) + pem(root))

    issuer = Issuer(tmp_path)
    d = Istiod(tmp_path / "istiod", env={"JWT_RULE": issuer.rule()})
    d.start()
    try:
        assert d.root_pem() == pem(root), "the plugged root is published"
        chain = d.create_certificate(make_csr(new_key()), issuer.token(), ttl=600)
        certs = split_certs(chain)
        assert [c.subject.rfc4514_string() for c in certs[1:]] == [
            inter.subject.rfc4514_string(), root.subject.rfc4514_string()]
        assert uri_sans(certs[0]) == ["spiffe://cluster.local/ns/default/sa/sleep"]
        ok, out = openssl_verify(tmp_path, pem(root), chain)
        assert ok, out
        assert not (d.ca_dir / "ca-key.pem").exists(), "no self-signed root was made"
    finally:
        d.stop()


def test_rotation_keeps_old_certificates_valid(tmp_path):
    issuer = Issuer(tmp_path)
    env = {"JWT_RULE": issuer.rule(),
           "CITADEL_SELF_SIGNED_CA_KEY_TYPE": "ECDSA_P256",
           "CITADEL_SELF_SIGNED_CA_CERT_TTL": "30s",
           "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL": "500ms",
           "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE": "90"}
    d = Istiod(tmp_path / "istiod", env=env)
    d.start()
    try:
        first_root = d.root_pem()
        old_chain = d.create_certificate(make_csr(new_key()), issuer.token(), ttl=25)
        deadline = time.time() + 20
        while time.time() < deadline and d.root_pem() == first_root:
            time.sleep(0.2)
        bundle = d.root_pem()
        assert bundle != first_root, f"root not rotated:\n{d.logs()}"
        roots = x509.load_pem_x509_certificates(bundle)
        assert len(roots) >= 2, "old and new roots during the overlap"
        assert roots[0].public_key().public_numbers() == roots[1].public_key().public_numbers()
        ok, out = openssl_verify(tmp_path, bundle, old_chain)
        assert ok, out
        # New issuance and the re-issued serving certificate chain to the new root.
        new_chain = d.create_certificate(make_csr(new_key()), issuer.token(), ttl=10)
        ok, out = openssl_verify(tmp_path, roots[0].public_bytes(serialization.Encoding.PEM),
                                 new_chain)
        assert ok, out
        assert (d.ca_dir / "ca-cert.pem").read_bytes() != first_root, "rotated root persisted"
    finally:
        d.stop()
