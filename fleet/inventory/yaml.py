"""YAML (and JSON) inventories and vars files - ansible-core ``plugins/inventory/yaml.py``.

Documents are composed with :class:`fleet.yamlfile.BoundedLoader` (nesting depth and
alias expansion bounded), then walked node by node so every structure error names its
line. ``!unsafe`` strings become :class:`~fleet.inventory.model.UnsafeText` (never
templated); ``!vault`` values are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleet.errors import InputFileError
from fleet.inventory.builder import Builder, populate_hosts
from fleet.inventory.model import UnsafeText
from fleet.inventory.ranges import expand_hostpattern
from fleet.yamlfile import MAX_DEPTH, BoundedLoader, parse_json, yaml_error

__all__ = ["InventoryLoader", "compose", "parse_yaml_inventory", "looks_like_yaml_inventory", "node_line", "node_kind"]


class InventoryLoader(BoundedLoader):
    """The bounded safe loader plus Ansible's tags (``!unsafe`` strings; ``!vault`` refused)."""


def _construct_unsafe(loader: InventoryLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return UnsafeText(loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return [UnsafeText(v) if isinstance(v, str) else v for v in loader.construct_sequence(node, deep=True)]
    return {k: UnsafeText(v) if isinstance(v, str) else v for k, v in loader.construct_mapping(node, deep=True).items()}


def _construct_vault(loader: InventoryLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, "ansible-vault encrypted values (!vault) are not supported; decrypt them first", node.start_mark
    )


InventoryLoader.add_constructor("!unsafe", _construct_unsafe)
InventoryLoader.add_constructor("!vault", _construct_vault)


def compose(path: Path, text: str) -> tuple[InventoryLoader, yaml.Node | None]:
    """Compose the single document of ``text``; the caller disposes of the loader.

    Raises InputFileError (file:line) for invalid YAML/JSON and excessive nesting or
    alias expansion.
    """
    loader = InventoryLoader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError as exc:
        loader.dispose()
        if "\t" in text and text.lstrip().startswith(("{", "[")):
            # JSON indented with tabs is valid JSON but not YAML (Ansible's loader
            # tries json first). A raw tab can only be whitespace in valid JSON, so
            # spaces keep both the meaning and the line numbers.
            parse_json(path, text)
            return compose(path, text.replace("\t", " "))
        raise yaml_error(path, exc) from None
    except RecursionError:
        loader.dispose()
        raise InputFileError(str(path), f"invalid YAML: nested more than {MAX_DEPTH} levels deep") from None


def node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the scalar {node.value!r}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def construct_value(path: Path, loader: InventoryLoader, node: yaml.Node) -> Any:
    """The Python value of ``node``; errors name ``path`` and the line."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    except RecursionError:
        raise InputFileError(str(path), f"invalid YAML: nested more than {MAX_DEPTH} levels deep", node_line(node)) from None


class _YamlInventory:
    """Walks a composed YAML inventory so every structure error can name its line."""

    def __init__(self, path: Path, loader: InventoryLoader, builder: Builder):
        self.path = path
        self.source = str(path)
        self.loader = loader
        self.b = builder

    def fail(self, node: yaml.Node, message: str) -> InputFileError:
        return InputFileError(self.source, message, node_line(node))

    def pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        try:
            self.loader.flatten_mapping(node)  # resolves '<<' merge keys
        except yaml.YAMLError as exc:
            raise yaml_error(self.path, exc) from None
        # A repeated key (explicit or via '<<') keeps its first place and last value,
        # as when PyYAML builds a dict.
        pairs: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            pairs[knode.value if isinstance(knode, yaml.ScalarNode) else id(knode)] = (knode, vnode)
        return list(pairs.values())

    def key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"expected a name as mapping key, found {node_kind(node)}")
        return str(node.value)

    def value(self, node: yaml.Node) -> Any:
        return construct_value(self.path, self.loader, node)

    def section(self, node: yaml.Node, section: str, group: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Entries of a hosts/children/vars section: (name, key node, value node)."""
        if _is_null(node):
            return []
        if isinstance(node, yaml.ScalarNode):
            # yaml.py: a bare string stands for a one-entry mapping.
            return [(str(node.value), node, yaml.ScalarNode("tag:yaml.org,2002:null", "", node.start_mark, node.end_mark))]
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{section!r} of group {group!r} must be a mapping of names, found {node_kind(node)}")
        return [(self.key(k), k, v) for k, v in self.pairs(node)]

    def parse(self, root: yaml.Node | None) -> None:
        if root is None:
            raise InputFileError(self.source, "empty YAML inventory", 1)
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, f"a YAML inventory must be a mapping of group names, found {node_kind(root)}")
        entries = self.pairs(root)
        for knode, vnode in entries:
            if self.key(knode) == "plugin":
                raise self.fail(knode, "inventory plugin configuration files are not supported; use a static inventory")
        for knode, vnode in entries:
            self.group(self.key(knode), knode, vnode)

    def group(self, name: str, knode: yaml.Node, node: yaml.Node) -> str:
        if not (_is_null(node) or isinstance(node, yaml.MappingNode)):
            # Ansible skips this with a warning; a group that silently vanishes would
            # silently drop devices from a deploy.
            raise self.fail(node, f"group {name!r} must be a mapping with hosts/children/vars, found {node_kind(node)}")
        self.b.add_group(name)
        if _is_null(node):
            return name
        for sknode, snode in self.pairs(node):
            section = self.key(sknode)
            if section == "vars":
                for var, vk, vv in self.section(snode, section, name):
                    problem = self.b.set_group_var(name, var, self.value(vv), self.source)
                    if problem:
                        raise self.fail(vv, problem)
            elif section == "children":
                for child, ck, cv in self.section(snode, section, name):
                    self.group(child, ck, cv)
                    problem = self.b.add_child(name, child)
                    if problem:
                        raise self.fail(ck, problem)
            elif section == "hosts":
                for pattern, hk, hv in self.section(snode, section, name):
                    self.hosts(name, pattern, hk, hv)
            else:
                self.b.warnings.append(
                    f"{self.source}:{node_line(sknode)}: skipping unexpected key {section!r} in group {name!r}; "
                    "only 'vars', 'children' and 'hosts' are valid"
                )
        return name

    def hosts(self, group: str, pattern: str, knode: yaml.Node, vnode: yaml.Node) -> None:
        if not (_is_null(vnode) or isinstance(vnode, yaml.MappingNode)):
            raise self.fail(vnode, f"variables of host {pattern!r} must be a mapping, found {node_kind(vnode)}")
        try:
            names, port = expand_hostpattern(pattern)
        except ValueError as exc:
            raise self.fail(knode, str(exc)) from None
        variables = {} if _is_null(vnode) else self.value(vnode)
        populate_hosts(self.b, names, port, variables, group, self.source)


def parse_yaml_inventory(path: Path, text: str, builder: Builder) -> None:
    """Add the YAML/JSON inventory ``text`` read from ``path`` to ``builder``.

    Raises InputFileError naming ``path`` and the line at fault.
    """
    loader, root = compose(path, text)
    try:
        _YamlInventory(path, loader, builder).parse(root)
    finally:
        loader.dispose()


def looks_like_yaml_inventory(text: str) -> bool:
    """True when ``text`` parses as a YAML mapping (Ansible tries yaml before ini)."""
    loader = InventoryLoader(text)
    try:
        return isinstance(loader.get_single_node(), yaml.MappingNode)
    except (yaml.YAMLError, RecursionError):
        return False
    finally:
        loader.dispose()

