"""POP3 and IMAP for the lab: a private Dovecot reading the lab's own Maildirs.

Theory of operation
-------------------
SMTP stops at the mailbox; people read their mail over POP3 (RFC 1939) or
IMAP (RFC 9051, RFC 3501). The lab does not write its own servers for those:
it runs Dovecot, a maintained one, as a private instance per lab.

* **Private.** Everything Dovecot needs lives in a fresh folder of its own
  (configuration, ``base_dir`` sockets, ``state_dir``, log, certificates, the
  password file), started with ``dovecot -F -c CONF``. It never reads
  ``/etc/dovecot`` and never touches a system-wide Dovecot.
* **Any user.** Run by a normal user (Binder's ``jovyan``), every Dovecot
  process runs as that user: ``default_internal_user``,
  ``default_login_user`` and ``mail_uid`` are all the current user, and no
  service is chrooted (Dovecot's "rootless" set-up). Run by root (containers,
  CI), Dovecot keeps root for its master process only, as it is designed to:
  login processes run as ``dovenull``, internal ones as ``dovecot`` (the
  Debian package creates both; ``nobody`` otherwise) and mail is read as
  ``nobody``, because Dovecot refuses to touch mail as root. The lab then
  hands its Maildirs to ``nobody`` and makes the lab folder traversable.
* **The lab's users and mailboxes.** A ``passwd-file`` lists every lab user
  with their lab password and, as home, their Maildir: what the lab's MX
  servers deliver is what POP3 and IMAP serve. Dovecot keeps its index files
  next to the messages, so a lab started with ``root=`` keeps UIDs and flags.
* **Same output on every run.** Host names are fixed (``imap.example.com``,
  ``pop.example.com``), so are the greetings and the IMAP capability list
  (they would otherwise change with the Dovecot version), and each Maildir
  starts with UIDVALIDITY 1 (Dovecot would use the clock).
* **Ports.** Four free loopback ports are picked (IMAP with STARTTLS, IMAP over
  TLS, POP3 with STARTTLS, POP3 over TLS); if another program takes one before
  Dovecot binds it, Dovecot exits with EADDRINUSE and the lab tries new ports.
  Ports given by the lab (``smtplab up --port-base``) are tried once.
  Readiness is a condition with a deadline: both greetings arrived.
* **No orphans.** Dovecot runs under a tiny ``sh`` watchdog that reads a pipe
  from this process: when the lab stops, or this process dies however it
  dies, the pipe closes and the watchdog stops Dovecot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtplab.mailstore.dovecot_conf import (
    IMAP_HOST,
    POP_HOST,
    MailstoreUnavailable,
    accounts,
    configuration,
    prepare,
)
from smtplab.world import LOOPBACK, MAILSTORE_ROLES, ROLES, server_listing

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
INSTALL_HINT = "install Dovecot: apt-get install dovecot-imapd dovecot-pop3d"
_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# Stops Dovecot when our end of its stdin pipe closes (lab.stop(), or this process
# dying), and exits with Dovecot's status when Dovecot stops by itself. A
# background job's stdin is /dev/null unless redirected, hence fd 3.
_WATCHDOG = """
exec 3<&0
"$1" -F -c "$2" </dev/null 3<&- &
dovecot=$!
{ read -r _ignored; kill -TERM "$dovecot" 2>/dev/null; } <&3 3<&- &
watcher=$!
exec 3<&-
wait "$dovecot"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"""


@dataclass(frozen=True)
class Listener:
    """One POP3/IMAP endpoint, described like the lab's SMTP servers."""

    role: str  # "imap", "imaps", "pop3", "pop3s"
    host: str
    port: int
    domains: tuple[str, ...]

    @property
    def implicit_tls(self) -> bool:
        return ROLES[self.role].implicit_tls

    def describe(self) -> dict[str, Any]:
        return server_listing(self.role, self.host, self.port, self.domains)


def find_dovecot() -> str | None:
    """The dovecot binary (it lives in /usr/sbin, which a user's PATH may lack)."""
    extra = os.pathsep.join(_SEARCH_PATH)
    return shutil.which("dovecot", path=f"{os.environ.get('PATH', '')}{os.pathsep}{extra}")


def dovecot_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.split()[0] if out.stdout.split() else "unknown"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now on 127.0.0.1 (Dovecot binds them itself)."""
    sockets = [socket.create_server((LOOPBACK, 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Dovecot:
    """A running private Dovecot serving POP3 and IMAP for one lab's users.

    ``users`` maps each address to ``(password, maildir folder)``; ``tls``
    maps ``IMAP_HOST`` and ``POP_HOST`` to ``(cert chain PEM, key PEM)``.
    """

    def __init__(
        self,
        users: dict[str, tuple[str, Path]],
        tls: dict[str, tuple[bytes, bytes]],
        *,
        domains: tuple[str, ...] = (),
        mail_root: Path | None = None,
        binary: str | None = None,
        ports: dict[str, int] | None = None,
    ):
        found = binary or find_dovecot()
        if found is None:
            raise MailstoreUnavailable(f"dovecot was not found; {INSTALL_HINT}")
        self.binary: str = found
        self.version = dovecot_version(self.binary)
        if not self.version.startswith("2.3."):
            raise MailstoreUnavailable(
                f"the lab writes a Dovecot 2.3 configuration; this is Dovecot {self.version}"
            )
        self.domains = domains
        self.accounts = accounts()
        self.folder = Path(tempfile.mkdtemp(prefix="smtplab-dovecot-"))
        self.listeners: dict[str, Listener] = {}
        self._process: subprocess.Popen[bytes] | None = None
        try:
            prepare(self.folder, self.accounts, users, tls, mail_root)
            self._start(ports)
        except BaseException:
            self.stop()
            raise

    # -- running ----------------------------------------------------------------
    def _start(self, fixed: dict[str, int] | None) -> None:
        conf = self.folder / "dovecot.conf"
        for _attempt in range(1 if fixed else PORT_ATTEMPTS):
            ports = fixed or dict(
                zip(MAILSTORE_ROLES, _free_ports(len(MAILSTORE_ROLES)), strict=True)
            )
            conf.write_text(configuration(self.folder, self.accounts, ports))
            for log in ("dovecot.log", "stderr.log"):
                (self.folder / log).write_bytes(b"")
            with open(self.folder / "stderr.log", "wb") as errors:
                self._process = subprocess.Popen(
                    ["sh", "-c", _WATCHDOG, "smtplab-dovecot", self.binary, str(conf)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                )
            if self._wait_ready(ports):
                self.listeners = {
                    role: Listener(
                        role, IMAP_HOST if role.startswith("imap") else POP_HOST, port, self.domains
                    )
                    for role, port in ports.items()
                }
                return
            self._halt()
            if "Address already in use" not in self.log():
                raise MailstoreUnavailable(f"Dovecot {self.version} did not start:\n{self.log()}")
        if fixed:
            taken = ", ".join(str(port) for port in fixed.values())
            raise MailstoreUnavailable(f"one of the ports {taken} for POP3/IMAP is in use")
        raise MailstoreUnavailable(f"no free ports for Dovecot after {PORT_ATTEMPTS} tries")

    def _wait_ready(self, ports: dict[str, int]) -> bool:
        """True once both greetings arrive; False if Dovecot exits first."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = {ports["imap"]: b"* OK", ports["pop3"]: b"+OK"}
        process = self._process
        assert process is not None
        while waiting:
            if process.poll() is not None:
                return False
            for port, greeting in list(waiting.items()):
                if _greets(port, greeting):
                    del waiting[port]
            if not waiting:
                break
            if time.monotonic() > deadline:
                self._halt()
                raise MailstoreUnavailable(
                    f"Dovecot did not greet within {START_TIMEOUT} s:\n{self.log()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)  # paces the retries; returns at once if it exits
        # The master binds every listener before it starts any login process, so the TLS
        # ports listen too (probing them would only start more login processes).
        return True

    def log(self) -> str:
        """Dovecot's own log and anything it printed, for error messages."""
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            with contextlib.suppress(OSError):
                parts.append((self.folder / name).read_text(errors="replace").strip())
        return "\n".join(p for p in parts if p)

    def _halt(self) -> None:
        """Stop the watchdog and Dovecot, then anything left in their session."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Dovecot's master stops its children; this catches any that lag behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Stop Dovecot and remove its private folder (the mailboxes stay). Idempotent."""
        self._halt()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def describe(self) -> list[dict[str, Any]]:
        return [listener.describe() for listener in self.listeners.values()]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Dovecot {self.version}: {state}>"


def _greets(port: int, greeting: bytes) -> bool:
    """True if a connection to ``port`` gets a greeting (not yet listening: False)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            return sock.recv(256).startswith(greeting)
    except OSError:
        return False


def for_lab(lab: Any) -> Dovecot:
    """Start a Dovecot serving ``lab``'s users and Maildirs, with lab-CA certificates.

    Also gives ``imap.example.com`` and ``pop.example.com`` an A record in the
    lab DNS when the lab has a zone for them.
    """
    users = {
        user.address: (user.password, lab.maildirs[user.address].path) for user in lab.world.users
    }
    tls = {host: lab.ca.key_pair(host) for host in (IMAP_HOST, POP_HOST)}
    domains = tuple(d.name for d in lab.world.domains)
    ports = {role: lab.ports[role] for role in MAILSTORE_ROLES} if lab.ports else None
    dovecot = Dovecot(users, tls, domains=domains, mail_root=lab.root / "mail", ports=ports)
    for host in (IMAP_HOST, POP_HOST):
        with contextlib.suppress(ValueError):  # no zone for example.com in this world
            lab.dns.replace(host, "A", [LOOPBACK])
    return dovecot
