#!/usr/bin/env python3
"""Inventory script without _meta: Ansible calls it with --host NAME for each host."""
import json, sys
GROUPS = {"web": {"hosts": ["w1", "w2"], "vars": {"tier": "web"}}, "db": {"hosts": ["d1"]},
          "prod": {"children": ["web", "db"], "vars": {"env": "prod"}}}
HOSTVARS = {"w1": {"ansible_host": "127.0.0.21"}, "d1": {"ansible_port": 5432, "tier": "db"}}
if sys.argv[1:] == ["--list"]:
    print(json.dumps(GROUPS))
elif sys.argv[1] == "--host":
    print(json.dumps(HOSTVARS.get(sys.argv[2], {})))
