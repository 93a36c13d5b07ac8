"""fleet.publish.index: every case of tests/data/cases/index-cases.yaml, index building and
the checks on index documents and configs. The ELF checks on real binaries are
tests/integration/test_elf_content.py."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from fleet.publish.index import (
    ATTESTATION_ANNOTATION,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    IndexEntry,
    IndexRefused,
    build_index,
    check_config,
    check_index,
    check_pull_path,
    index_media_type,
    parse_index,
)
from fleet.platform import Platform

from fleet.plan import NoMatchingEntry, choose_entry
from tests.cases import load_cases


def _choose(device, entries, legacy=False):
    """The entry fleet's one chooser gives a device of ``device`` from parsed index entries."""
    return choose_entry(device, [e.candidate for e in entries], legacy=legacy, labels=[e.label for e in entries])


# Loaded at collection from tests/data/cases/index-cases.yaml.
CASES = load_cases("index-cases.yaml")


def _fake_digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _published_index(case: dict) -> bytes:
    """The case's index as its publisher wrote it: platforms split exactly as given."""
    index_type = case.get("media_type") or OCI_INDEX
    child = DOCKER_MANIFEST if index_type == DOCKER_MANIFEST_LIST else OCI_MANIFEST
    manifests = []
    for i, e in enumerate(case["index"]):
        os_, arch, *variant = e["platform"].split("/")
        platform = {"architecture": arch, "os": os_}
        if variant:
            platform["variant"] = variant[0]
        d = {"mediaType": child, "digest": _fake_digest(case["id"], i), "size": 500 + i,
             "platform": platform}
        if e.get("annotations"):
            d["annotations"] = e["annotations"]
        manifests.append(d)
    return json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": manifests}).encode()


# Which refusal a case's expected error describes. A new kind of case must be added here:
# the test fails rather than passing a case it does not understand.
def _expected_kinds(error: str) -> set[str]:
    e = error.lower()
    kinds = set()
    if "duplicate" in e:
        kinds.add("duplicate-platform")
    if "invalid" in e and "variant" in e:
        kinds.add("invalid-platform")
    if "config declares" in e:
        kinds.add("config-mismatch")
    if "pull path" in e:
        kinds.add("pull-path")
    return kinds


def _key_tokens(error: str) -> set[str]:
    """Platforms, media types, quoted names and uname-style variants the case names."""
    tokens = set(re.findall(r"linux/[a-z0-9]+(?:/v[0-9][0-9a-z.]*)?", error))
    tokens |= set(re.findall(r"application/[\w.+-]+", error))
    tokens |= set(re.findall(r"'([^']+)'", error))
    tokens |= set(re.findall(r"\bv\d+[a-z]+\b", error))
    return tokens


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_index_case(case):
    raw = _published_index(case)
    entries = parse_index(raw)
    assert len(entries) == len(case["index"])
    expected = case["expected"]

    if case.get("device_platform"):
        device = Platform.parse(case["device_platform"])
        if expected["entry"] is not None:
            check_index(entries)  # a usable index passes the publish checks
            assert _choose(device, entries) == expected["entry"]
            assert not entries[expected["entry"]].is_attestation
        else:
            with pytest.raises(NoMatchingEntry) as exc:
                _choose(device, entries)
            msg = str(exc.value)
            assert str(device) in msg
            for e in case["index"]:
                assert e["platform"] in msg  # the user sees what the index holds
        return

    # device_platform null: a publishing case; the index must be refused with the gist.
    assert expected["entry"] is None and expected["error"]
    kinds = _expected_kinds(expected["error"])
    assert kinds, f"{case['id']}: unrecognised case gist {expected['error']!r}"
    refusals: list[IndexRefused] = []
    try:
        check_index(entries)
    except IndexRefused as exc:
        refusals.append(exc)
    for i, e in enumerate(case["index"]):
        if e.get("config_platform"):
            cfg_os, cfg_arch, *cfg_var = e["config_platform"].split("/")
            config = {"architecture": cfg_arch, "os": cfg_os, "rootfs": {"type": "layers", "diff_ids": []}}
            if cfg_var:
                config["variant"] = cfg_var[0]
            with pytest.raises(IndexRefused) as exc:
                check_config(entries[i].platform, json.dumps(config).encode())
            refusals.append(exc.value)
    if case.get("pull_path_serves") or case.get("pull_path_fails"):
        with pytest.raises(IndexRefused) as exc:
            check_pull_path(index_media_type(raw), case.get("pull_path_serves"),
                            case.get("pull_path_fails"))
        refusals.append(exc.value)
    assert refusals, f"{case['id']}: nothing refused the index"
    got_kinds = set().union(*(r.kinds for r in refusals))
    assert kinds <= got_kinds, (kinds, [str(r) for r in refusals])
    message = " | ".join(str(r) for r in refusals)
    for token in _key_tokens(expected["error"]):
        if token.startswith(("valid", "none")):
            continue
        assert token in message, f"{case['id']}: {token!r} not in {message!r}"


def test_every_case_kind_is_exercised():
    """The case file keeps covering both planning and refusing."""
    assert any(c["device_platform"] and c["expected"]["entry"] is not None for c in CASES)
    assert any(c["device_platform"] and c["expected"]["entry"] is None for c in CASES)
    assert any(not c["device_platform"] for c in CASES)


# --------------------------------------------------------------------------- own cases


def _entry(spec, n, media_type=OCI_MANIFEST, annotations=None):
    return IndexEntry.from_spec(spec, _fake_digest(spec, n), 1000 + n, media_type, annotations)


def test_build_index_is_deterministic_and_round_trips():
    entries = [_entry("linux/amd64", 0), _entry("linux/arm64", 1), _entry("linux/arm", 2),
               _entry("linux/arm/v6", 3)]
    raw1, mt1 = build_index(entries)
    raw2, mt2 = build_index([_entry("linux/amd64", 0), _entry("linux/arm64", 1),
                             _entry("linux/arm", 2), _entry("linux/arm/v6", 3)])
    assert (raw1, mt1) == (raw2, mt2) and mt1 == OCI_INDEX
    doc = json.loads(raw1)
    assert doc["mediaType"] == OCI_INDEX and doc["schemaVersion"] == 2
    platforms = [m["platform"] for m in doc["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},  # bare arm written as v7
        {"architecture": "arm", "os": "linux", "variant": "v6"},
    ]
    back = parse_index(raw1)
    assert [e.platform for e in back] == [e.platform for e in entries]
    assert [(e.digest, e.size, e.media_type) for e in back] == \
        [(e.digest, e.size, e.media_type) for e in entries]
    # Order is part of the content (Docker <= 20.10 takes the first arm entry).
    raw3, _ = build_index(list(reversed(entries)))
    assert hashlib.sha256(raw3).digest() != hashlib.sha256(raw1).digest()


def test_build_index_media_type_follows_children():
    docker = [_entry("linux/amd64", 0, DOCKER_MANIFEST), _entry("linux/arm/v7", 1, DOCKER_MANIFEST)]
    raw, mt = build_index(docker)
    assert mt == DOCKER_MANIFEST_LIST == json.loads(raw)["mediaType"]
    mixed = [_entry("linux/amd64", 0, DOCKER_MANIFEST), _entry("linux/arm/v7", 1, OCI_MANIFEST)]
    with pytest.raises(IndexRefused) as exc:
        build_index(mixed)
    assert exc.value.kinds == {"mixed-media-types"}
    raw, mt = build_index(mixed, media_type=OCI_INDEX)
    assert mt == OCI_INDEX
    with pytest.raises(IndexRefused, match="annotations"):
        build_index([_entry("linux/amd64", 0, DOCKER_MANIFEST, {"org.opencontainers.image.ref.name": "x"})])


def test_attestation_entries_are_kept_and_never_chosen():
    att = {ATTESTATION_ANNOTATION: "attestation-manifest",
           "vnd.docker.reference.digest": _fake_digest("x", 0)}
    entries = [_entry("linux/arm64", 0), _entry("unknown/unknown", 1, annotations=att),
               _entry("linux/amd64", 2), _entry("unknown/unknown", 3, annotations=att)]
    check_index(entries)  # two attestation entries are not duplicate platforms
    assert [e.is_attestation for e in entries] == [False, True, False, True]
    raw, mt = build_index(entries)
    assert mt == OCI_INDEX
    back = parse_index(raw)
    assert [e.is_attestation for e in back] == [False, True, False, True]
    assert back[1].annotations == att
    assert _choose(Platform.parse("linux/amd64"), back) == 2
    with pytest.raises(NoMatchingEntry):
        _choose(Platform.parse("linux/arm64"), [entries[1], entries[3]])
    with pytest.raises(IndexRefused, match="attestation"):
        build_index(entries, media_type=DOCKER_MANIFEST_LIST)


@pytest.mark.parametrize("specs,kind,needle", [
    (["linux/amd64", "linux/x86_64"], "duplicate-platform", "duplicate platform linux/amd64"),
    (["linux/arm", "linux/arm/v7"], "duplicate-platform", "duplicate platform linux/arm/v7"),
    (["linux/arm64", "linux/arm64/v8"], "duplicate-platform", "duplicate platform linux/arm64"),
    (["linux/arm64/v7"], "invalid-platform", "'v7'"),
    (["linux/arm/v7l"], "invalid-platform", "'v7l'"),
    (["linux/arm64/armv8"], "invalid-platform", "'armv8'"),
    ([None], "missing-platform", "no platform"),
])
def test_check_index_refusals(specs, kind, needle):
    entries = [_entry(s, i) for i, s in enumerate(specs)]
    with pytest.raises(IndexRefused) as exc:
        check_index(entries)
    assert kind in exc.value.kinds
    assert needle in str(exc.value)
    with pytest.raises(IndexRefused):
        build_index(entries)


def test_check_index_refuses_bad_descriptors():
    bad = IndexEntry(Platform.parse("linux/amd64"), "sha256:abc", 10, OCI_MANIFEST)
    with pytest.raises(IndexRefused) as exc:
        check_index([bad])
    assert exc.value.kinds == {"bad-descriptor"}
    with pytest.raises(IndexRefused):
        parse_index(b'{"schemaVersion": 2, "config": {}}')


@pytest.mark.parametrize("entry,config,ok", [
    ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v6"}, True),
    ("linux/arm/v6", {"os": "linux", "architecture": "arm"}, True),  # pre-20.10 builders: no variant
    ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v7"}, False),
    ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}, True),
    ("linux/arm64", {"os": "linux", "architecture": "amd64"}, False),
    ("linux/amd64", {"os": "linux", "architecture": "amd64"}, True),
    ("linux/amd64", {"os": "windows", "architecture": "amd64"}, False),
    ("linux/amd64", {"os": "linux"}, False),
])
def test_check_config(entry, config, ok):
    if ok:
        check_config(Platform.parse(entry), config)
    else:
        with pytest.raises(IndexRefused) as exc:
            check_config(Platform.parse(entry), json.dumps(config))
        assert exc.value.kinds == {"config-mismatch"} and entry in str(exc.value)


def test_check_pull_path():
    check_pull_path(DOCKER_MANIFEST_LIST, [DOCKER_MANIFEST_LIST], [OCI_INDEX])
    check_pull_path(OCI_INDEX)  # nothing known about the path: nothing to refuse
    with pytest.raises(IndexRefused, match="Docker manifest list"):
        check_pull_path(OCI_INDEX, [DOCKER_MANIFEST_LIST], [OCI_INDEX])
    with pytest.raises(IndexRefused, match="does not serve"):
        check_pull_path(OCI_INDEX, [], [OCI_INDEX])


def test_plan_device_legacy_engine_takes_first_arm_entry():
    # A Pi 4 with a 32-bit Docker 20.10 engine reports linux/arm/v8.
    entries = [_entry("linux/arm/v6", 0), _entry("linux/arm/v7", 1), _entry("linux/arm64", 2)]
    host = Platform.parse("linux/arm/v8")
    assert _choose(host, entries) == 1
    assert _choose(host, entries, legacy=True) == 0
    assert _choose(Platform.parse("linux/arm64"), entries) == 2
    with pytest.raises(NoMatchingEntry, match="linux/386"):
        _choose(Platform.parse("linux/386"), entries)
