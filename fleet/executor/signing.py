"""The signing identity of one side (controller or site worker) and Celery's ``auth`` serializer.

Celery's message signing (docs/userguide/security.rst, "Message Signing"): the sender
signs each message body with its RSA key (PSS, SHA-256) and names its certificate by
``issuer serial``; the receiver looks that certificate up in its certificate store (a
directory of PEM files) and verifies the signature with it. Nothing that is not in the
store is trusted: there is no CA chain, the store IS the list of trusted signers.

fleet registers the serializer itself (:func:`register_signing`) rather than through
``app.setup_security()``, for two reasons: the store also gets this side's own
certificate (a worker reads back the state it stored itself before writing a result), and
a wrong signature is reported as such: Celery 5.7's ``Certificate.verify`` wraps
cryptography's InvalidSignature with ``reraise_errors`` whose default error list is the
``cryptography.exceptions`` module, which turns a bad signature into "TypeError: catching
classes that do not inherit from BaseException is not allowed" (the symptom reported in
celery/celery#7645); the message is still refused, but nobody can tell why.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fleet.executor.errors import SigningError

__all__ = ["Signing", "register_signing", "ENV_KEY", "ENV_CERT", "ENV_CERT_STORE", "ENV_KEY_PASSWORD"]

ENV_KEY = "FLEET_CELERY_KEY"
ENV_CERT = "FLEET_CELERY_CERT"
ENV_CERT_STORE = "FLEET_CELERY_CERT_STORE"
ENV_KEY_PASSWORD = "FLEET_CELERY_KEY_PASSWORD"


@dataclass(frozen=True)
class Signing:
    """Paths of this side's signing identity: ``key`` (RSA private key, PEM, readable by
    its owner only), ``cert`` (its X.509 certificate, PEM), ``cert_store`` (a directory of
    the certificates whose signatures this side accepts, one PEM per file, or one file).
    ``key_password``: the key's passphrase (from ``FLEET_CELERY_KEY_PASSWORD``) or None."""

    key: Path
    cert: Path
    cert_store: Path
    key_password: str | None = None

    @classmethod
    def from_options(cls, key: str | os.PathLike | None = None, cert: str | os.PathLike | None = None,
                     cert_store: str | os.PathLike | None = None,
                     environ: Mapping[str, str] | None = None) -> "Signing":
        """The identity from the flags, else ``FLEET_CELERY_KEY``, ``FLEET_CELERY_CERT``,
        ``FLEET_CELERY_CERT_STORE``; checked (:meth:`check`). Raises :class:`SigningError`
        (exit 2) naming the missing flag/variable or the unusable file."""
        env = os.environ if environ is None else environ
        values = {}
        for name, given, var in (("--key", key, ENV_KEY), ("--cert", cert, ENV_CERT),
                                 ("--cert-store", cert_store, ENV_CERT_STORE)):
            value = given or env.get(var)
            if not value:
                raise SigningError(f"jobs are signed: give {name} PATH or set {var} (docs/sites.md, "
                                   f"'Certificates')")
            values[name] = Path(value).expanduser()
        s = cls(values["--key"], values["--cert"], values["--cert-store"], env.get(ENV_KEY_PASSWORD) or None)
        s.check()
        return s

    def check(self) -> None:
        """Load the key, certificate and store as Celery will, so a mistake is a clear
        error now rather than a refused message later. Raises :class:`SigningError`."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            st = self.key.stat()
        except OSError as e:
            raise SigningError(f"--key {self.key}: {e.strerror or e}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningError(f"--key {self.key}: permissions {stat.S_IMODE(st.st_mode):04o} are too open: the "
                               f"signing key must be readable by its owner only (chmod 600)")
        try:
            key = serialization.load_pem_private_key(self.key.read_bytes(),
                                                     self.key_password.encode() if self.key_password else None)
        except (OSError, ValueError, TypeError) as e:
            raise SigningError(f"--key {self.key}: not a readable PEM private key ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningError(f"--key {self.key}: Celery's message signing takes RSA keys only")
        cert = _load_cert(self.cert, "--cert")
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise SigningError(f"--cert {self.cert}: is not the certificate of --key {self.key}")
        files = self.store_files()
        if not files:
            raise SigningError(f"--cert-store {self.cert_store}: holds no certificate (put the PEM certificate "
                               f"of each signer you trust in it)")
        for p in files:
            _load_cert(p, "--cert-store")

    def store_files(self) -> list[Path]:
        """The certificate files of the store (a directory's files but dot files, or the
        one file). Raises :class:`SigningError` when it does not exist."""
        if self.cert_store.is_dir():
            return sorted(p for p in self.cert_store.iterdir() if not p.name.startswith(".") and p.is_file())
        if self.cert_store.is_file():
            return [self.cert_store]
        raise SigningError(f"--cert-store {self.cert_store}: no such directory or file")

    def conf(self) -> dict[str, Any]:
        """Celery settings for this identity."""
        return {"security_key": str(self.key), "security_certificate": str(self.cert),
                "security_cert_store": str(self.cert_store), "security_digest": "sha256",
                "security_key_password": self.key_password.encode() if self.key_password else None}


def _load_cert(path: Path, what: str):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SigningError(f"{what} {path}: not a readable PEM certificate ({type(e).__name__})") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise SigningError(f"{what} {path}: Celery's message signing takes RSA certificates only")
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.timezone.utc):
        raise SigningError(f"{what} {path}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert


def register_signing(signing: Signing) -> None:
    """Register Celery's ``auth`` serializer (process-wide, kombu's registry) for
    ``signing``, with every other decoder disabled. What Celery's ``setup_security`` does,
    except that the store also holds this side's own certificate: a worker reads back the
    state it stored itself (Celery checks a job's stored state before writing its result),
    and that state is signed with its own key. Raises :class:`SigningError`."""
    from celery.exceptions import SecurityError
    from celery.security.certificate import CertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer
    from kombu.serialization import disable_insecure_serializers, registry

    try:
        store = CertStore()
        for path in signing.store_files():
            store.add_cert(_certificate(path.read_text()))
        own = _certificate(signing.cert.read_text())
        try:
            store[own.get_id()]
        except SecurityError:
            store.add_cert(own)
        key = PrivateKey(signing.key.read_text(), password=signing.key_password.encode() if signing.key_password
                         else None)
    except (SecurityError, OSError, ValueError) as e:
        raise SigningError(f"message signing: {e}") from None
    serializer = SecureSerializer(key, own, store, digest="sha256", serializer="json")
    disable_insecure_serializers(None)
    registry.register("auth", serializer.serialize, serializer.deserialize, content_type="application/data",
                      content_encoding="utf-8")
    registry._set_default_serializer("auth")


def _certificate(pem: str) -> Any:
    """A Celery certificate whose ``verify`` reports a bad signature as one (module docstring)."""
    from celery.exceptions import SecurityError
    from celery.security.certificate import Certificate
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding
    from kombu.utils.encoding import ensure_bytes

    class _Certificate(Certificate):
        def verify(self, data: bytes, signature: bytes, digest: Any) -> None:
            if self.has_expired():
                raise SecurityError(f"Expired certificate: {self.get_id()!r}")
            pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.MAX_LENGTH)
            try:
                self.get_pubkey().verify(signature, ensure_bytes(data), pad, digest)
            except InvalidSignature:
                raise SecurityError(f"Bad signature: not made by the key of certificate {self.get_id()!r}") from None

    return _Certificate(pem)
