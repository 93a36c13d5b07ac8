"""Read users' input files safely, and parse YAML remembering where every value came from.

Every file fleet reads from a user (playbook, inventory, group_vars/host_vars file,
``--limit @FILE``, facts file) goes through :func:`read_input`, and every YAML document
through :class:`BoundedLoader`, so that hostile or broken input ends in an
:class:`~fleet.errors.InputFileError` naming ``FILE:LINE`` (exit status 2), bounded in
time and memory, never a hang or a traceback (issue 9, items 7, 13 and 14):

* only regular files are read: a FIFO would block forever and ``/dev/zero`` never ends,
  so the file is opened with ``O_NONBLOCK`` and refused unless ``fstat`` says
  ``S_ISREG``;
* at most :data:`MAX_INPUT_BYTES` (16 MiB) for playbooks, inventories and vars files,
  :data:`MAX_FACTS_BYTES` (64 MiB) for facts files;
* YAML and JSON nest at most :data:`MAX_DEPTH` (100) levels (deeper input made the
  recursive composers raise RecursionError);
* YAML aliases (``*name``) may stand for at most :data:`MAX_ALIAS_NODES` (100,000)
  nodes in all, per document: a 539-byte "billion laughs" document otherwise expands
  to 10^9 nodes (CVE-2003-1564-style entity expansion, PyYAML's own loader has no such
  bound), and an alias may not refer to a node that contains it;
* a mapping key must be a scalar (``? [a, b]`` made a list key, a TypeError later).

Errors are the single-line ``FILE:LINE: message`` of :class:`InputFileError`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import InputFileError

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_FACTS_BYTES",
    "MAX_DEPTH",
    "MAX_ALIAS_NODES",
    "KeyPath",
    "LocatedDocument",
    "BoundedLoader",
    "read_input",
    "parse_json",
    "yaml_error",
    "load_located",
]

#: Largest playbook, inventory, vars or limit file read, in bytes (16 MiB).
MAX_INPUT_BYTES = 16 * 1024 * 1024
#: Largest facts file read, in bytes (64 MiB: a recorded fleet of many devices).
MAX_FACTS_BYTES = 64 * 1024 * 1024
#: Deepest nesting of YAML/JSON collections accepted (aliases expanded).
MAX_DEPTH = 100
#: Most nodes that the aliases of one YAML document may expand to, in total.
MAX_ALIAS_NODES = 100_000

KeyPath = tuple[Any, ...]


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def read_input(path: str | Path, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The text of the user's input file ``path``: a regular file, UTF-8, at most ``max_bytes``.

    The file is opened with ``O_NONBLOCK`` (a FIFO cannot block the open) and checked
    with ``fstat`` before anything is read, so FIFOs, sockets, devices (``/dev/zero``)
    and directories are refused by name; a file larger than ``max_bytes`` (or one that
    grows past it while being read) is refused without reading it whole.

    Raises :class:`InputFileError` naming ``path`` (and the line of the first byte that
    is not UTF-8).
    """
    p = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO on some systems) cannot be opened
            try:
                kind = _file_kind(os.stat(p).st_mode)
            except OSError:
                kind = "not a regular file"
            raise InputFileError(p, f"cannot read: {kind}, not a regular file") from None
        raise InputFileError(p, f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(p, f"cannot read: {_file_kind(st.st_mode)}, not a regular file")
        too_big = InputFileError(p, f"larger than the {_size_text(max_bytes)} an input file may have")
        if st.st_size > max_bytes:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_big
    except OSError as exc:
        raise InputFileError(p, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFileError(p, f"not UTF-8 text (byte {data[exc.start]:#04x})", line) from None


def _json_depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def parse_json(path: str | Path, text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse the JSON ``text`` read from ``path``, nesting at most ``max_depth`` levels.

    Raises :class:`InputFileError` naming ``path`` and the line of a syntax error, or
    saying the document nests too deeply (``json.loads`` would raise RecursionError
    somewhere past ~1000 levels; consumers recurse too).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        raise InputFileError(str(path), f"invalid JSON: nested more than {max_depth} levels deep") from None
    if not _json_depth_ok(value, max_depth):
        raise InputFileError(str(path), f"invalid JSON: nested more than {max_depth} levels deep")
    return value


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds on nesting depth and alias expansion.

    While composing, every node's expanded size (nodes below it, aliases counted in
    full) and depth are recorded; an alias adds its target's size to a per-document
    total that may not pass :attr:`max_alias_nodes`, and may not make the expanded
    document deeper than :attr:`max_depth`. Violations raise
    ``yaml.composer.ComposerError`` marked at the offending alias or collection, so
    callers report them like any YAML syntax error (see :func:`yaml_error`).
    """

    max_depth = MAX_DEPTH
    max_alias_nodes = MAX_ALIAS_NODES

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._open_anchors: set[str] = set()
        # id(node) -> (expanded size, expanded height); nodes stay alive in the tree.
        self._measure: dict[int, tuple[int, int]] = {}

    def compose_document(self) -> Any:
        # Each document of a stream gets its own budget (get_single_node has one).
        self._alias_nodes = 0
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if event.anchor in self._open_anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor} refers to a node that contains it (a recursive document)", event.start_mark
                    )
                size, height = self._measure.get(id(target), (1, 1))
                self._alias_nodes += size
                if self._alias_nodes > self.max_alias_nodes:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"aliases expand to more than {self.max_alias_nodes} nodes (a 'billion laughs' document?)",
                        event.start_mark,
                    )
                if self._depth + height > self.max_depth:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor} makes the document nest more than {self.max_depth} levels deep", event.start_mark
                    )
            return super().compose_node(parent, index)
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            if self._depth >= self.max_depth:
                raise yaml.composer.ComposerError(None, None, f"nested more than {self.max_depth} levels deep", event.start_mark)
            self._depth += 1
            if anchor is not None:
                self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1
                if anchor is not None:
                    self._open_anchors.discard(anchor)
        self._measure[id(node)] = self._measured(node)
        return node

    def _measured(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = list(node.value)
        size, height = 1, 0
        for child in children:
            s, h = self._measure.get(id(child), (1, 0))
            size += s
            height = max(height, h)
        return size, height + 1


def yaml_error(path: str | Path, exc: yaml.YAMLError, prefix: str = "invalid YAML") -> InputFileError:
    """An :class:`InputFileError` for PyYAML's ``exc``, at the line of its mark."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"{prefix}: {problem}" + (f" ({context})" if context else "")
    return InputFileError(str(path), message, mark.line + 1 if mark is not None else None)


@dataclass
class LocatedDocument:
    """A parsed YAML document plus the 1-based line of every node, by key path.

    ``lines[()]`` is the document's line; ``lines[("source", "build", "context")]`` the
    line of that value. List items use their index in the path.
    """

    path: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, keypath: KeyPath) -> int | None:
        """Line of ``keypath`` or of its nearest ancestor that has one."""
        kp = tuple(keypath)
        while kp not in self.lines and kp:
            kp = kp[:-1]
        return self.lines.get(kp)

    def error(self, keypath: KeyPath, message: str) -> InputFileError:
        """An InputFileError naming this file, the line of ``keypath`` and the dotted key."""
        # a key with a control character (a trailing newline) is shown escaped, so the
        # message stays on one line and says what is wrong with the key
        dotted = ".".join(str(k).encode("unicode_escape").decode("ascii") if not str(k).isprintable()
                          else str(k) for k in keypath)
        prefix = f"key '{dotted}': " if dotted else ""
        return InputFileError(self.path, prefix + message, self.line(keypath))


def _construct(node: yaml.Node, keypath: KeyPath, lines: dict[KeyPath, int], loader: yaml.SafeLoader) -> Any:
    lines[keypath] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputFileError(loader.name, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark.line + 1)
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                raise InputFileError(loader.name, f"duplicate key '{key}'", key_node.start_mark.line + 1)
            # A key's own line is where the user looks for it, not the line its value starts.
            result[key] = _construct(value_node, keypath + (key,), lines, loader)
            lines[keypath + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, keypath + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_located(path: str | Path, max_bytes: int = MAX_INPUT_BYTES,
                 loader_class: type[BoundedLoader] = BoundedLoader) -> LocatedDocument:
    """Parse the single YAML document in ``path`` with its line numbers.

    The file is read with :func:`read_input` (regular file, at most ``max_bytes``; pass
    :data:`MAX_FACTS_BYTES` for facts files) and parsed with :class:`BoundedLoader` (or
    ``loader_class``, a subclass of it with other scalar resolvers: Compose files are
    read as YAML 1.2, :mod:`fleet.compose.load`).
    Raises InputFileError (file and line) for unreadable files, YAML syntax errors,
    excessive nesting or alias expansion, non-scalar and duplicate keys; an empty file
    gives ``data=None``.
    """
    p = str(path)
    text = read_input(p, max_bytes)
    loader = loader_class(text)
    loader.name = p
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = None if node is None else _construct(node, (), lines, loader)
    except yaml.YAMLError as exc:
        raise yaml_error(p, exc, "YAML error") from None
    except RecursionError:
        raise InputFileError(p, f"YAML error: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    return LocatedDocument(p, data, lines)
