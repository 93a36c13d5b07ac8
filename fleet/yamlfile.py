"""Read a YAML file and remember where every value came from.

Errors about a user's file must name the file and line (DEVELOPERS.md), so loaders that
validate a structure (playbooks) need each key's line after the document is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import InputFileError

KeyPath = tuple[Any, ...]


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
        dotted = ".".join(str(k) for k in keypath)
        prefix = f"key '{dotted}': " if dotted else ""
        return InputFileError(self.path, prefix + message, self.line(keypath))


def _construct(node: yaml.Node, keypath: KeyPath, lines: dict[KeyPath, int], loader: yaml.SafeLoader) -> Any:
    lines[keypath] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
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


def load_located(path: str | Path) -> LocatedDocument:
    """Parse the single YAML document in ``path`` with its line numbers.

    Raises InputFileError (file and line) for unreadable files, YAML syntax errors and
    duplicate keys; an empty file gives ``data=None``.
    """
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(p, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"not UTF-8 text: {exc.reason}") from None
    loader = yaml.SafeLoader(text)
    loader.name = p
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = None if node is None else _construct(node, (), lines, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InputFileError(p, f"YAML error: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise InputFileError(p, f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return LocatedDocument(p, data, lines)
