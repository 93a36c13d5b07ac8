"""Ansible inventories, read as Ansible reads them.

Users already describe their devices in Ansible inventories, so fleet reads the same
files rather than inventing a format (ansible-core paths below are under
``lib/ansible/``):

* YAML/JSON inventories (``all``/``children``/``hosts``/``vars``, nested groups, any
  top-level group) - ``plugins/inventory/yaml.py``: :mod:`fleet.inventory.yaml`;
* INI inventories (``[group]``, ``[group:children]``, ``[group:vars]``,
  ``host key=value``) - ``plugins/inventory/ini.py``: :mod:`fleet.inventory.ini`;
* TOML inventories (``*.toml``) - ``plugins/inventory/toml.py``:
  :mod:`fleet.inventory.toml`;
* executable inventory scripts (``--list``/``--host``, JSON) -
  ``plugins/inventory/script.py``: :mod:`fleet.inventory.script`;
* host ranges ``pi[01:50]``, ``node-[a:f]``, ``h[1:10:2]`` (at most
  :data:`MAX_HOSTS_PER_PATTERN` = 100,000 hosts per pattern) -
  ``plugins/inventory/__init__.py``: :mod:`fleet.inventory.ranges`;
* ``group_vars/`` and ``host_vars/`` beside each inventory source - the
  ``host_group_vars`` vars plugin: :mod:`fleet.inventory.vars`;
* an inventory directory and several ``-i`` sources merged, variable precedence -
  ``inventory/manager.py``, ``vars/manager.py``: :mod:`fleet.inventory.load`;
* host order and host patterns for ``--limit`` (``all[0]``, ``g[1:3]``, ``&``, ``!``,
  ``~regex``, ``@FILE``) - ``inventory/group.py``, ``inventory/manager.py``:
  :mod:`fleet.inventory.model`, :mod:`fleet.inventory.patterns`.

Inventory plugin configuration files (``plugin: aws_ec2``) and ansible-vault files are
refused. Every input file is read with :func:`fleet.yamlfile.read_input` (regular files
only, 16 MiB at most) and every YAML document with bounded nesting and alias expansion.
Everything is pure parsing except running inventory scripts; errors are
:class:`~fleet.errors.InputFileError` naming ``FILE:LINE`` or
:class:`~fleet.errors.UsageError`, never a traceback.
"""

from fleet.inventory.load import VARIABLE_ALIASES, load_inventory
from fleet.inventory.model import Group, Host, Inventory, UnsafeText, is_template
from fleet.inventory.patterns import read_limit_file, split_host_pattern
from fleet.inventory.ranges import MAX_HOSTS_PER_PATTERN, expand_hostname_range, parse_address

__all__ = [
    "Group",
    "Host",
    "Inventory",
    "UnsafeText",
    "VARIABLE_ALIASES",
    "MAX_HOSTS_PER_PATTERN",
    "expand_hostname_range",
    "is_template",
    "load_inventory",
    "parse_address",
    "read_limit_file",
    "split_host_pattern",
]
