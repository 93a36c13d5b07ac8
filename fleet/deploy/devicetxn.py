"""The swap a device finishes by itself: the transaction runs ON the device, detached from
the SSH session, so a dead controller or a dropped link never strands it.

Mechanism (the reasons are in docs/transaction.md):

* **One transaction per app at a time**: a lock directory ``STATE/NAME/lock`` made with
  ``mkdir`` (atomic on every POSIX filesystem, as Kamal's deploy lock) holds ``info``: the
  deployment id, the pid of the process holding it, the boot id and the time it was taken.
  A lock whose holder is gone (pid dead, or another boot) or that was never handed to a
  transaction within :data:`LOCK_GRACE` seconds is stale and is recovered.
* **The transaction** is a POSIX sh script (:func:`transaction_script`) written to
  ``STATE/NAME/txn.sh`` and started with ``setsid`` (it ignores SIGHUP and never writes to
  the SSH channel), which swaps, health-checks and commits or rolls back with the device's
  own ``docker`` CLI. Its steps are the same op lists as :mod:`fleet.deploy.txn`,
  rendered to sh (:func:`render_ops`), so the guards that make a rollback safe from any
  point are the same. Engine calls wait out an engine that is restarting.
* **Records**: ``STATE/NAME/status`` (the phase now), ``outcome`` (deployment, outcome,
  detail, time; written once at the end), ``collected`` (the last outcome a controller
  read), and ``audit.log``, one line per transaction (Kamal's ``audit``).
* **The controller** starts it and follows its status on the same channel
  (:data:`LAUNCH`); if the channel dies, it reconnects and collects the outcome
  (:data:`COLLECT`), waiting at most the health timeout plus :data:`MARGIN`.

``STATE`` is ``${FLEET_STATE_DIR:-$HOME/.fleet}`` for the login user (mode 0700).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from fleet.deploy.txn import Members, Op, commit_ops, members, rollback_ops, swap_ops
from fleet.labels import STATE_DIR
from fleet.playbook import HealthSpec

__all__ = ["LOCK_GRACE", "MARGIN", "STATE_DIR", "COMMON", "LOCK", "LAUNCH", "COLLECT", "UNLOCK", "RECOVER",
           "render_ops", "transaction_script", "settle_seconds", "Outcome", "parse_fields", "AppRecord",
           "parse_app_records"]

#: Seconds a lock may stay without a live transaction before it counts as stale (the
#: controller takes it, clears leftovers and creates NAME.new - engine calls of a few
#: seconds - then hands it to the transaction).
LOCK_GRACE = 60
#: Seconds beyond the health timeout a transaction may take: stopping the old container
#: (its stop timeout), renames, starts, and waiting out an engine restart.
MARGIN = 150

# Functions every device-side script starts with. $1 app folder, $2 deployment, $3 become.
# dk: docker, waiting up to 120 s while the engine does not answer (restarting); prints the
# engine's message on stderr otherwise. st NAME: "missing", "error" or "RUNNING DEPLOYMENT".
COMMON = r"""
set -u
umask 077
d=$1 D=$2
if [ "$3" = 1 ]; then DK="sudo -n docker"; else DK=docker; fi
now() { date +%s; }
dk() {
  n=0
  printf . >> "$d/ndk"
  while :; do
    o=$($DK "$@" 2>&1) && { [ -z "$o" ] || printf '%s\n' "$o"; return 0; }
    case $o in
      *"Cannot connect to the Docker daemon"*|*"Is the docker daemon running"*|*"error during connect"*)
        n=$((n + 1)); [ $n -lt 60 ] && { sleep 2; continue; };;
    esac
    printf '%s\n' "$o" >&2; return 1
  done
}
st() {
  o=$(dk container inspect -f '{{.State.Running}} {{index .Config.Labels "io.fleet.deployment"}}' "$1" 2>&1) \
    && { printf '%s\n' "$o"; return; }
  case $o in *"No such container"*|*"No such object"*) echo missing;; *) echo error;; esac
}
boot() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }
put() { printf '%s\n' "$2" > "$d/$1.tmp" && mv -f "$d/$1.tmp" "$d/$1"; }
field() { sed -n "s/^$1=//p" "$2" 2>/dev/null | head -n 1; }
"""

# Take the app's lock for deployment $2 (no process holds it yet: pid=-). Prints one line:
# "LOCKED <holder> <age s>" (a live transaction or a fresh lock), "STALE <holder>" (taken over
# after a dead one), or "OK"; then "OUTCOME ..." when a finished transaction's outcome was
# never collected.
LOCK = COMMON + r"""
mkdir -p "$d" || exit 90
info() { printf 'deployment=%s\npid=%s\nboot=%s\nsince=%s\n' "$1" "$2" "$(boot)" "$(now)"; }
if mkdir "$d/lock" 2>/dev/null; then
  info "$D" - > "$d/lock/info"; echo OK
else
  h=$(field deployment "$d/lock/info"); p=$(field pid "$d/lock/info"); b=$(field boot "$d/lock/info")
  s=$(field since "$d/lock/info"); age=$(( $(now) - ${s:-0} ))
  alive=0
  if [ "$b" = "$(boot)" ]; then
    if [ -n "$p" ] && [ "$p" != - ]; then kill -0 "$p" 2>/dev/null && alive=1
    elif [ $age -lt $4 ]; then alive=1; fi
  fi
  if [ $alive = 1 ]; then echo "LOCKED ${h:-?} $age"; exit 0; fi
  rm -rf "$d/lock" && mkdir "$d/lock" || { echo "LOCKED ${h:-?} $age"; exit 0; }
  info "$D" - > "$d/lock/info"; echo "STALE ${h:-?} $age"
fi
if [ -f "$d/outcome" ]; then
  o=$(field deployment "$d/outcome")
  [ "$o" = "$(cat "$d/collected" 2>/dev/null)" ] || printf 'OUTCOME %s\n' "$(tr '\n' ' ' < "$d/outcome")"
fi
"""

# Release the lock of deployment $2 (the controller stops before handing it over).
UNLOCK = COMMON + r"""
[ "$(field deployment "$d/lock/info")" = "$D" ] && rm -rf "$d/lock"
:
"""

# Write the transaction (stdin) and start it detached, then follow its status until its
# outcome: "STARTED pid", "STATUS phase" lines, then "OUTCOME deployment=... outcome=...".
# $4: seconds to follow at most (then "RUNNING": the device goes on by itself). It does
# not mark the outcome collected: this process may outlive a controller that never read
# what it printed (a cut link); the controller marks it (RECOVER) once it has it.
LAUNCH = COMMON + r"""
[ "$(field deployment "$d/lock/info")" = "$D" ] || { echo "NOLOCK"; exit 91; }
cat > "$d/txn.sh" || exit 92
rm -f "$d/status"
if command -v setsid >/dev/null 2>&1; then
  setsid sh "$d/txn.sh" "$d" "$D" "$3" </dev/null >>"$d/txn.log" 2>&1 &
else
  (trap '' HUP; exec sh "$d/txn.sh" "$d" "$D" "$3") </dev/null >>"$d/txn.log" 2>&1 &
fi
pid=$!
echo "STARTED $pid"
end=$(( $(now) + $4 )) last=
while :; do
  if [ -f "$d/outcome" ] && [ "$(field deployment "$d/outcome")" = "$D" ]; then
    printf 'OUTCOME %s\n' "$(tr '\n' ' ' < "$d/outcome")"; exit 0
  fi
  s=$(cat "$d/status" 2>/dev/null)
  [ "$s" = "$last" ] || { echo "STATUS $s"; last=$s; }
  kill -0 $pid 2>/dev/null || { sleep 1; [ -f "$d/outcome" ] && continue; echo "DIED"; exit 93; }
  [ $(now) -ge $end ] && { echo RUNNING; exit 0; }
  sleep 1
done
"""

# Wait up to $4 s for deployment $2's outcome; print it ("OUTCOME ..."; the controller marks
# it collected once received), or "RUNNING" (still going), or "NONE" (no transaction of that
# deployment ran here).
COLLECT = COMMON + r"""
end=$(( $(now) + $4 ))
while :; do
  if [ -f "$d/outcome" ] && [ "$(field deployment "$d/outcome")" = "$D" ]; then
    printf 'OUTCOME %s\n' "$(tr '\n' ' ' < "$d/outcome")"; exit 0
  fi
  [ "$(field deployment "$d/lock/info" 2>/dev/null)" = "$D" ] || { echo NONE; exit 0; }
  [ $(now) -ge $end ] && { echo RUNNING; exit 0; }
  sleep 1
done
"""

# Mark the outcome in the folder as collected (a deploy reported it as found).
RECOVER = COMMON + r"""
[ -f "$d/outcome" ] && field deployment "$d/outcome" > "$d/collected"
:
"""


def _q(text: str) -> str:
    return shlex.quote(text)


def render_ops(ops: Sequence[Op], on_error: str) -> str:
    """Each :class:`fleet.deploy.txn.Op` as sh with the same guards (the target exists, and
    ``if_exists``/``if_missing``/``if_running``/``if_stopped``/``if_deployment``/
    ``unless_deployment``); an engine that cannot say whether a guard holds counts as an
    error. ``on_error``: sh run after a failing op (``return 1``, or ``ERR=1`` to go on)."""
    out = []
    for op in ops:
        t = _q(op.target)
        conds = ['[ "$s" != missing ]']
        pre = [f"s=$(st {t}); set -- $s; [ \"$s\" = error ] && {{ note {_q('cannot inspect ' + op.target)}; {on_error}; }}"]
        if op.if_exists is not None:
            pre.append(f"x=$(st {_q(op.if_exists)})")
            conds.append('[ "$x" != missing ]')
        if op.if_missing is not None:
            pre.append(f"y=$(st {_q(op.if_missing)})")
            conds.append('[ "$y" = missing ]')
        if op.if_running:
            conds.append('[ "$1" = true ]')
        if op.if_stopped:
            conds.append('[ "$1" = false ]')
        if op.if_deployment is not None:
            conds.append(f'[ "${{2-}}" = {_q(op.if_deployment)} ]')
        if op.unless_deployment is not None:
            conds.append(f'[ "${{2-}}" != {_q(op.unless_deployment)} ]')
        if op.verb == "await-healthy":
            out += pre
            out.append(f"if {' && '.join(conds)}; then await_healthy {t} || {{ {on_error}; }}; "
                       f"rec {_q('healthy ' + op.target)}; fi")
            continue
        if op.verb == "rename":
            assert op.to is not None
            cmd, desc = f"rename {t} {_q(op.to)}", f"{op.target} -> {op.to}"
        elif op.verb == "stop":
            cmd, desc = f"stop -t {int(op.timeout)} {t}", f"stop {op.target}"
        elif op.verb in ("start", "remove"):
            cmd, desc = f"{'rm -f' if op.verb == 'remove' else 'start'} {t}", f"{op.verb} {op.target}"
        else:  # pragma: no cover - txn builds only these
            raise ValueError(op.verb)
        out += pre
        out.append(f"if {' && '.join(conds)}; then dk {cmd} >/dev/null || {{ note {_q(desc + ' failed')}; {on_error}; }}; "
                   f"rec {_q(desc)}; fi")
    return "\n".join(out) + "\n:"


def settle_seconds(health: HealthSpec, stop_timeout: int) -> int:
    """Longest a transaction may take, in seconds: the health timeout, the old container's
    stop, and :data:`MARGIN`."""
    return int(math.ceil(health.timeout)) + 2 * int(stop_timeout) + MARGIN


# Health of the stack: every member ($MEMBERS, in start order) stays running without a
# restart (its StartedAt and RestartCount as they were when the check began), a member
# with a healthcheck ($CHECKED) must report healthy, none may report unhealthy; then the
# playbook's command (in the first member) and URL (fetched on the device) must pass and
# the stack must have run RUNNING seconds. await_healthy: one member, before the next
# starts (depends_on: condition: service_healthy).
_HEALTH = r"""
state() { dk container inspect -f '{{.State.Running}} {{.State.Restarting}} {{.State.StartedAt}} {{.RestartCount}} {{.State.ExitCode}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1"; }
await_healthy() {
  end=$(( $(now) + TIMEOUT ))
  while :; do
    cur=$(state "$1") || return 1
    set -- "$1" $cur
    case "$8" in healthy) return 0;; unhealthy) note "$1 reports unhealthy"; return 1;; esac
    [ "$2" != true ] && { note "$1 stopped: $7 (exit code $6)"; return 1; }
    [ $(now) -ge $end ] && { note "$1 not healthy after TIMEOUT s"; return 1; }
    sleep 1
  done
}
health() {
  start=$(now); deadline=$((start + TIMEOUT))
  firsts=
  for m in $MEMBERS; do
    f=$(dk container inspect -f '{{.State.StartedAt}}/{{.RestartCount}}' "$m") || { DETAIL="$m disappeared"; return 1; }
    firsts="$firsts $m=$f"
  done
  cok=$CMD_OK hok=$HTTP_OK last="not checked yet"
  while :; do
    waiting=
    for m in $MEMBERS; do
      cur=$(state "$m") || { DETAIL="$m disappeared"; return 1; }
      set -- $cur
      case "$firsts " in *" $m=$3/$4 "*) ;; *) [ "$1" = true ] && DETAIL="$m restarted within $(( $(now) - start )) s" \
        || DETAIL="$m stopped within $(( $(now) - start )) s: $6 (exit code $5)"; return 1;; esac
      if [ "$1" != true ] || [ "$2" = true ]; then
        DETAIL="$m stopped within $(( $(now) - start )) s: $6 (exit code $5)"; return 1
      fi
      [ "$7" = unhealthy ] && { DETAIL="$m: its healthcheck reports unhealthy"; return 1; }
      case " $CHECKED " in *" $m "*) [ "$7" = healthy ] || waiting="$waiting $m";; esac
    done
    if [ $cok = 0 ]; then
      if dk exec "$FIRST" HEALTH_CMD >/dev/null 2>&1; then cok=1; else last="the health command failed"; fi
    fi
    if [ $hok = 0 ]; then
      if http_get; then hok=1; else last="HEALTH_URL_TEXT did not answer"; fi
    fi
    ran=$(( $(now) - start ))
    if [ -z "$waiting" ] && [ $cok = 1 ] && [ $hok = 1 ] && [ $ran -ge RUNNING ]; then
      DETAIL="running $ran s without a restart"; return 0
    fi
    if [ -n "$waiting" ]; then last="waiting for$waiting to report healthy"
    elif [ $cok = 1 ] && [ $hok = 1 ]; then last="running $ran of RUNNING s"; fi
    [ $(now) -ge $deadline ] && { DETAIL="not healthy after TIMEOUT s: $last"; return 1; }
    sleep INTERVAL
  done
}
http_get() {
  if command -v wget >/dev/null 2>&1; then
    if command -v timeout >/dev/null 2>&1; then timeout 10 wget -q -O /dev/null "$URL"; else wget -q -O /dev/null "$URL"; fi
  elif command -v curl >/dev/null 2>&1; then curl -fsS -m 10 -o /dev/null "$URL"
  else return 1; fi
}
"""

_MAIN = r"""
trap '' HUP PIPE
echo "deployment=$D" > "$d/lock/info.new" && printf 'pid=%s\nboot=%s\nsince=%s\n' $$ "$(boot)" "$(now)" >> "$d/lock/info.new" \
  && mv -f "$d/lock/info.new" "$d/lock/info"
DETAIL= NOTES= ERR=0
note() { NOTES="$NOTES${NOTES:+; }$1"; }
rec() { printf '%s %s\n' "$(now)" "$1" >> "$d/steps"; }
phase() { put status "$1"; }
: > "$d/steps"; : > "$d/ndk"
prev=$(st "$FIRST"); set -- $prev; FROM=${2:--}
phase swap
if swap; then
  phase health
  if health; then
    phase commit; ERR=0; commit; OUTCOME=committed
  else
    phase rollback; ERR=0; rollback; OUTCOME=rolled-back
  fi
else
  DETAIL="swap failed: $NOTES"; phase rollback; ERR=0; rollback; OUTCOME=rolled-back
fi
if [ $OUTCOME = rolled-back ]; then
  for m in $MEMBERS; do
    s=$(st "$m"); set -- $s
    [ "$1" = true ] && [ "${2-}" != "$D" ] || OUTCOME=failed
  done
fi
[ -n "$NOTES" ] && [ "$DETAIL" = "${DETAIL#*$NOTES}" ] && DETAIL="$DETAIL; $NOTES"
DETAIL=$(printf '%s' "$DETAIL" | tr '\n\r' '  ')
NDK=$(cat "$d/ndk" 2>/dev/null)
printf 'deployment=%s\noutcome=%s\nfrom=%s\nfinished=%s\ncalls=%s\ndetail=%s\n' "$D" $OUTCOME "$FROM" "$(now)" \
  "${#NDK}" "$DETAIL" > "$d/outcome.tmp"
mv -f "$d/outcome.tmp" "$d/outcome"
printf '%s deployment=%s from=%s to=%s outcome=%s detail=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$D" "$FROM" "$D" \
  $OUTCOME "$DETAIL" >> "$d/audit.log"
phase done
rm -rf "$d/lock"
"""


def transaction_script(stack: Members, deployment: str, health: HealthSpec, stop_timeout: int = 10,
                       checked: Sequence[str] = ()) -> str:
    """The device-side transaction of ``deployment`` for a stack (POSIX sh; arguments
    ``$1`` app folder, ``$2`` deployment, ``$3`` become): swap every member (a container
    name, or a :class:`fleet.deploy.txn.Member`; in start order), health-check them
    together (``checked``: members with a healthcheck that must report healthy), commit or
    roll back all of them, record the outcome, release the lock. Every value from the
    playbook is quoted with :func:`shlex.quote`."""
    ms = members(stack, stop_timeout)
    names = [m.name for m in ms]
    health_cmd = " ".join(_q(a) for a in health.command) if health.command else ""
    body = _HEALTH
    body = body.replace("TIMEOUT", str(int(math.ceil(health.timeout))))
    body = body.replace("RUNNING", str(int(math.ceil(health.running))))
    body = body.replace("INTERVAL", str(max(1, int(round(health.interval)))))
    body = body.replace("HEALTH_CMD", health_cmd or "true")
    body = body.replace("HEALTH_URL_TEXT", re.sub(r"[\"$`\\]", "", health.http or ""))
    return "\n".join([
        COMMON,
        f"MEMBERS={_q(' '.join(names))} FIRST={_q(names[0])} CHECKED={_q(' '.join(c for c in checked if c in names))}",
        f"URL={_q(health.http or '')} CMD_OK={0 if health.command else 1} HTTP_OK={0 if health.http else 1}",
        "swap() {", render_ops(swap_ops(ms), "return 1"), "}",
        "commit() {", render_ops(commit_ops(ms), "ERR=1"), "}",
        "rollback() {", render_ops(rollback_ops(ms, deployment), "ERR=1"), "}",
        body,
        _MAIN,
    ])


def parse_fields(text: str) -> dict[str, str]:
    """``"deployment=D outcome=committed from=X finished=T detail=..."`` (one line, the
    outcome file with its newlines turned into spaces; ``detail`` runs to the end) as a
    dict."""
    fields: dict[str, str] = {}
    rest = text.strip()
    for key in ("deployment", "outcome", "from", "finished", "calls"):
        if rest.startswith(key + "="):
            value, _, rest = rest[len(key) + 1:].partition(" ")
            fields[key] = value
            rest = rest.lstrip()
    if rest.startswith("detail="):
        fields["detail"] = rest[len("detail="):].strip()
    return fields


@dataclass(frozen=True)
class Outcome:
    """A transaction's recorded end: ``deployment``, ``outcome`` (committed, rolled-back,
    failed), ``previous`` (the deployment that ran before), ``finished`` (epoch s),
    ``detail``, ``docker_calls`` (docker CLI processes the transaction started)."""

    deployment: str
    outcome: str
    previous: str
    finished: int
    detail: str
    docker_calls: int = 0

    @classmethod
    def parse(cls, text: str) -> "Outcome":
        f = parse_fields(text)
        calls = f.get("calls", "0")
        return cls(f.get("deployment", ""), f.get("outcome", ""), f.get("from", "-"),
                   int(f.get("finished") or 0), f.get("detail", ""), int(calls) if calls.isdigit() else 0)


@dataclass(frozen=True)
class AppRecord:
    """What the probe read of one app's transaction records on a device (the ``fleet_apps``
    fact): ``lock`` (the deployment holding the app's lock, or None), ``last`` (the
    deployment of the last recorded outcome, or None) and its ``outcome``, ``collected``
    (the last outcome a controller read)."""

    name: str
    lock: str | None
    last: str | None
    outcome: str | None
    collected: str | None

    @property
    def uncollected(self) -> bool:
        """A transaction ended while no controller followed it, and none read it since."""
        return self.last is not None and self.last != self.collected

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "lock": self.lock, "last": self.last, "outcome": self.outcome,
                "collected": self.collected}

    @classmethod
    def from_dict(cls, data: Any) -> "AppRecord":
        """From :meth:`to_dict`'s output; ValueError when it is not one."""
        keys = ("name", "lock", "last", "outcome", "collected")
        if not isinstance(data, dict) or set(data) != set(keys) or not isinstance(data["name"], str) \
                or not all(data[k] is None or isinstance(data[k], str) for k in keys):
            raise ValueError(f"app record: not an app record: {str(data)[:200]}")
        return cls(*(data[k] for k in keys))


def parse_app_records(text: str | None) -> dict[str, AppRecord]:
    """The ``fleet_apps`` fact (``NAME lock=D|- outcome=D OUTCOME|- collected=D|-`` lines)
    by app name; malformed lines are skipped."""
    records: dict[str, AppRecord] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(" lock=")
        lock, _, rest = rest.partition(" outcome=")
        outcome, _, collected = rest.partition(" collected=")
        if not name or not collected:
            continue
        last, _, how = outcome.partition(" ")

        def opt(v: str) -> str | None:
            return None if v in ("", "-") else v

        records[name] = AppRecord(name, opt(lock), opt(last), opt(how), opt(collected.strip()))
    return records
