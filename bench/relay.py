"""End-to-end relay throughput: the lab's submission queue versus Postfix (issue 3 item 11).

Each run measures messages per second through

    client  →  relay (accept, fsync to its queue, 250)  →  next hop

with Postfix's ``smtp-sink`` as the next hop for every relay, so only the relays
differ:

* ``lab``: a fresh :class:`~smtplab.Lab`. The load goes to its submission server
  ``smtp.example.com`` (the only lab role that relays; it requires STARTTLS and
  AUTH and has no switch to turn them off). example.org's MX is pointed at the
  sink (``add_external`` + an MX replace), so the lab's queue relays there.
* ``postfix``: a fresh :class:`~peers.postfix.PrivatePostfix` with ``relayhost`` set
  to the sink. By default its smtpd offers STARTTLS with a certificate of its
  own, so the client does the same TLS handshake against both relays; Postfix
  has no SASL backend here, so only the lab pays for AUTH (one exchange per
  connection). ``--postfix-tls off`` gives Postfix plain text.
* ``direct``: the same client straight into the sink, no relay, no TLS: the
  ceiling the client and the sink allow on this machine.

The client is the same for every relay: a separate Python process (so it does
not share the lab's GIL) with ``--sessions`` threads, each with one connection:
EHLO, STARTTLS, EHLO, AUTH (lab only), then its share of the messages, one
transaction after another, then QUIT. TLS and AUTH are paid once per
connection, not per message.

A run's time starts when the client starts and ends when the sink has counted
all ``--messages`` messages. Loss is checked exactly: every message carries a
unique ``X-Bench-Id`` and the sink's dump (``smtp-sink -D``) must hold each one
exactly once; the relay's queue must be empty afterwards. Rounds alternate
between relays; the table shows medians and the median of per-round ratios.
Target (issue 3): lab >= 0.75 of Postfix.

To show where the time goes, the table also gives CPU milliseconds per message:
the relay's (the lab's whole process, split by thread below the table; all of
Postfix's daemons) and the client's. For the lab it also counts, per message,
fsync calls, DNS questions and outgoing connections. Peak memory is the highest
memory sampled during a run: for the lab the resident set size of the whole
bench process (the lab runs inside it; the harness alone is the ``before``
figure), for Postfix the sum of its daemons' proportional set sizes (a page
shared by several daemons counts once). ``--json`` writes everything to a file. The
exit status is 1 if any message was lost or duplicated or a relay did not
drain in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # peers/: shared with tests

from measure import PeakSampler, machine, pss_kib, rss_kib  # bench/ is not a package: see sys.path
from peers.postfix import (
    LOOPBACK,
    PostfixUnavailable,
    PrivatePostfix,
    SmtpSink,
    free_port,
)

SENDER, RECIPIENT = "alice@example.com", "bob@example.org"
SINK_HOST = "sink.example.net"
MESSAGE_SIZE = 300
BENCH_CPU = "cpu:bench itself (not counted)"
_BENCH_ID = re.compile(rb"^X-Bench-Id: (\S+)", re.MULTILINE)


# -- the client (runs in its own process) ---------------------------------------------------
def message(tag: str, n: int, size: int) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: relay bench {n}\r\n"
        f"Message-ID: <{tag}.{n}@example.com>\r\nX-Bench-Id: {tag}-{n}\r\n\r\n"
    ).encode()
    return head + b"x" * max(size - len(head) - 2, 0) + b"\r\n"


def client_main(spec: dict[str, Any]) -> None:
    """Send ``spec["messages"]`` messages over ``spec["sessions"]`` connections; print JSON.

    Waits for a line on stdin before starting, so the parent can time the run
    without the interpreter's start-up.
    """
    context = None
    if spec["ca_file"]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(spec["ca_file"])
    sessions, total = spec["sessions"], spec["messages"]
    shares = [range(i, total, sessions) for i in range(sessions)]
    bodies = [message(spec["tag"], n, spec["size"]) for n in range(total)]
    accepted = [0] * sessions
    errors: list[str] = []

    def session(index: int) -> None:
        try:
            with smtplib.SMTP(
                LOOPBACK, spec["port"], local_hostname="client.example.com", timeout=60
            ) as client:
                client.ehlo()
                if context is not None:
                    client._host = spec["server_name"]  # type: ignore[attr-defined]  # the name TLS checks
                    client.starttls(context=context)
                    client.ehlo()
                if spec["login"]:
                    client.login(*spec["login"])
                for n in shares[index]:
                    try:
                        client.sendmail(SENDER, [RECIPIENT], bodies[n])
                        accepted[index] += 1
                    except smtplib.SMTPResponseException as error:
                        errors.append(f"{n}: {error.smtp_code} {error.smtp_error!r}")
                    except smtplib.SMTPRecipientsRefused as error:
                        errors.append(f"{n}: {error.recipients}")
        except (OSError, smtplib.SMTPException) as error:
            errors.append(f"session {index}: {type(error).__name__}: {error}")

    print("ready", flush=True)
    sys.stdin.readline()
    began, cpu = time.monotonic(), os.times()
    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended, cpu_end = time.monotonic(), os.times()
    print(
        json.dumps(
            {
                "accepted": sum(accepted),
                "errors": errors[:20],
                "n_errors": len(errors),
                "began": began,
                "ended": ended,
                "cpu": cpu_end.user + cpu_end.system - cpu.user - cpu.system,
            }
        ),
        flush=True,
    )


class Client:
    """The client process of one run: start it, then :meth:`go`, then :meth:`result`."""

    def __init__(self, spec: dict[str, Any]):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--client", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError("bench client did not start")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


# -- one run --------------------------------------------------------------------------------------
@dataclass
class Run:
    relay: str
    rate: float  # end-to-end msg/s: client start → sink counted all
    accept_rate: float  # msg/s the client got 250s at
    accepted: int
    delivered: int  # distinct X-Bench-Ids at the sink
    duplicates: int
    lost: int
    drained: bool  # the sink got them all and the relay's queue was empty by the deadline
    client_cpu: float = 0.0  # CPU seconds of the client process during the run
    peak_kib: int = 0  # highest total RSS of Target.pids() sampled during the run
    before_kib: int = 0  # their RSS just before the load started
    notes: dict[str, float] = field(default_factory=dict)  # Target.counters()


@dataclass
class Target:
    """Where a run's client connects and how, plus how to tell that the relay drained."""

    port: int
    server_name: str
    ca_file: str | None
    login: tuple[str, str] | None
    drained: Callable[[float], bool]
    begin: Callable[[], None] = lambda: None  # called just before the load starts
    counters: Callable[[], dict[str, float]] = dict  # what happened since begin()
    pids: Callable[[], list[int]] = list  # the relay's processes, whose memory counts
    pss: bool = False  # sum their proportional set sizes (shared pages once), not RSS


def run_once(relay: str, target: Target, sink: SmtpSink, args: argparse.Namespace, tag: str) -> Run:
    sink.reset_dump()
    spec = {
        "port": target.port,
        "server_name": target.server_name,
        "ca_file": target.ca_file,
        "login": target.login,
        "messages": args.messages,
        "sessions": args.sessions,
        "size": args.size,
        "tag": tag,
    }
    client = Client(spec)
    before = sum((pss_kib if target.pss else rss_kib)(pid) or 0 for pid in target.pids())
    with PeakSampler(target.pids, 0.1 if target.pss else 0.02, pss=target.pss) as memory:
        try:
            target.begin()
            began = time.monotonic()
            client.go()
            deadline = began + args.deadline
            arrived = sink.wait_count(args.messages, deadline)
            ended = time.monotonic()
            result = client.result(max(deadline - time.monotonic(), 1.0))
        finally:
            client.kill()
        drained = target.drained(deadline)
    # The counter moves at the final dot; the dump is written around then: wait for it too.
    seen: Counter[bytes] = Counter()
    while time.monotonic() < deadline + 5:
        seen = Counter(_BENCH_ID.findall(sink.dumped()))
        if len(seen) >= result["accepted"] or not arrived:
            break
        time.sleep(0.02)
    ours = {f"{tag}-{n}".encode() for n in range(args.messages)}
    delivered = sum(1 for key in seen if key in ours)
    if result["n_errors"]:
        examples = result["errors"][:3]
        print(f"  {relay}: {result['n_errors']} client errors, e.g. {examples}", file=sys.stderr)
    if not arrived or not drained:
        got = f"{sink.count} of {args.messages}"
        print(f"  {relay}: not drained by the deadline ({got} at the sink)", file=sys.stderr)
    return Run(
        relay=relay,
        rate=args.messages / (ended - began) if arrived else sink.count / (ended - began),
        accept_rate=result["accepted"] / max(result["ended"] - result["began"], 1e-9),
        accepted=result["accepted"],
        delivered=delivered,
        duplicates=sum(count - 1 for key, count in seen.items() if key in ours),
        lost=result["accepted"] - delivered,
        drained=arrived and drained,
        client_cpu=result["cpu"],
        peak_kib=memory.peak_kib,
        before_kib=before,
        notes=target.counters(),
    )


# -- the relays -----------------------------------------------------------------------------------
@contextlib.contextmanager
def lab_target(sink: SmtpSink, name: str) -> Iterator[Target]:
    from smtplab import Lab

    with Lab(name=name) as lab:
        if "example.net." not in lab.dns.zones():
            lab.dns.add_zone("example.net")  # add_external needs a zone for the sink's name
        lab.add_external(SINK_HOST, sink.port)
        lab.dns.replace("example.org", "MX", [f"10 {SINK_HOST}."])
        user = lab.world.user(SENDER)
        assert user is not None
        with _lab_counters(lab) as (begin, counters):
            yield Target(
                port=lab.server("smtp.example.com").port,
                server_name="smtp.example.com",
                ca_file=str(lab.ca.cert_path),
                login=(user.address, user.password),
                drained=lambda deadline: _settled(lab, deadline),
                begin=begin,
                counters=counters,
                pids=lambda: [os.getpid()],
            )


def _settled(lab: Any, deadline: float) -> bool:
    try:
        lab.settle(timeout=max(deadline - time.monotonic(), 0.1))
    except TimeoutError:
        return False
    return True


@contextlib.contextmanager
def _lab_counters(lab: Any) -> Iterator[tuple[Callable[[], None], Callable[[], dict[str, float]]]]:
    """Count what the lab does during a run: fsyncs, DNS questions, connections, CPU by thread.

    Yields ``(begin, counters)``. fsync and the resolver are wrapped (a few
    microseconds each); connections are counted by a journal listener; CPU comes
    from ``/proc/self/task/*/stat``, labelled by the lab's thread names.
    """
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    real_fsync, real_resolve = os.fsync, lab.resolver.resolve
    cpu_before: dict[int, float] = {}

    def fsync(fd: int) -> None:
        began = time.perf_counter()
        real_fsync(fd)
        with lock:
            counts["fsync"] += 1
            counts["fsync_s"] += time.perf_counter() - began

    def resolve(*a: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return real_resolve(*a, **kw)
        finally:
            with lock:
                counts["dns"] += 1
                counts["dns_s"] += time.perf_counter() - began

    def closed(log: Any) -> None:
        if log.view == "client":
            with lock:
                counts["out_conn"] += 1

    process_before = [0.0]

    def begin() -> None:
        with lock:
            counts.clear()
        cpu_before.clear()
        cpu_before.update(_thread_cpu())
        process_before[0] = _process_cpu()

    def counters() -> dict[str, float]:
        labels = _thread_labels(lab)
        found = dict(counts)
        for tid, seconds in _thread_cpu().items():
            key = "cpu:" + labels.get(tid, "other threads")
            found[key] = found.get(key, 0.0) + seconds - cpu_before.get(tid, 0.0)
        # Threads that ended during the run (spool writers stop when idle) are no longer
        # in /proc/self/task; the process's own total still counts them.
        live = sum(v for k, v in found.items() if k.startswith("cpu:"))
        ended = _process_cpu() - process_before[0] - live
        if ended > 0:
            found["cpu:threads that ended during the run (spool writers)"] = ended
        return found

    os.fsync = fsync  # type: ignore[assignment]
    lab.resolver.resolve = resolve
    lab.journal.listen(closed)
    try:
        yield begin, counters
    finally:
        os.fsync = real_fsync  # type: ignore[assignment]
        lab.resolver.resolve = real_resolve


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native id."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        found[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _thread_labels(lab: Any) -> dict[int, str]:
    labels = {}
    for thread in threading.enumerate():
        name = thread.name
        if name.startswith("asyncio_"):
            name = "to_thread pools"
        elif name.startswith("spool "):
            name = "spool writers (writes + fsync)"
        elif name == "MainThread" or "smtp-sink" in name:
            name = BENCH_CPU[4:]
        if thread.native_id is not None:
            labels[thread.native_id] = name
    for host, server in lab.servers.items():
        thread = getattr(server.controller, "_thread", None)  # aiosmtpd's loop thread
        if thread is not None and thread.native_id is not None:
            labels[thread.native_id] = f"server {host} (asyncio loop)"
    return labels


@contextlib.contextmanager
def postfix_target(sink: SmtpSink, folder: Path, tls: bool) -> Iterator[Target]:
    extra: dict[str, str] = {}
    ca_file = None
    if tls:
        import trustme

        ca = trustme.CA(organization_name="smtplab bench CA")
        chain = folder / "relay.pem"
        folder.mkdir(parents=True, exist_ok=True)
        ca.issue_cert("relay.example.net").private_key_and_cert_chain_pem.write_to_path(chain)
        chain.chmod(0o600)
        ca.cert_pem.write_to_path(folder / "ca.pem")
        ca_file = str(folder / "ca.pem")
        extra = {"smtpd_tls_security_level": "may", "smtpd_tls_chain_files": str(chain)}
    with PrivatePostfix(
        folder / "postfix",
        listen_port=free_port(),
        relay_to=sink.address,
        relay_domains=["example.org"],
        extra=extra,
    ) as postfix:
        cpu = [0.0]

        def begin() -> None:
            cpu[0] = postfix.cpu_seconds()

        yield Target(
            port=postfix.listen_port,
            server_name="relay.example.net",
            ca_file=ca_file,
            login=None,
            drained=postfix.wait_empty,
            begin=begin,
            counters=lambda: {"cpu:postfix (all daemons)": postfix.cpu_seconds() - cpu[0]},
            pids=postfix.pids,
            pss=True,
        )


@contextlib.contextmanager
def direct_target(sink: SmtpSink) -> Iterator[Target]:
    yield Target(
        port=sink.port,
        server_name=SINK_HOST,
        ca_file=None,
        login=None,
        drained=lambda deadline: True,
    )


# -- the table ------------------------------------------------------------------------------------
def summarise(runs: dict[str, list[Run]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per relay: medians over rounds (ratios: medians of per-round ratios)."""
    rows = []
    base = runs.get("postfix")
    for relay, rs in runs.items():
        row: dict[str, Any] = {
            "relay": relay,
            "rate": statistics.median(r.rate for r in rs),
            "accept_rate": statistics.median(r.accept_rate for r in rs),
            "cpu_ms": 0.0
            if relay == "direct"
            else statistics.median(
                sum(v for k, v in r.notes.items() if k.startswith("cpu:") and k != BENCH_CPU)
                / args.messages
                * 1e3
                for r in rs
            ),
            "client_cpu_ms": statistics.median(r.client_cpu / args.messages * 1e3 for r in rs),
            "lost": sum(r.lost for r in rs),
            "duplicates": sum(r.duplicates for r in rs),
            "drained": all(r.drained for r in rs),
            "rounds": [r.rate for r in rs],
        }
        if base:
            row["ratio_postfix"] = statistics.median(
                r.rate / b.rate for r, b in zip(rs, base, strict=True)
            )
        if relay != "direct":
            row["peak_mib"] = statistics.median(r.peak_kib for r in rs) / 1024
            row["before_mib"] = statistics.median(r.before_kib for r in rs) / 1024
        rows.append(row)
    return rows


def report(
    runs: dict[str, list[Run]], rows: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"client: python smtplib in its own process; {args.messages} messages, {args.sessions} "
        f"sessions (one connection each), {args.size} B; {args.rounds} rounds; next hop: "
        f"smtp-sink; postfix STARTTLS {args.postfix_tls}; lab STARTTLS+AUTH (always on); "
        f"{os.cpu_count()} CPUs, load average now {load}"
    )
    print(
        "medians; ratio = median of per-round ratios to postfix; accept = msg/s the client "
        "got 250s at;\ncpu = relay CPU ms per message (lab: whole process; postfix: all "
        "daemons); client = client CPU ms per message;\npeak = highest RSS sampled in a run "
        "(lab: RSS of the bench process it runs in, before = that process before the load;"
        " postfix: PSS summed over its daemons)"
    )
    print(
        f"{'relay':<9}{'msg/s':>7}{'ratio':>7}{'accept':>8}{'cpu':>7}{'client':>8}"
        f"{'lost':>6}{'dup':>5}{'peak MiB':>10}  msg/s per round"
    )
    for row in rows:
        ratio = f"{row['ratio_postfix']:.2f}" if "ratio_postfix" in row else "-"
        peak = f"{row['peak_mib']:.0f} ({row['before_mib']:.0f})" if "peak_mib" in row else "-"
        print(
            f"{row['relay']:<9}{row['rate']:>7.0f}{ratio:>7}{row['accept_rate']:>8.0f}"
            f"{row['cpu_ms']:>7.2f}{row['client_cpu_ms']:>8.2f}"
            f"{row['lost']:>6}{row['duplicates']:>5}{peak:>10}  "
            + " ".join(f"{rate:.0f}" for rate in row["rounds"])
        )
    if "lab" in runs:
        notes: Counter[str] = Counter()
        for r in runs["lab"]:
            notes.update(r.notes)
        n = sum(r.delivered for r in runs["lab"]) or 1
        print(
            f"lab, per message: {notes['fsync'] / n:.1f} fsync "
            f"({notes['fsync_s'] / n * 1e3:.2f} ms wall), "
            f"{notes['dns'] / n:.1f} DNS questions ({notes['dns_s'] / n * 1e3:.2f} ms wall), "
            f"{notes['out_conn'] / n:.2f} outgoing connections; CPU ms by thread:"
        )
        for key, seconds in notes.most_common():
            if key.startswith("cpu:") and seconds / n * 1e3 >= 0.005:
                print(f"  {seconds / n * 1e3:6.2f}  {key[4:]}")


def lab_notes(runs: dict[str, list[Run]]) -> dict[str, float]:
    """The lab's counters per delivered message (fsync, DNS, connections, CPU ms by thread)."""
    notes: Counter[str] = Counter()
    for r in runs.get("lab", []):
        notes.update(r.notes)
    n = sum(r.delivered for r in runs.get("lab", [])) or 1
    return {
        key: value / n * (1e3 if key.startswith("cpu:") or key.endswith("_s") else 1)
        for key, value in notes.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--sessions", type=int, default=8, help="client connections (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per relay (default 3)")
    parser.add_argument("--size", type=int, default=MESSAGE_SIZE, help="bytes (default 300)")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds per run to drain")
    parser.add_argument(
        "--relays", default="lab,postfix,direct", help="comma-separated, from lab, postfix, direct"
    )
    parser.add_argument("--postfix-tls", choices=("on", "off"), default="on")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(json.loads(args.client))
        return 0
    relays = [r.strip() for r in args.relays.split(",") if r.strip()]
    folder = Path(tempfile.mkdtemp(prefix="smtplab-relay-"))
    folder.chmod(0o755)  # Postfix's daemons and smtp-sink run as the postfix user
    runs: dict[str, list[Run]] = {relay: [] for relay in relays}
    try:
        with SmtpSink(folder / "sink") as sink:
            for round_no in range(args.rounds):
                for relay in relays:
                    tag = f"r{round_no}{relay}"
                    if relay == "lab":
                        target = lab_target(sink, f"bench-relay-{round_no}")
                    elif relay == "postfix":
                        tls = args.postfix_tls == "on"
                        target = postfix_target(sink, folder / f"pf{round_no}", tls)
                    else:
                        target = direct_target(sink)
                    with target as t:
                        runs[relay].append(run_once(relay, t, sink, args, tag))
                    rate = runs[relay][-1].rate
                    print(f"round {round_no + 1} {relay}: {rate:.0f} msg/s", flush=True)
    except PostfixUnavailable as error:
        print(f"cannot run: {error}", file=sys.stderr)
        return 2
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    rows = summarise(runs, args)
    report(runs, rows, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "messages": args.messages,
                    "sessions": args.sessions,
                    "rounds": args.rounds,
                    "size": args.size,
                    "postfix_tls": args.postfix_tls,
                    "rows": rows,
                    "lab_per_message": lab_notes(runs),
                    "machine": machine(),
                },
                indent=1,
            )
        )
    bad = sum(r.lost + r.duplicates + (not r.drained) for rs in runs.values() for r in rs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
