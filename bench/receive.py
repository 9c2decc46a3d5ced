"""How fast does a server receive mail, and what does recording every byte cost?

Each receiver runs in a process of its own, started fresh for every round, and
takes the same load from the same client:

* ``plain aiosmtpd``: aiosmtpd's own ``Sink`` handler behind a stock threaded
  Controller (the baseline);
* ``lab recording``: the lab's :class:`~smtplab.smtp.session.RecordingSMTP` with the
  same ``Sink`` handler: what the lab's session adds to aiosmtpd (recording
  both directions into the journal, transcripts kept; policy, enhanced codes,
  fault hooks) and what it does more cheaply (paths read by RFC 5321's own
  grammar instead of the RFC 5322 header parser; a session built without
  reading every attribute of the class, see ``server.aiosmtpd_hooks``);
* ``lab mx``: the lab's full MX role (policy, trace headers, Maildir with an
  fsync of the message and of its directory before every 250);
* ``smtp-sink``: Postfix's test server, in C (when Postfix is installed);
* ``maildev``: MailDev, the Node.js development mail server, keeping messages
  in memory (when ``bench/maildev`` holds an ``npm install maildev``; web UI
  off). Its SMTP library (nodemailer's smtp-server) waits 100 ms before it
  greets each new connection, to catch clients that talk too soon, so with one
  message per connection it cannot pass ``sessions / 0.1`` messages per second.
  It therefore sends fewer messages in that profile (``--maildev-messages``; a
  rate does not depend on the count), and the ``reused`` profile shows what it
  does once connected.

The client is Postfix's ``smtp-source`` when installed (``--sessions``
parallel sessions, 300-byte messages), otherwise a small threaded smtplib
client. Two load profiles: ``per-connection`` (one message per connection, the
default of smtp-source) and ``reused`` (``smtp-source -d``: each session sends
all its messages over one connection). Rounds alternate between receivers so
that machine noise hits them alike; the tables report medians, the median of
the per-round ratios to ``plain`` and to MailDev, and each receiver's peak
memory (its process's ``VmHWM``, median over rounds).
Targets: ``lab recording`` keeps at least 0.9 of ``plain`` and is at least as
fast as MailDev.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import machine, peak_kib  # bench/ is not a package: found through sys.path

from smtplab.world import LOOPBACK

SENDER, RECIPIENT = "alice@example.com", "bob@example.org"
HOST = "mx1.example.org"
HERE = Path(__file__).resolve().parent
MAILDEV_DIR = HERE / "maildev"
PYTHON_RECEIVERS = ("plain aiosmtpd", "lab recording", "lab mx")
START_TIMEOUT = 30.0


# -- the receivers ------------------------------------------------------------------------------
def serve(kind: str, folder: str) -> None:
    """Run one Python receiver until stdin closes (the child side of :func:`python_receiver`)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    from smtplab.mailstore.maildir import Maildir
    from smtplab.protocol.clock import LabClock
    from smtplab.record.recordings import Recordings
    from smtplab.roles.handlers import MailboxHandler
    from smtplab.smtp.controller import LabController

    if kind == "plain aiosmtpd":
        controller: Controller = Controller(
            Sink(), hostname=LOOPBACK, port=free_port(), server_hostname=HOST
        )
    elif kind == "lab recording":
        controller = LabController(Sink(), host_name=HOST, journal=Recordings())
    else:
        mailbox = Maildir(Path(folder) / RECIPIENT)
        handler = MailboxHandler(HOST, {"example.org"}, {RECIPIENT: mailbox}, LabClock())
        controller = LabController(handler, host_name=HOST, journal=Recordings())
    controller.start()
    print(json.dumps({"port": int(controller.port)}), flush=True)
    sys.stdin.readline()  # until the parent has read our peak memory and says stop
    controller.stop()


class Receiver:
    """A receiver process: its port, its pid (whose memory counts) and how to stop it."""

    def __init__(self, process: subprocess.Popen[str], port: int, pid: int | None = None):
        self.process = process
        self.port = port
        self.pid = pid or process.pid

    def peak_kib(self) -> int | None:
        return peak_kib(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()  # a Python receiver stops on EOF
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def python_receiver(kind: str, folder: Path) -> Iterator[Receiver]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--folder", str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    receiver = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{kind} receiver did not start")
        receiver = Receiver(process, json.loads(line)["port"])
        yield receiver
    finally:
        (receiver or Receiver(process, 0)).stop()


@contextlib.contextmanager
def external_receiver(command: list[str], port: int) -> Iterator[Receiver]:
    """Run a receiver that is a program of its own; ready once it greets on ``port``."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    receiver = Receiver(process, port)
    try:
        wait_for_greeting(port, process)
        yield receiver
    finally:
        receiver.stop()


def smtp_sink_receiver() -> contextlib.AbstractContextManager[Receiver]:
    port = free_port()
    command = [shutil.which("smtp-sink") or "/usr/sbin/smtp-sink", "-4", "-h", HOST]
    if os.geteuid() == 0:
        command += ["-u", "postfix"]  # required as root: it drops privileges
    return external_receiver([*command, f"{LOOPBACK}:{port}", "1000"], port)


def maildev_script() -> Path | None:
    script = MAILDEV_DIR / "node_modules" / "maildev" / "dist" / "bin" / "maildev.js"
    return script if script.exists() and shutil.which("node") else None


def maildev_version() -> str:
    try:
        package = MAILDEV_DIR / "node_modules" / "maildev" / "package.json"
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def maildev_receiver() -> contextlib.AbstractContextManager[Receiver]:
    script = maildev_script()
    assert script is not None
    port = free_port()
    return external_receiver(
        [
            "node",
            str(script),
            *("--smtp", str(port), "--ip", LOOPBACK),
            *("--disable-web", "--web-ip", LOOPBACK, "--silent"),
        ],
        port,
    )


def wait_for_greeting(port: int, process: subprocess.Popen[str]) -> float:
    """Until the server on ``port`` greets; returns how long the last greeting took."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        began = time.monotonic()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                if sock.recv(512).startswith(b"220"):
                    waited = time.monotonic() - began
                    sock.sendall(b"QUIT\r\n")
                    return waited
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no greeting on port {port}")


def greeting_delay(start: Callable[[], contextlib.AbstractContextManager[Receiver]]) -> float:
    """How long a new connection waits for the greeting (median of three)."""
    with start() as receiver:
        waits = [wait_for_greeting(receiver.port, receiver.process) for _ in range(3)]
    return statistics.median(waits)


# -- the clients --------------------------------------------------------------------------------
Client = Callable[[int, int, int, bool], None]  # (port, messages, sessions, reuse)


def smtp_source_client(port: int, messages: int, sessions: int, reuse: bool) -> None:
    subprocess.run(
        [
            *("smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "300"),
            *(["-d"] if reuse else []),  # -d: all of a session's messages on one connection
            *("-f", SENDER, "-t", RECIPIENT, "-M", "client.example.com", f"{LOOPBACK}:{port}"),
        ],
        check=True,
        timeout=600,
    )


def python_client(port: int, messages: int, sessions: int, reuse: bool) -> None:
    body = b"Subject: bench\r\n\r\n" + b"x" * 280 + b"\r\n"

    def send(count: int) -> None:
        with smtplib.SMTP(LOOPBACK, port, local_hostname="client.example.com") as client:
            for _ in range(count):
                client.sendmail(SENDER, [RECIPIENT], body)

    shares = [len(range(i, messages, sessions)) for i in range(sessions)] if reuse else []
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(send, shares if reuse else [1] * messages))


def measure(
    start: Callable[[], contextlib.AbstractContextManager[Receiver]],
    client: Client,
    messages: int,
    sessions: int,
    reuse: bool,
) -> tuple[float, int | None]:
    """(messages per second, peak KiB) for one round against a freshly started receiver."""
    with start() as receiver:
        began = time.perf_counter()
        client(receiver.port, messages, sessions, reuse)
        rate = messages / (time.perf_counter() - began)
        return rate, receiver.peak_kib()


# -- main ---------------------------------------------------------------------------------------
PROFILES = {"per-connection": False, "reused": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--maildev-messages", type=int, default=400, help="per-connection only")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profiles", default="per-connection,reused")
    parser.add_argument("--receivers", help="comma-separated subset (default: all available)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.folder)
        return 0
    client: Client = smtp_source_client if shutil.which("smtp-source") else python_client
    folder = Path(tempfile.mkdtemp(prefix="smtplab-receive-"))
    receivers: dict[str, Callable[[], contextlib.AbstractContextManager[Receiver]]] = {
        kind: (lambda kind=kind: python_receiver(kind, folder)) for kind in PYTHON_RECEIVERS
    }
    if shutil.which("smtp-sink") or os.path.exists("/usr/sbin/smtp-sink"):
        receivers["smtp-sink"] = smtp_sink_receiver
    if maildev_script() is not None:
        receivers["maildev"] = maildev_receiver
    if args.receivers:
        wanted = [r.strip() for r in args.receivers.split(",")]
        receivers = {name: receivers[name] for name in wanted if name in receivers}
    results: dict[str, list[dict]] = {}
    try:
        for profile in [p.strip() for p in args.profiles.split(",") if p.strip()]:
            reuse = PROFILES[profile]
            rates: dict[str, list[float]] = {name: [] for name in receivers}
            peaks: dict[str, list[int]] = {name: [] for name in receivers}
            for round_no in range(args.rounds):
                for name, start in receivers.items():
                    count = args.maildev_messages if name == "maildev" and not reuse else None
                    count = count or args.messages
                    rate, peak = measure(start, client, count, args.sessions, reuse)
                    rates[name].append(rate)
                    if peak is not None:
                        peaks[name].append(peak)
                line = ", ".join(f"{name} {rs[-1]:.0f}" for name, rs in rates.items())
                print(f"{profile} round {round_no + 1}: {line} msg/s", flush=True)
            results[profile] = summarise(rates, peaks)
        greetings = {name: greeting_delay(start) for name, start in receivers.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for profile, rows in results.items():
        report(profile, rows, client.__name__, args)
    print(
        "wait for the greeting of a new connection: "
        + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in greetings.items())
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "client": client.__name__,
                    "messages": args.messages,
                    "maildev_messages": args.maildev_messages,
                    "sessions": args.sessions,
                    "rounds": args.rounds,
                    "profiles": results,
                    "greeting_ms": {n: s * 1000 for n, s in greetings.items()},
                    "maildev_version": maildev_version() if "maildev" in receivers else None,
                    "machine": machine(),
                },
                indent=1,
            )
        )
    return 0


def summarise(rates: dict[str, list[float]], peaks: dict[str, list[int]]) -> list[dict]:
    base = rates.get("plain aiosmtpd")
    sink = rates.get("smtp-sink")
    maildev = rates.get("maildev")
    rows = []
    for name, rs in rates.items():
        row: dict = {"receiver": name, "rate": statistics.median(rs), "rounds": rs}
        if base:
            row["ratio_plain"] = statistics.median(r / b for r, b in zip(rs, base, strict=True))
        if sink:
            row["ratio_sink"] = statistics.median(r / s for r, s in zip(rs, sink, strict=True))
        if maildev:
            row["ratio_maildev"] = statistics.median(
                r / m for r, m in zip(rs, maildev, strict=True)
            )
        if peaks[name]:
            row["peak_mib"] = statistics.median(peaks[name]) / 1024
        rows.append(row)
    return rows


def report(profile: str, rows: list[dict], client: str, args: argparse.Namespace) -> None:
    how = (
        "all of a session's messages on one connection"
        if PROFILES[profile]
        else (f"one message per connection (maildev: {args.maildev_messages} messages)")
    )
    print(
        f"\n{profile}: {client}, {args.messages} messages, {args.sessions} sessions, {how}; "
        f"{args.rounds} rounds (medians; ratios = medians of per-round ratios)"
    )
    print(
        f"{'receiver':<18}{'msg/s':>8}{'vs plain':>10}{'vs sink':>9}{'vs maildev':>12}"
        f"{'peak MiB':>10}"
    )
    for row in rows:
        plain, sink, maildev = (
            f"{row[key]:.2f}" if key in row else "-"
            for key in ("ratio_plain", "ratio_sink", "ratio_maildev")
        )
        peak = f"{row['peak_mib']:.0f}" if "peak_mib" in row else "-"
        print(
            f"{row['receiver']:<18}{row['rate']:>8.0f}{plain:>10}{sink:>9}{maildev:>12}{peak:>10}"
        )


def free_port() -> int:
    """aiosmtpd's stock Controller cannot bind port 0, so ask the OS for a free one."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
