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

import base64
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtplab.errors import SmtplabError
from smtplab.world import LOOPBACK, MAILSTORE_ROLES, ROLES, server_listing

IMAP_HOST = "imap.example.com"
POP_HOST = "pop.example.com"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
INSTALL_HINT = "install Dovecot: apt-get install dovecot-imapd dovecot-pop3d"
#: The IMAP capabilities offered, fixed so that transcripts do not change with the
#: Dovecot version (all of these are in every Dovecot 2.3).
IMAP_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS MOVE UNSELECT "
    "CHILDREN NAMESPACE"
)
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


class MailstoreUnavailable(SmtplabError, RuntimeError):
    """POP3/IMAP cannot run here (no Dovecot, or it would not start); says why."""


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


@dataclass(frozen=True)
class _Accounts:
    """Who Dovecot's processes run as (see the module docstring)."""

    internal: str
    internal_group: str
    login: str
    mail_uid: int
    mail_gid: int
    as_root: bool


def _accounts() -> _Accounts:
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        try:
            user = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(gid).gr_name
        except KeyError as error:
            raise MailstoreUnavailable(
                f"Dovecot needs a user name for uid {uid} / gid {gid}: {error}"
            ) from None
        return _Accounts(user, group, user, uid, gid, as_root=False)

    def account(name: str) -> pwd.struct_passwd | None:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        return None

    nobody = account("nobody")
    if nobody is None:
        raise MailstoreUnavailable("running as root, Dovecot needs the user 'nobody' for mail")
    internal = account("dovecot") or nobody
    login = account("dovenull") or nobody
    return _Accounts(
        internal.pw_name,
        grp.getgrgid(internal.pw_gid).gr_name,
        login.pw_name,
        nobody.pw_uid,
        nobody.pw_gid,
        as_root=True,
    )


def _blocked_folder(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to ``path`` that ``uid`` may not enter, if any."""
    for folder in [path, *path.parents]:
        mode = folder.stat()
        if mode.st_uid == uid:
            needed = stat.S_IXUSR
        elif mode.st_gid == gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not mode.st_mode & needed:
            return folder
    return None


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now on 127.0.0.1 (Dovecot binds them itself)."""
    sockets = [socket.create_server((LOOPBACK, 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _seed_uidvalidity(maildir: Path) -> None:
    """Start a fresh Maildir at UIDVALIDITY 1 (Dovecot would take the clock)."""
    uidlist = maildir / "dovecot-uidlist"
    if not uidlist.exists():
        uidlist.write_text("3 V1 N1\n")


def _passwd_key(address: str) -> str:
    """The user name as Dovecot looks it up in a passwd-file: it backslash-escapes
    ``\\``, ``"`` and ``'`` in the name before the lookup (its str_escape), so an
    address such as ``o'brien@example.org`` is only found written that way."""
    return address.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    for folder, dirs, files in os.walk(top):
        os.chown(folder, uid, gid)
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


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
        self.binary = binary or find_dovecot()
        if self.binary is None:
            raise MailstoreUnavailable(f"dovecot was not found; {INSTALL_HINT}")
        self.version = dovecot_version(self.binary)
        if not self.version.startswith("2.3."):
            raise MailstoreUnavailable(
                f"the lab writes a Dovecot 2.3 configuration; this is Dovecot {self.version}"
            )
        self.domains = domains
        self.accounts = _accounts()
        self.folder = Path(tempfile.mkdtemp(prefix="smtplab-dovecot-"))
        self.listeners: dict[str, Listener] = {}
        self._process: subprocess.Popen[bytes] | None = None
        try:
            self._prepare(users, tls, mail_root)
            self._start(ports)
        except BaseException:
            self.stop()
            raise

    # -- setting up -------------------------------------------------------------
    def _prepare(
        self,
        users: dict[str, tuple[str, Path]],
        tls: dict[str, tuple[bytes, bytes]],
        mail_root: Path | None,
    ) -> None:
        accounts = self.accounts
        if accounts.as_root:  # login processes must reach base_dir; mail is read as nobody
            self.folder.chmod(0o755)
        for host, (chain, key) in tls.items():
            (self.folder / f"{host}.crt").write_bytes(chain)
            key_path = self.folder / f"{host}.key"
            key_path.touch(mode=0o600)
            key_path.write_bytes(key)
        rows = []
        for address, (password, maildir) in users.items():
            if any(c in str(maildir) for c in ":\n"):
                raise MailstoreUnavailable(
                    f"Dovecot cannot use a folder whose name has ':' ({maildir})"
                )
            _seed_uidvalidity(maildir)
            secret = base64.b64encode(password.encode()).decode()
            rows.append(f"{_passwd_key(address)}:{{PLAIN.B64}}{secret}::::{maildir}::\n")
        passwd = self.folder / "passwd"
        passwd.write_text("".join(rows))
        passwd.chmod(0o644 if accounts.as_root else 0o600)
        if accounts.as_root and mail_root is not None:
            blocked = _blocked_folder(mail_root.parent.parent, accounts.mail_uid, accounts.mail_gid)
            if blocked is not None:
                raise MailstoreUnavailable(
                    f"Dovecot reads mail as 'nobody', who may not enter {blocked}; "
                    "keep the lab's root folder where every user may pass (e.g. under /tmp)"
                )
            for folder in (mail_root.parent, mail_root):  # the lab's root and its mail/
                folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
            _chown_tree(mail_root, accounts.mail_uid, accounts.mail_gid)
        for sub in ("run", "state"):
            (self.folder / sub).mkdir()

    def _config(self, ports: dict[str, int]) -> str:
        a = self.accounts
        f = self.folder
        imap_cert, pop_cert = f / f"{IMAP_HOST}.crt", f / f"{POP_HOST}.crt"
        return f"""\
# A private Dovecot for one smtplab lab (generated; see smtplab/mailstore/dovecot.py).
protocols = imap pop3
listen = {LOOPBACK}
base_dir = {f / "run"}
state_dir = {f / "state"}
log_path = {f / "dovecot.log"}
default_internal_user = {a.internal}
default_internal_group = {a.internal_group}
default_login_user = {a.login}
mail_uid = {a.mail_uid}
mail_gid = {a.mail_gid}
first_valid_uid = {a.mail_uid}
first_valid_gid = {a.mail_gid}
# Each user's home is their Maildir; the inbox is the Maildir itself.
mail_location = maildir:~
# POP3 UIDL from the IMAP UID and UIDVALIDITY (Dovecot's default, spelled out).
pop3_uidl_format = %08Xu%08Xv
auth_mechanisms = plain login
# Any character in a user name: the passwd file lists exactly the lab's users, whose
# addresses may hold any RFC 5321 atext ("%", "+", "*", braces ...); the default set
# refuses all of those before the passwd file is even asked.
auth_username_chars =
disable_plaintext_auth = yes
passdb {{
  driver = passwd-file
  args = {f / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = {f / "passwd"}
}}
ssl = yes
ssl_min_protocol = TLSv1.2
ssl_cert = <{imap_cert}
ssl_key = <{f / f"{IMAP_HOST}.key"}
local_name {POP_HOST} {{
  ssl_cert = <{pop_cert}
  ssl_key = <{f / f"{POP_HOST}.key"}
}}
imap_capability = {IMAP_CAPABILITIES}
protocol imap {{
  login_greeting = {IMAP_HOST} IMAP server ready
}}
protocol pop3 {{
  login_greeting = {POP_HOST} POP3 server ready
}}
service anvil {{
  chroot =
  # No growing penalty for 127.0.0.1 after wrong passwords (every lab client comes from
  # there); each failure still waits auth_failure_delay (2 s) before the answer.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    port = {ports["imaps"]}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {ports["pop3"]}
  }}
  inet_listener pop3s {{
    port = {ports["pop3s"]}
    ssl = yes
  }}
}}
"""

    # -- running ----------------------------------------------------------------
    def _start(self, fixed: dict[str, int] | None) -> None:
        conf = self.folder / "dovecot.conf"
        for _attempt in range(1 if fixed else PORT_ATTEMPTS):
            ports = fixed or dict(
                zip(MAILSTORE_ROLES, _free_ports(len(MAILSTORE_ROLES)), strict=True)
            )
            conf.write_text(self._config(ports))
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
    tls = {}
    for host in (IMAP_HOST, POP_HOST):
        leaf = lab.ca._leaf(host)  # the same issuing (names, CA) as the SMTP servers
        chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        tls[host] = (chain, leaf.private_key_pem.bytes())
    domains = tuple(d.name for d in lab.world.domains)
    ports = {role: lab.ports[role] for role in MAILSTORE_ROLES} if lab.ports else None
    dovecot = Dovecot(users, tls, domains=domains, mail_root=lab.root / "mail", ports=ports)
    for host in (IMAP_HOST, POP_HOST):
        with contextlib.suppress(ValueError):  # no zone for example.com in this world
            lab.dns.replace(host, "A", [LOOPBACK])
    return dovecot
