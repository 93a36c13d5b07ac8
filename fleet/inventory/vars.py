"""``group_vars/`` and ``host_vars/`` files - ansible-core's ``host_group_vars`` vars plugin.

For an inventory source whose directory is BASE, the variables of group or host NAME
come from ``BASE/group_vars/NAME`` (or ``host_vars``): a file, or a directory read
recursively in sorted order (hidden and ``~`` backup entries skipped, only
``.yml``/``.yaml``/``.json`` or extensionless files), or else the first of
``NAME.yml``, ``NAME.yaml``, ``NAME.json``. Files are read with
:func:`fleet.yamlfile.read_input`: a FIFO, socket or device there is an error naming
it, never a silent skip or a hang.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from fleet.errors import InputFileError
from fleet.inventory.yaml import compose, construct_value, node_kind, node_line
from fleet.yamlfile import read_input

__all__ = ["YAML_EXTENSIONS", "VarsFileCache", "vars_files", "read_inventory_text"]

# Extensions the yaml inventory plugin and the host_group_vars plugin accept
# (C.YAML_FILENAME_EXTENSIONS).
YAML_EXTENSIONS = (".yml", ".yaml", ".json")


def read_inventory_text(path: Path) -> str:
    """The text of an inventory or vars file (:func:`read_input`); vault files refused."""
    text = read_input(path)
    if text.startswith("$ANSIBLE_VAULT"):
        raise InputFileError(str(path), "ansible-vault encrypted files are not supported; decrypt it first", 1)
    return text


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def vars_files(basedir: Path, subdir: str, name: str) -> list[Path]:
    """Files holding vars for ``name`` under ``basedir/subdir`` (host_group_vars plugin)."""
    folder = basedir / subdir
    if not folder.is_dir() or name.startswith(os.sep) or "/" in name or name in ("", ".", ".."):
        return []
    base = folder / name
    if base.is_dir():
        return _dir_vars_files(base)
    if _exists(base):
        return [base]  # a FIFO or device here is reported by read_input
    for ext in YAML_EXTENSIONS:
        candidate = folder / f"{name}{ext}"
        if _exists(candidate):
            return [candidate]
    return []


def _dir_vars_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = folder / entry
        ext = os.path.splitext(entry)[1]
        if full.is_dir():
            if not ext:
                found.extend(_dir_vars_files(full))
        elif not ext or ext in YAML_EXTENSIONS:
            found.append(full)
    return found


class VarsFileCache:
    """Loads each vars file once; :meth:`merged` applies them in Ansible's order."""

    def __init__(self) -> None:
        self._loaded: dict[Path, dict[str, Any]] = {}

    def load(self, path: Path) -> dict[str, Any]:
        """The variables of one vars file (empty file: none).

        Raises InputFileError (file:line) for an unreadable file, invalid YAML/JSON, a
        document that is not a mapping, or a non-string variable name.
        """
        if path not in self._loaded:
            text = read_inventory_text(path)
            loader, root = compose(path, text)
            try:
                if root is None:
                    data: dict[str, Any] = {}  # empty files are ignored, as Ansible does
                elif not isinstance(root, yaml.MappingNode):
                    raise InputFileError(
                        str(path), f"a vars file must be a mapping of variables, found {node_kind(root)}", node_line(root)
                    )
                else:
                    for key_node, _ in root.value:
                        if not isinstance(key_node, yaml.ScalarNode):
                            raise InputFileError(str(path), "variable names must be strings, found a list or mapping", node_line(key_node))
                    data = construct_value(path, loader, root)
                    bad = [k for k in data if not isinstance(k, str)]
                    if bad:
                        raise InputFileError(str(path), f"variable names must be strings, found {bad[0]!r}", node_line(root))
            finally:
                loader.dispose()
            self._loaded[path] = data
        return self._loaded[path]

    def merged(self, basedirs: Sequence[Path], subdir: str, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Variables of ``names`` from every source's ``subdir``, later winning, and
        the file that set each (``get_vars_from_inventory_sources``: sources outermost,
        then entities in order)."""
        data: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for basedir in basedirs:
            for name in names:
                for path in vars_files(basedir, subdir, name):
                    loaded = self.load(path)
                    data.update(loaded)
                    sources.update(dict.fromkeys(loaded, str(path)))
        return data, sources
