"""ssh_config(5) files read the way ssh(1) 9.2 reads them (readconf.c), without running anything.

Shape: ``apply_config(path, options, host_arg=..., device=...)`` feeds the options that
apply to ``host_arg`` into an :class:`fleet.ssh.options.Options` (first obtained value
wins, ``IdentityFile`` accumulates), each with its ``FILE:LINE`` origin.

Why not ``paramiko.SSHConfig``: its ``lookup`` runs ``Match exec`` commands on the local
machine (through invoke) while a config file is only being read; it matches ``Host``
patterns with ``fnmatch``, where ``[...]`` is a character class; it resolves names in DNS
for ``CanonicalizeHostname``; it expands ``%p``/``%r`` in ``ProxyCommand`` with the config
file's values before command-line options are known; it drops ``Include`` silently and
keeps no line numbers. This reader follows readconf.c instead:

* lines: keyword and arguments separated by whitespace or one ``=``; arguments split as
  argv_split() does (double or single quotes, backslash escapes, ``#`` ends the line);
  ``ProxyCommand`` keeps the raw rest of its line;
* ``Host`` patterns are matched against the host as given (case-sensitive, match.c
  match_pattern(), ``!`` negation); ``Match`` supports ``all``, ``canonical``, ``final``,
  ``host``, ``originalhost``, ``user``, ``localuser``; ``Match final`` triggers the second
  pass ssh(1) makes with the resolved host name;
* ``Match exec`` is refused (:class:`fleet.errors.InputFileError`, exit status 2, naming
  the file and line) wherever ssh(1) would run its command: fleet never runs a local
  command to read a config file. A ``Match exec`` that ssh(1) would skip because an
  earlier criterion of the same line failed is skipped here too;
* ``Include`` is followed (glob, relative paths under ``~/.ssh``, at most 16 levels, as
  ssh(1)); ``-F none`` reads nothing.

Source: ssh_config(5) of OpenSSH 9.2,
https://github.com/openssh/openssh-portable/blob/V_9_2_P1/readconf.c
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import InputFileError
from fleet.ssh._util import cache_lock, default_user, file_signature
from fleet.ssh.match import match_hostname, match_pattern, match_pattern_list
from fleet.ssh.options import percent_expand

if TYPE_CHECKING:
    from fleet.ssh.options import Options

__all__ = ["ConfigLine", "parse_config", "apply_config", "argv_split"]

#: Keywords whose value is the raw remainder of the line (readconf.c parse_command).
_RAW = {"proxycommand", "localcommand", "remotecommand", "knownhostscommand"}
_MAX_DEPTH = 16  # READCONF_MAX_DEPTH
_MAX_FILE = 4 << 20  # a config file is small; refuse to slurp anything huge


@dataclass(frozen=True)
class ConfigLine:
    """One non-empty, non-comment line: ``keyword`` lower-cased, ``args`` split, ``raw``
    the text after the keyword and its separator."""

    path: str
    line: int
    keyword: str
    args: tuple[str, ...]
    raw: str


def argv_split(s: str) -> list[str] | None:
    """misc.c argv_split(s, terminate_on_comment=1); None on an unterminated quote."""
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        if s[i] in " \t":
            i += 1
            continue
        if s[i] == "#":
            break
        quote = ""
        arg: list[str] = []
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n and (s[i + 1] in "'\"\\" or (not quote and s[i + 1] == " ")):
                arg.append(s[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                arg.append(c)
            i += 1
        if quote:
            return None
        out.append("".join(arg))
    return out


def _split_keyword(text: str) -> tuple[str, str]:
    """(keyword, rest) as readconf.c's strdelim(): whitespace or one ``=`` separates."""
    i, n = 0, len(text)
    while i < n and text[i] not in " \t\r\n=\"":
        i += 1
    keyword = text[:i]
    while i < n and text[i] in " \t\r\n":
        i += 1
    if i < n and text[i] == "=":
        i += 1
    while i < n and text[i] in " \t\r\n":
        i += 1
    return keyword, text[i:]


_parsed: dict[str, tuple[tuple, list[ConfigLine]]] = {}


def parse_config(path: Path) -> list[ConfigLine] | None:
    """The lines of ssh config ``path`` (cached by mtime/size/inode); None if absent.

    Raises InputFileError (``FILE:LINE``) for a keyword without argument, an unterminated
    quote, or an unreadable/oversized file."""
    sig = file_signature(path)
    if sig is None:
        return None
    key = str(path)
    with cache_lock:
        hit = _parsed.get(key)
        if hit and hit[0] == sig:
            return hit[1]
    try:
        if path.stat().st_size > _MAX_FILE:
            raise InputFileError(key, f"ssh config larger than {_MAX_FILE} bytes")
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except (PermissionError, IsADirectoryError) as e:
        raise InputFileError(key, f"cannot read ssh config: {e.strerror}") from None
    except FileNotFoundError:
        return None
    lines: list[ConfigLine] = []
    for lineno, raw_line in enumerate(text.split("\n"), 1):
        body = raw_line.strip(" \t\r\n\f")
        if not body or body.startswith("#"):
            continue
        keyword, rest = _split_keyword(body)
        if not keyword:
            continue
        keyword = keyword.lower()
        if not rest:
            raise InputFileError(key, f'no argument after keyword "{keyword}"', lineno)
        if keyword in _RAW:
            args: list[str] | None = [rest]
        else:
            args = argv_split(rest)
            if args is None:
                raise InputFileError(key, "invalid quotes", lineno)
        lines.append(ConfigLine(key, lineno, keyword, tuple(args), rest))
    with cache_lock:
        _parsed[key] = (sig, lines)
    return lines


class _Walk:
    """One pass over a config tree for one host (readconf.c read_config_file_depth)."""

    def __init__(self, options: "Options", host_arg: str, device: str, final: bool):
        self.options = options
        self.host_arg = host_arg
        self.device = device
        self.final = final
        self.want_final = False
        self.local_user = default_user()

    def _match_host(self) -> str:
        # match_cfg_line(): the host name as configured so far, %h expanded
        hostname = self.options.values.get("hostname")
        if self.final and hostname is not None:
            return hostname
        if hostname is not None:
            return percent_expand(hostname, {"h": self.host_arg}, device=self.device, what="HostName")
        return self.host_arg

    def _host_line(self, cl: ConfigLine) -> bool:
        # In the final pass ssh(1) passes the resolved host name to Host matching too.
        host = self.options.values.get("hostname", self.host_arg) if self.final else self.host_arg
        active = False
        for pattern in cl.args:
            negated = pattern.startswith("!")
            if match_pattern(host, pattern[1:] if negated else pattern):
                if negated:
                    return False
                active = True
        return active

    def _match_line(self, cl: ConfigLine) -> bool:
        args = list(cl.args)
        result = True
        attributes = 0
        host = self._match_host()
        user = self.options.values.get("user") or self.local_user
        i = 0
        while i < len(args):
            attrib = args[i]
            i += 1
            negate = attrib.startswith("!")
            name = (attrib[1:] if negate else attrib).lower()
            if name == "all":
                if attributes > 1 or i < len(args):
                    raise InputFileError(cl.path, f"'{attrib}' cannot be combined with other Match attributes", cl.line)
                return result and not negate
            attributes += 1
            if name in ("canonical", "final"):
                if name == "final":
                    self.want_final = True
                if self.final == negate:
                    result = False
                continue
            if i >= len(args):
                raise InputFileError(cl.path, f"missing Match criteria for {attrib}", cl.line)
            arg = args[i]
            i += 1
            if name == "host":
                r = match_hostname(host, arg) == 1
            elif name == "originalhost":
                r = match_hostname(self.host_arg, arg) == 1
            elif name == "user":
                r = match_pattern_list(user, arg, False) == 1
            elif name == "localuser":
                r = match_pattern_list(self.local_user, arg, False) == 1
            elif name == "exec":
                if not result:
                    continue  # ssh(1) skips the command when an earlier criterion failed
                raise InputFileError(
                    cl.path,
                    f"'Match exec {arg}' would run a local command to decide whether this block applies to "
                    f"{self.host_arg} ({self.device}); fleet never runs commands from an ssh config. Use Host or "
                    f"Match host/originalhost/user patterns, or point fleet at another file with --ssh-config",
                    cl.line,
                )
            else:
                raise InputFileError(cl.path, f"unsupported Match attribute {attrib}", cl.line)
            if r == negate:
                result = False
        if attributes == 0:
            raise InputFileError(cl.path, "one or more attributes required for Match", cl.line)
        return result

    def walk(self, path: Path, active: bool, depth: int) -> bool:
        """Apply ``path``; returns the activity state at its end (Include shares it)."""
        lines = parse_config(path)
        if lines is None:
            return active
        for cl in lines:
            if cl.keyword == "host":
                active = self._host_line(cl)
            elif cl.keyword == "match":
                active = self._match_line(cl)
            elif cl.keyword == "include":
                if active:
                    self._include(cl, active, depth)
            elif active:
                self.options.set_from_config(cl, device=self.device)
        return active

    def _include(self, cl: ConfigLine, active: bool, depth: int) -> None:
        if depth + 1 > _MAX_DEPTH:
            raise InputFileError(cl.path, f"Include nested more than {_MAX_DEPTH} levels deep", cl.line)
        for arg in cl.args:
            if not arg.startswith(("/", "~")):
                arg = str(Path.home() / ".ssh" / arg)
            for match in sorted(glob.glob(os.path.expanduser(arg))):
                # "don't let Match in includes clobber the containing file's Match state"
                self.walk(Path(match), active, depth + 1)


def apply_config(path: Path | None, options: "Options", *, host_arg: str, device: str) -> None:
    """Feed ssh config ``path`` (None: nothing) into ``options`` for ``host_arg``.

    Runs the second ("final") pass when the file asks for it with ``Match final``, with
    ``hostname`` set to the name resolved by the first pass, as ssh(1) does.
    Raises InputFileError naming ``FILE:LINE`` (see the module docstring)."""
    if path is None:
        return
    first = _Walk(options, host_arg, device, final=False)
    first.walk(path, True, 0)
    if first.want_final:
        hostname = options.values.get("hostname")
        resolved = percent_expand(hostname, {"h": host_arg}, device=device, what="HostName") if hostname else host_arg
        options.values["hostname"] = resolved.lower()
        options.origins.setdefault("hostname", "final pass")
        _Walk(options, host_arg, device, final=True).walk(path, True, 0)
