"""Helpers for the CA end-to-end tests: a pilot-discovery process with its CA, a test JWT
issuer, CSRs, gRPC clients over TLS and `openssl verify`."""

import base64
import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REPO = pathlib.Path(__file__).resolve().parent.parent
ISSUER = "https://issuer.ca-test.local"
SERVER_NAME = "istiod.istio-system.svc"

_GEN = None


def generated():
    """Compiles our ca.proto and the ADS subset with grpcio-tools, once."""
    global _GEN
    if _GEN is None:
        from grpc_tools import protoc
        import grpc_tools

        out = tempfile.mkdtemp(prefix="ca-proto-")
        wkt = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        for include, proto in [
            (REPO / "pilot" / "proto", "istio/v1/auth/ca.proto"),
            (REPO / "tests" / "ca", "ads_subset.proto"),
        ]:
            rc = protoc.main(["protoc", f"-I{include}", f"-I{wkt}", f"--python_out={out}",
                              f"--grpc_python_out={out}", str(include / proto)])
            assert rc == 0, f"protoc failed for {proto}"
        sys.path.insert(0, out)
        from istio.v1.auth import ca_pb2, ca_pb2_grpc
        import ads_subset_pb2
        import ads_subset_pb2_grpc

        _GEN = {"ca": ca_pb2, "ca_grpc": ca_pb2_grpc, "ads": ads_subset_pb2,
                "ads_grpc": ads_subset_pb2_grpc}
    return _GEN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """A test OIDC issuer: an EC P-256 key and its JWKS file."""

    def __init__(self, directory: pathlib.Path, kid="test-key"):
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
               "x": b64url(nums.x.to_bytes(32, "big")), "y": b64url(nums.y.to_bytes(32, "big"))}
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}))

    def rule(self):
        return json.dumps({"issuer": ISSUER, "jwksUri": f"file://{self.jwks_path}"})

    def token(self, ns="default", sa="sleep", aud="istio-ca", exp_in=600, key=None):
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        claims = {"iss": ISSUER, "aud": [aud], "iat": now, "exp": now + exp_in,
                  "sub": f"system:serviceaccount:{ns}:{sa}",
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "1"}}}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        der = (key or self.key).sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input.decode() + "." + b64url(sig)


def new_key(kind="ec"):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    raise ValueError(kind)


def make_csr(key, san="spiffe://cluster.local/ns/default/sa/sleep") -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")]))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Istiod:
    """pilot-discovery with its CA on ephemeral ports, run from its own directory."""

    def __init__(self, workdir: pathlib.Path, env=None, args=None):
        self.workdir = workdir
        self.env = env or {}
        self.args = args or []
        self.proc = None
        self.root_file = workdir / "published" / "root-cert.pem"
        self.ca_dir = workdir / "ca-state"
        (workdir / "config").mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "istiod.log"

    def start(self, timeout=60):
        binary = os.environ.get("PILOT_DISCOVERY", str(REPO / "target/debug/pilot-discovery"))
        self.grpc, self.http, self.mon, self.secure = (free_port() for _ in range(4))
        env = dict(os.environ)
        env.update({"PILOT_SELF_SIGNED_CA_DIR": str(self.ca_dir),
                    "PILOT_ROOT_CERT_FILE": str(self.root_file),
                    "RUST_LOG": env.get("RUST_LOG", "info")})
        env.update(self.env)
        cmd = [binary, "discovery", "--configDir", str(self.workdir / "config"), "--registries=",
               "--grpcAddr", f"127.0.0.1:{self.grpc}", "--httpAddr", f"127.0.0.1:{self.http}",
               "--monitoringAddr", f"127.0.0.1:{self.mon}",
               "--secureGRPCAddr", f"127.0.0.1:{self.secure}", "--httpsAddr="] + self.args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"istiod exited:\n{self.logs()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=1) as r:
                    if r.status == 200 and self.root_file.exists():
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"istiod not ready in {timeout}s:\n{self.logs()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def logs(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def root_pem(self) -> bytes:
        return self.root_file.read_bytes()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}/metrics", timeout=5) as r:
            return r.read().decode()

    def channel(self, root=None, client_cert=None, client_key=None):
        creds = grpc.ssl_channel_credentials(root_certificates=root or self.root_pem(),
                                              private_key=client_key,
                                              certificate_chain=client_cert)
        return grpc.secure_channel(f"127.0.0.1:{self.secure}", creds,
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME)])

    def create_certificate(self, csr, token=None, ttl=0, channel=None, timeout=10):
        gen = generated()
        ch = channel or self.channel()
        try:
            stub = gen["ca_grpc"].IstioCertificateServiceStub(ch)
            md = [("authorization", f"Bearer {token}")] if token else []
            req = gen["ca"].IstioCertificateRequest(csr=csr, validity_duration=ttl)
            return list(stub.CreateCertificate(req, metadata=md, timeout=timeout).cert_chain)
        finally:
            if channel is None:
                ch.close()


def split_certs(chain):
    """Each PEM certificate in the response, in order."""
    certs = []
    for element in chain:
        certs.extend(x509.load_pem_x509_certificates(element.encode()))
    return certs


def openssl_verify(tmp: pathlib.Path, root_pem: bytes, chain):
    """`openssl verify -CAfile root -untrusted intermediates leaf`; returns (ok, output)."""
    certs = split_certs(chain)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    leaf, middle = certs[0], certs[1:-1]
    (tmp / "leaf.pem").write_bytes(pem(leaf))
    (tmp / "root.pem").write_bytes(root_pem)
    cmd = ["openssl", "verify", "-CAfile", str(tmp / "root.pem")]
    if middle:
        (tmp / "untrusted.pem").write_bytes(b"".join(pem(c) for c in middle))
        cmd += ["-untrusted", str(tmp / "untrusted.pem")]
    cmd.append(str(tmp / "leaf.pem"))
    out = subprocess.run(cmd, capture_output=True, text=True)
    return out.returncode == 0, out.stdout + out.stderr


def uri_sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def lifetime(cert) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc
