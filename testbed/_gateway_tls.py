"""mTLS material for the OpenShell 0.1.x gateway stand-in, made with the ``openssl`` CLI.

What the OpenShell CLI leaves for a gateway ``<name>`` (and the SDK's
``SandboxClient.from_active_cluster`` reads) under ``$XDG_CONFIG_HOME/openshell``::

    active_gateway                          the gateway's name, one line
    gateways/<name>/metadata.json           {"gateway_endpoint": "https://127.0.0.1:<port>", "auth_mode": "mtls", ...}
    gateways/<name>/mtls/ca.crt             the CA that signed the gateway's server certificate
    gateways/<name>/mtls/tls.crt, tls.key   the client's certificate and key (key mode 0600)

The stand-in keeps its own side (the CA key, the server certificate and key) in
``gateways/<name>/standin/``, which the real CLI does not have.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_DAYS = "3650"


class TLSError(RuntimeError):
    """openssl failed."""


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path  # mtls/ca.crt
    client_cert: Path  # mtls/tls.crt
    client_key: Path  # mtls/tls.key
    ca_key: Path  # standin/ca.key
    server_cert: Path  # standin/server.crt
    server_key: Path  # standin/server.key

    def complete(self) -> bool:
        return all(p.is_file() and p.stat().st_size > 0 for p in self.__dict__.values())


def tls_files(gateway_dir: Path) -> TLSFiles:
    mtls, own = gateway_dir / "mtls", gateway_dir / "standin"
    return TLSFiles(
        ca_cert=mtls / "ca.crt",
        client_cert=mtls / "tls.crt",
        client_key=mtls / "tls.key",
        ca_key=own / "ca.key",
        server_cert=own / "server.crt",
        server_key=own / "server.key",
    )


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    except FileNotFoundError as exc:
        raise TLSError("the openssl CLI is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise TLSError(f"openssl {args[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from exc


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(path))
    path.chmod(0o600)


def _issue(files: TLSFiles, key: Path, cert: Path, subject: str, extensions: str, work: Path) -> None:
    csr = work / (cert.name + ".csr")
    ext = work / (cert.name + ".ext")
    ext.write_text(extensions)
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(files.ca_cert),
        "-CAkey",
        str(files.ca_key),
        "-set_serial",
        "0x" + secrets.token_hex(16),
        "-days",
        _DAYS,
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )


def ensure_tls(gateway_dir: Path, name: str) -> TLSFiles:
    """The gateway's CA, server and client certificates (made unless all are there)."""
    files = tls_files(gateway_dir)
    if files.complete():
        return files
    for directory in (files.ca_cert.parent, files.ca_key.parent):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
    with tempfile.TemporaryDirectory(prefix="openshell-standin-tls-") as tmp:
        work = Path(tmp)
        _new_key(files.ca_key)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(files.ca_key),
            "-subj",
            f"/O=openshell/CN=openshell-gateway-ca {name}",
            "-days",
            _DAYS,
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            str(files.ca_cert),
        )
        _issue(
            files,
            files.server_key,
            files.server_cert,
            "/O=openshell/CN=openshell-gateway",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            work,
        )
        _issue(
            files,
            files.client_key,
            files.client_cert,
            "/O=openshell/CN=openshell-client",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
            work,
        )
    for key in (files.ca_key, files.server_key, files.client_key):
        os.chmod(key, 0o600)
    return files
