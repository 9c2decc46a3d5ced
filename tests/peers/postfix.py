"""A private, throwaway Postfix instance on 127.0.0.1, for benchmarks and interop tests.

Theory of operation
-------------------
Debian's ``postfix`` package can run any number of instances side by side: each
needs only its own configuration directory (``main.cf`` + ``master.cf``), queue
directory and data directory. :class:`PrivatePostfix` writes those into a folder,
runs ``postfix -c FOLDER/etc start`` (as root: the daemons then drop to
``mail_owner``), waits until its smtpd answers with a 220 greeting, and runs
``postfix -c FOLDER/etc stop`` on the way out, even after an exception, falling
back to ``abort`` and then SIGKILL of the master's process group.

The instance listens only on 127.0.0.1:``listen_port``, never resolves a name
through DNS, relays everything to ``relay_to`` (``relayhost``) when given, and
logs to ``FOLDER/maillog`` (Postfix's own postlogd), so it needs neither syslog
nor the system's ``/etc/postfix``. Chroot is off in ``master.cf`` so that the
daemons need no copies of ``/etc`` files inside the queue directory.

Every daemon runs as the ``postfix`` user with the queue directory as its
working directory, so that user must be able to reach ``FOLDER``: every
ancestor must be searchable by others (``pytest``'s ``tmp_path`` is not: it
sits under a 0700 directory). Without a folder, a fresh one under the system
temporary directory is made and removed at exit.

:class:`SmtpSink` runs Postfix's ``smtp-sink`` the same way (127.0.0.1 only,
stopped on exit), counting the messages it receives and keeping a dump of them.

Usage::

    with PrivatePostfix(None, listen_port=port, relay_to=("127.0.0.1", sink_port)) as pf:
        smtplib.SMTP("127.0.0.1", pf.listen_port).sendmail(...)
        pf.wait_empty(deadline)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from smtplab.world import LOOPBACK

HOSTNAME = "relay.example.net"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


class PostfixUnavailable(RuntimeError):
    """Postfix cannot run here (not installed, not root, no postfix user); says why."""


def postfix_binary() -> str:
    """The ``postfix`` command, or PostfixUnavailable explaining what is missing."""
    found = shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin:/usr/bin")
    if found is None:
        raise PostfixUnavailable("postfix is not installed (Debian: apt-get install postfix)")
    if os.geteuid() != 0:
        raise PostfixUnavailable("a private Postfix instance must be started as root")
    try:
        import grp
        import pwd

        pwd.getpwnam(MAIL_OWNER)
        grp.getgrnam(SETGID_GROUP)
    except KeyError as error:
        raise PostfixUnavailable(f"missing Postfix account: {error}") from None
    return found


def sbin(name: str) -> str:
    """A Postfix tool (``postqueue``, ``smtp-sink``...) by name, or PostfixUnavailable."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise PostfixUnavailable(f"{name} is not installed (Debian package postfix)")
    return found


# One line per main.cf setting: the value, and why this instance needs it.
def main_cf(
    folder: Path,
    *,
    relay_to: tuple[str, int] | None,
    relay_domains: Iterable[str],
    mynetworks: str,
    process_limit: int,
    extra: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    """The settings of ``main.cf`` as ``{name: (value, why)}``."""
    settings: dict[str, tuple[str, str]] = {
        "compatibility_level": ("3.6", "current defaults, no backwards-compatibility warnings"),
        "queue_directory": (str(folder / "spool"), "a private queue, not /var/spool/postfix"),
        "data_directory": (str(folder / "data"), "private master.lock, caches and PRNG state"),
        "mail_owner": (MAIL_OWNER, "daemons drop root to this account (Debian creates it)"),
        "setgid_group": (SETGID_GROUP, "group of the maildrop/public dirs (Debian creates it)"),
        "inet_interfaces": (LOOPBACK, "bind loopback only; nothing here may face a network"),
        "inet_protocols": ("ipv4", "the lab is IPv4 loopback only; no ::1 surprises"),
        "myhostname": (HOSTNAME, "fixed name for EHLO, Received: and the banner"),
        "mydomain": ("example.net", "otherwise derived from myhostname; set for clarity"),
        "myorigin": ("$myhostname", "bare local senders get a fixed domain"),
        "mydestination": ("", "nothing is delivered locally: every message is relayed"),
        "local_recipient_maps": ("", "no local users, so no passwd lookups"),
        "alias_maps": ("", "no /etc/aliases (and no 'hash:/etc/aliases' missing warning)"),
        "alias_database": ("", "no newaliases needed"),
        "relay_domains": (", ".join(relay_domains), "domains this relay accepts for (relay class)"),
        "mynetworks": (mynetworks, "clients trusted to relay without AUTH: loopback"),
        "smtpd_relay_restrictions": ("permit_mynetworks, reject", "never an open relay"),
        "smtpd_recipient_restrictions": ("", "no further recipient checks"),
        "smtpd_peername_lookup": ("no", "no reverse DNS of clients"),
        "smtp_dns_support_level": ("disabled", "smtp client never asks DNS (disable_dns_lookups)"),
        "smtp_host_lookup": ("native", "any host name lookup goes to /etc/hosts, not DNS"),
        "smtp_tls_security_level": ("none", "no STARTTLS to the next hop (smtp-sink, lab MX)"),
        "smtpd_tls_security_level": ("none", "no STARTTLS offered unless extra turns it on"),
        "smtputf8_enable": ("no", "plain ASCII tests; avoids SMTPUTF8 autodetection cost"),
        "biff": ("no", "no comsat notifications"),
        "append_dot_mydomain": ("no", "do not rewrite bare host names"),
        "maillog_file": (str(folder / "maillog"), "log via postlogd to a file: no syslog needed"),
        "maillog_file_prefixes": (str(folder), "postlogd writes only under these prefixes"),
        "default_process_limit": (str(process_limit), "enough smtpd/smtp processes for the load"),
        "smtpd_client_connection_count_limit": ("0", "no per-client cap: all load is local"),
        "queue_run_delay": ("1s", "a test must not wait 300 s for a deferred retry"),
        "minimal_backoff_time": ("1s", "same: retry deferred mail soon"),
        "maximal_backoff_time": ("10s", "same: never back off for long"),
        "maximal_queue_lifetime": ("10m", "give up (bounce) well within any test run"),
        "bounce_queue_lifetime": ("10m", "same for bounces"),
        "readme_directory": ("no", "no documentation paths to check"),
        "multi_instance_enable": ("no", "a standalone instance, not managed by postmulti"),
    }
    if relay_to is not None:
        host, port = relay_to
        if host != LOOPBACK:
            raise ValueError(f"relay_to must be on {LOOPBACK}, not {host!r}")
        settings["relayhost"] = (f"[{host}]:{port}", "all mail goes here; [] = no MX lookup")
    else:
        settings["relayhost"] = ("", "no relay host: mail for relay_domains would need DNS")
    for name, value in extra.items():
        settings[name] = (value, "set by the caller")
    return settings


# The services of master.cf: (name, type, private, unpriv, chroot, wakeup, maxproc, command).
# Chroot is "n" everywhere: a chrooted daemon would need copies of /etc files in the queue.
_SERVICES = [
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
]


def master_cf(listen_port: int) -> str:
    rows = [(f"{LOOPBACK}:{listen_port}", "inet", "n", "-", "n", "-", "-", "smtpd"), *_SERVICES]
    return "".join(
        f"{name:<24}{kind:<11}{' '.join(flags)}  {command}\n"
        for name, kind, *flags, command in rows
    )


class PrivatePostfix:
    """A Postfix instance of its own in ``folder`` (see the module docstring)."""

    def __init__(
        self,
        folder: Path | str | None,
        *,
        listen_port: int,
        relay_to: tuple[str, int] | None,
        relay_domains: Iterable[str] = (),
        mynetworks: str = "127.0.0.0/8",
        process_limit: int = 100,
        extra: Mapping[str, str] | None = None,
    ):
        self.postfix = postfix_binary()
        self._own_folder = folder is None
        if folder is None:
            folder = tempfile.mkdtemp(prefix="smtplab-postfix-")
        self.folder = Path(folder)
        self.listen_port = listen_port
        self.config = self.folder / "etc"
        self.spool = self.folder / "spool"
        self.maillog = self.folder / "maillog"
        self.settings = main_cf(
            self.folder,
            relay_to=relay_to,
            relay_domains=relay_domains,
            mynetworks=mynetworks,
            process_limit=process_limit,
            extra=extra or {},
        )
        self._started = False

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> PrivatePostfix:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # the postfix user must reach spool/ and data/
        _check_reachable(self.folder)
        for sub in (self.config, self.spool, self.folder / "data"):
            sub.mkdir(exist_ok=True)
        os.chmod(self.spool, 0o755)  # root-owned; post-install creates what is inside
        shutil.chown(self.folder / "data", MAIL_OWNER)
        lines = [f"# {why}\n{name} = {value}\n" for name, (value, why) in self.settings.items()]
        (self.config / "main.cf").write_text("".join(lines))
        (self.config / "master.cf").write_text(master_cf(self.listen_port))

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.write_config()
        self._started = True  # from here on, stop() must clean up whatever did start
        atexit.register(self.stop)  # a test run that dies must not leave Postfix running
        self._run("start")
        self.wait_ready(time.monotonic() + timeout)

    def wait_ready(self, deadline: float) -> None:
        """Until smtpd answers 220 on the listening port; TimeoutError at ``deadline``."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.listen_port), timeout=2.0) as sock:
                    sock.settimeout(max(deadline - time.monotonic(), 0.1))
                    greeting = sock.recv(512)
                    if greeting.startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
                    last = RuntimeError(f"unexpected greeting {greeting!r}")
            except OSError as error:
                last = error
            _pause_until(deadline, 0.05)
        where = f"{LOOPBACK}:{self.listen_port}"
        raise TimeoutError(f"Postfix on {where} did not answer: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the instance (``stop``, then ``abort``, then SIGKILL); safe to call twice."""
        if self._started:
            self._started = False
            atexit.unregister(self.stop)
            deadline = time.monotonic() + timeout
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run("stop", check=False, timeout=timeout)
            if self.master_pid() is not None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._run("abort", check=False, timeout=5.0)
            pid = self.master_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self._wait_daemons_gone(deadline)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- looking inside ------------------------------------------------------------------
    def master_pid(self) -> int | None:
        """The running master's pid, or None when it is not running."""
        try:
            pid = int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def queue_size(self) -> int:
        """Messages still in the queue (incoming, active, deferred, hold, maildrop)."""
        return sum(
            1
            for sub in ("maildrop", "incoming", "active", "deferred", "hold")
            for _, _, files in os.walk(self.spool / sub)
            for _ in files
        )

    def pids(self) -> list[int]:
        """The instance's live processes: every daemon works in its queue directory."""
        spool = os.path.realpath(self.spool)
        return [pid for pid in _pids() if _cwd_under(pid, spool)]

    def cpu_seconds(self) -> float:
        """CPU (user + system) of the instance so far: its live daemons and reaped children.

        Every daemon works in the queue directory, so that is how they are found;
        children the master already reaped count in its ``cutime``/``cstime``.
        """
        spool = os.path.realpath(self.spool)
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in _pids():
            if not _cwd_under(pid, spool):
                continue
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15]) / tick
        return total

    def postqueue(self) -> str:
        """``postqueue -p`` for this instance (what ``mailq`` would show)."""
        result = subprocess.run(
            [sbin("postqueue"), "-c", str(self.config), "-p"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout + result.stderr

    def wait_empty(self, deadline: float, poll: float = 0.02) -> bool:
        """Block until the queue is empty; False if ``deadline`` (monotonic) passes first."""
        while self.queue_size():
            if time.monotonic() >= deadline:
                return False
            _pause_until(deadline, poll)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.maillog.read_text(errors="replace")
        except OSError:
            return "(no maillog)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------
    def _run(self, command: str, *, check: bool = True, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [self.postfix, "-c", str(self.config), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"postfix {command} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{self.log_tail()}"
            )

    def _wait_daemons_gone(self, deadline: float) -> None:
        """Daemons work in the queue directory: wait until no process has it as cwd."""
        spool = os.path.realpath(self.spool)
        while time.monotonic() < deadline:
            if not any(_cwd_under(pid, spool) for pid in _pids()):
                return
            _pause_until(deadline, 0.05)


class SmtpSink:
    """Postfix's ``smtp-sink`` on 127.0.0.1: takes every message, counts, keeps a dump.

    It runs with ``-c`` (running counters on stdout, read by a thread: the
    ``mesg`` counter goes up at every final dot) and ``-D`` (every transaction
    appended to ``folder/dump``, so a caller can check *which* messages came).
    As root it must drop privileges (``-u postfix``); the dump folder is made
    writable for that user.
    """

    # Each update ends with CR: a match without one may be cut off mid-number.
    _COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)\r")

    def __init__(self, folder: Path | str, port: int | None = None, *, backlog: int = 1000):
        self.binary = sbin("smtp-sink")
        postfix_binary()  # the same account checks: smtp-sink -u postfix
        self.folder = Path(folder)
        self.port = port or free_port()
        self.backlog = backlog
        self.dump = self.folder / "dump"
        self.messages = 0  # smtp-sink's own counters, as last printed
        self.sessions = 0
        self.base = 0  # messages counted before the caller's measurement began
        self.output = b""  # anything smtp-sink printed that was not a counter
        self._changed = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def __enter__(self) -> SmtpSink:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _check_reachable(self.folder)
        self.folder.chmod(0o755)
        shutil.chown(self.folder, MAIL_OWNER)
        self._process = subprocess.Popen(
            [
                self.binary,
                "-c",
                "-4",
                "-u",
                MAIL_OWNER,
                "-h",
                "sink.example.net",
                "-D",
                str(self.dump),
                f"{LOOPBACK}:{self.port}",
                str(self.backlog),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        self._reader = threading.Thread(target=self._read, name="smtp-sink counters", daemon=True)
        self._reader.start()
        self._wait_ready(time.monotonic() + timeout)

    def _wait_ready(self, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {self.output.decode(errors='replace')}")
            try:
                with socket.create_connection(self.address, timeout=2.0) as sock:
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        sock.recv(512)
                        break
            except OSError as error:
                last = error
            _pause_until(deadline, 0.02)
        else:
            raise TimeoutError(f"smtp-sink on {LOOPBACK}:{self.port} did not answer: {last}")
        # Our probe is a session too: wait until it is counted, then start from zero.
        self.wait(lambda: self.sessions >= 1, deadline)
        with self._changed:
            self.base = self.messages

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        tail = b""
        while chunk := stdout.read1(65536):  # type: ignore[attr-defined]
            tail = (tail + chunk)[-4096:]
            found = self._COUNTER.findall(tail)
            with self._changed:
                if found:
                    sess, _, mesg = found[-1]
                    self.sessions, self.messages = int(sess), int(mesg)
                else:
                    self.output = (self.output + chunk)[-4096:]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def count(self) -> int:
        """Messages received since the sink became ready (every final dot)."""
        with self._changed:
            return self.messages - self.base

    def wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Block until ``predicate()`` holds (re-checked on each counter update) or ``deadline``."""
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def wait_count(self, n: int, deadline: float) -> bool:
        """Block until ``n`` messages arrived since ready; False at ``deadline`` (monotonic)."""
        return self.wait(lambda: self.messages - self.base >= n, deadline)

    def dumped(self) -> bytes:
        """Everything in the dump file so far (``-D`` format: sink headers, then the message)."""
        try:
            return self.dump.read_bytes()
        except FileNotFoundError:
            return b""

    def reset_dump(self) -> None:
        """Forget what was dumped (between benchmark rounds)."""
        with self._changed:
            self.base = self.messages
        self.dump.unlink(missing_ok=True)

    def stop(self) -> None:
        """Terminate smtp-sink (SIGKILL after 5 s); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._reader is not None:  # it sees end-of-file now that the process is gone
            self._reader.join(5)
            self._reader = None
        if process.stdout is not None:
            process.stdout.close()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for init (which may be slow) to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cwd_under(pid: int, folder: str) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == folder or cwd.startswith(folder + os.sep)


def _check_reachable(folder: Path) -> None:
    for parent in folder.resolve().parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise ValueError(
                f"{parent} is not searchable by other users, so Postfix's daemons "
                f"(user {MAIL_OWNER}) cannot reach {folder}; use a folder under /tmp"
            )


def _pause_until(deadline: float, step: float) -> None:
    """A short, bounded wait between polls of something we cannot block on."""
    time.sleep(max(min(step, deadline - time.monotonic()), 0))


def free_port() -> int:
    """A port free right now on 127.0.0.1 (Postfix and smtp-sink need a number up front)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])
