"""Diagnostic logging for ``-v``, ``-vv`` and ``-vvv`` (stderr only, never ``--json`` stdout).

Every module logs through :func:`logger` (a child of the ``fleet`` logger) at one of three
levels, which the CLI's verbosity switches on (as ``ssh -v``/``-vv``/``-vvv`` and
``ansible -v``... do):

* ``-v``  :data:`logging.INFO`  connections and decisions: which address and port, which
  known_hosts entry accepted or refused a host key, which key authenticated, which
  registry endpoint and auth scheme.
* ``-vv`` :data:`logging.DEBUG` the work itself: every remote command (secrets masked),
  every engine API call, every registry request with its status.
* ``-vvv`` :data:`TRACE` the wire: registry response headers (credentials removed),
  paramiko's transport log.

Nothing secret is ever passed to a logger: callers mask passwords, tokens and
``Authorization`` values before formatting (:func:`redact_headers`).
"""

from __future__ import annotations

import logging
from typing import Mapping

__all__ = ["TRACE", "logger", "configure", "redact_headers", "SECRET_HEADERS"]

#: Below DEBUG: wire-level detail for ``-vvv``.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

#: HTTP headers whose values are credentials (never logged).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-registry-auth", "cookie", "set-cookie",
                            "www-authenticate-token"})

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def logger(name: str) -> logging.Logger:
    """The logger for a fleet module: ``logger("ssh")`` -> ``fleet.ssh``."""
    return logging.getLogger(name if name.startswith("fleet") else f"fleet.{name}")


def configure(verbosity: int, stream=None) -> None:
    """Send fleet's diagnostics to ``stream`` (default stderr) at ``verbosity`` 0-3.

    0 shows nothing (warnings go through :mod:`fleet.output`), 1 INFO, 2 DEBUG, 3 and more
    TRACE plus paramiko's own transport log. Idempotent: one handler per process.
    """
    import sys

    root = logging.getLogger("fleet")
    level = _LEVELS.get(verbosity, TRACE) if verbosity >= 0 else logging.WARNING
    root.setLevel(level if verbosity > 0 else logging.CRITICAL + 1)
    root.propagate = False
    for h in list(root.handlers):
        if getattr(h, "_fleet", False):
            root.removeHandler(h)
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler._fleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    para = logging.getLogger("paramiko")
    if verbosity >= 3:
        para.setLevel(logging.DEBUG)
        para.addHandler(handler)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every credential-bearing value replaced by ``<redacted>``."""
    return {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}
