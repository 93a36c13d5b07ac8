"""Commands, the probe and the device transaction's follower work on descriptors above
1023, against a real sshd (tests/sshd.py).

A controller holds one SSH session per device for the whole run, so at a few hundred
devices its sockets and channel pipes get descriptor numbers above FD_SETSIZE (1024),
which ``select.select`` refuses ("filedescriptor out of range in select()"): a local
probe of 1000 devices lost 28-34 of them that way (bench/RESULTS.md, "Site workers").
Here the test process first holds 1100 descriptors open, so every descriptor the session
and its channels get is above 1024.
"""

from __future__ import annotations

import os
import resource
import uuid

import pytest

from fleet.deploy.remote import _stream
from fleet.engine.probe import gather_with_api
from fleet.ssh import SSHSettings, Target, connect

FILLER = 1100


@pytest.fixture
def high_fds():
    """Raise the soft RLIMIT_NOFILE if needed and hold ``FILLER`` descriptors open, so
    that the next ones the process gets are numbered above 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FILLER + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        assert hard == resource.RLIM_INFINITY or hard >= want, f"RLIMIT_NOFILE hard limit {hard} < {want}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(FILLER)]
    try:
        assert max(held) > 1024
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def session(sshd, tmp_path, high_fds):
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line + "\n")
    t = Target(name="dev", hostname=sshd.address, port=sshd.port, user=sshd.user,
               key_files=(sshd.user_key_path,), known_hosts_files=(kh,))
    s = connect(t, SSHSettings(retries=1, command_timeout=60))
    try:
        assert s.transport.sock.fileno() > 1024
        yield s
    finally:
        s.close()


def test_command_on_high_descriptors(session):
    r = session.run("echo out; echo err >&2; exit 3")
    assert (r.exit_status, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    # stdin sent while the output is read: the loop's short waits for window space
    data = os.urandom(300_000).hex().encode()
    r = session.run("cat; echo done >&2", stdin=data)
    assert r.exit_status == 0 and r.stdout == data and r.stderr == b"done\n"
    chan = session.transport.open_session()
    try:
        assert chan.fileno() > 1024  # the pipe the waits poll is above FD_SETSIZE too
    finally:
        chan.close()


def test_probe_on_high_descriptors(session):
    found = gather_with_api(session, False)
    assert found.facts["uname_s"] == "Linux" and found.facts["uname_m"] == os.uname().machine
    if found.engine is not None:
        found.engine.close()


def test_transaction_follower_on_high_descriptors(session):
    """The launcher's output is followed line by line as it arrives (deploy's
    :meth:`fleet.deploy.remote.TxnClient.launch`)."""
    lines: list[str] = []
    token = uuid.uuid4().hex
    status = _stream(session, "while read -r l; do echo \"STATUS $l\"; sleep 0.2; done; exit 4",
                     f"swap\nhealth\n{token}\n".encode(), 30, lines.append)
    assert status == 4 and lines == ["STATUS swap", "STATUS health", f"STATUS {token}"]
