"""The reference pages stay true to the code:

* docs/playbook.md documents exactly the keys the playbook validator accepts
  (``fleet.playbook.PLAYBOOK_KEYS``), section by section;
* every error message docs/troubleshooting.md quotes can still be printed by fleet: it
  matches, in full, one of the message templates of the source under fleet/ (an f-string,
  a ``%``-format or a plain string, the formatted parts matching any text);
* docs/reports.md names every schema shipped in fleet/schemas/.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

from fleet.playbook import PLAYBOOK_KEYS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


# ------------------------------------------------------------------ docs/playbook.md

def documented_playbook_keys(text: str) -> dict[str, set[str]]:
    """Section -> keys of docs/playbook.md: a section is a heading ``## Top level`` ("")
    or one naming a section in backquotes (``## `registry` ``, ``### `source.build` ``);
    its keys are the first cells of its table's rows (`` | `key` | ``)."""
    sections: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        h = re.match(r"#{2,4}\s+(.*)", line)
        if h:
            title = h.group(1).strip()
            m = re.fullmatch(r"`([a-z_.]+)`", title)
            current = "" if title == "Top level" else m.group(1) if m else None
            if current is not None:
                sections.setdefault(current, set())
            continue
        row = re.match(r"\|\s*`([a-z_]+)`\s*\|", line)
        if row and current is not None:
            sections[current].add(row.group(1))
    return sections


def test_playbook_reference_lists_exactly_the_validators_keys():
    documented = documented_playbook_keys((DOCS / "playbook.md").read_text())
    assert set(documented) == set(PLAYBOOK_KEYS), "sections differ"
    for section, keys in PLAYBOOK_KEYS.items():
        assert documented[section] == set(keys), (section or "top level", documented[section] ^ set(keys))


def test_playbook_reference_parser_sees_a_missing_key():
    """The comparison above can fail: a page without one row is noticed."""
    text = (DOCS / "playbook.md").read_text().replace("| `keep_images` |", "| keep images |")
    assert "keep_images" not in documented_playbook_keys(text)["rollout"]


def test_the_validator_uses_the_list():
    """An undocumented key added to PLAYBOOK_KEYS would be accepted; one removed refused:
    the validator reads its allowed keys from PLAYBOOK_KEYS, not from a copy."""
    import fleet.playbook as pb

    source = Path(pb.__file__).read_text()
    for section in ("source", "source.build", "source.native", "registry"):
        assert f'PLAYBOOK_KEYS["{section}"]' in source, section


# ------------------------------------------------------------ docs/troubleshooting.md

_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdrfgixX]")


def _pattern(node: ast.AST) -> str | None:
    """A regex for the strings an expression can make, or None when it makes no string
    we can read (formatted values and %-placeholders match any text)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = _FORMAT.split(node.value)
        return "(?:.+?)".join(re.escape(p) for p in parts)
    if isinstance(node, ast.JoinedStr):
        out = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                out.append(re.escape(str(v.value)))
            else:
                out.append("(?:.*?)")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _pattern(node.left), _pattern(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "(?:.*?)") + (right if right is not None else "(?:.*?)")
    return None


@lru_cache(maxsize=1)
def message_templates() -> tuple[re.Pattern, ...]:
    """Every string template of fleet/'s source, as a compiled regex."""
    found: set[str] = set()
    for path in (ROOT / "fleet").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        inner: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                inner.update(id(n) for n in (node.left, node.right))
            if isinstance(node, ast.JoinedStr):
                inner.update(id(n) for n in node.values)
        for node in ast.walk(tree):
            if id(node) in inner:
                continue
            p = _pattern(node)
            if p and len(re.sub(r"\(\?:\.\*?\+?\?\)|\\", "", p)) >= 8:
                found.add(p)
    return tuple(re.compile(p, re.S) for p in found)


def quoted_messages(text: str) -> list[str]:
    """The messages docs/troubleshooting.md quotes: each line of a block marked
    ``<!-- message -->`` (a ```` ```text ```` block right after that comment)."""
    out: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "<!-- message -->":
            assert lines[i + 1].startswith("```"), f"troubleshooting.md:{i + 2}: a message block must follow"
            j = i + 2
            while not lines[j].startswith("```"):
                if lines[j].strip():
                    out.append(lines[j].strip())
                j += 1
    return out


def matches_a_template(message: str) -> bool:
    """``message`` is one template's output, or a device-prefixed one (``HOST: ...``, as
    progress and errors name the device), or ends with ``…`` for a cut tail."""
    candidates = [message]
    if ": " in message:
        candidates.append(message.split(": ", 1)[1])
    for m in candidates:
        cut = m.endswith("…")
        m = m.rstrip("…").rstrip()
        for t in message_templates():
            if (t.match(m) if cut else t.fullmatch(m)):
                return True
    return False


def test_troubleshooting_quotes_only_messages_fleet_prints():
    messages = quoted_messages((DOCS / "troubleshooting.md").read_text())
    assert len(messages) >= 15
    missing = [m for m in messages if not matches_a_template(m)]
    assert not missing, "quoted in docs/troubleshooting.md but printed nowhere in fleet/:\n" + "\n".join(missing)


@pytest.mark.parametrize("drifted", [
    "host key of pi-01 is unknown: it offered ssh-ed25519 SHA256:x, found nowhere at all",
    "WARNING: the host key of pi-01 has CHANGED (just because)",
])
def test_a_message_fleet_does_not_print_is_noticed(drifted):
    assert not matches_a_template(drifted)


# ------------------------------------------------------------------------ docs/reports.md

def test_reports_page_names_every_schema():
    from fleet.schemas import NAMES

    text = (DOCS / "reports.md").read_text().split("## Schemas", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", text, re.M))
    assert rows == set(NAMES)
