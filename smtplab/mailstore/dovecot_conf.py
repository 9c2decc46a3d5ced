"""What a private Dovecot is given: who it runs as, its folder, and its configuration.

The why of every choice here (rootless or as root, the mail user, the fixed greetings
and capabilities, UIDVALIDITY 1) is in :mod:`smtplab.mailstore.dovecot`, which runs it.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from smtplab.errors import SmtplabError
from smtplab.world import LOOPBACK

IMAP_HOST = "imap.example.com"
POP_HOST = "pop.example.com"
#: The IMAP capabilities offered, fixed so that transcripts do not change with the
#: Dovecot version (all of these are in every Dovecot 2.3).
IMAP_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS MOVE UNSELECT "
    "CHILDREN NAMESPACE"
)


class MailstoreUnavailable(SmtplabError, RuntimeError):
    """POP3/IMAP cannot run here (no Dovecot, or it would not start); says why."""


@dataclass(frozen=True)
class Accounts:
    """Who Dovecot's processes run as (see :mod:`smtplab.mailstore.dovecot`)."""

    internal: str
    internal_group: str
    login: str
    mail_uid: int
    mail_gid: int
    as_root: bool


def accounts() -> Accounts:
    """Who Dovecot's processes run as, given the user this process runs as."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        try:
            user = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(gid).gr_name
        except KeyError as error:
            raise MailstoreUnavailable(
                f"Dovecot needs a user name for uid {uid} / gid {gid}: {error}"
            ) from None
        return Accounts(user, group, user, uid, gid, as_root=False)

    def account(name: str) -> pwd.struct_passwd | None:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        return None

    nobody = account("nobody")
    if nobody is None:
        raise MailstoreUnavailable("running as root, Dovecot needs the user 'nobody' for mail")
    internal = account("dovecot") or nobody
    login = account("dovenull") or nobody
    return Accounts(
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


def prepare(
    folder: Path,
    accounts: Accounts,
    users: dict[str, tuple[str, Path]],
    tls: dict[str, tuple[bytes, bytes]],
    mail_root: Path | None,
) -> None:
    """Fill Dovecot's private ``folder``: certificates, the passwd-file, run/ and state/;
    run as root, hand the lab's Maildirs to the mail user."""
    if accounts.as_root:  # login processes must reach base_dir; mail is read as nobody
        folder.chmod(0o755)
    for host, (chain, key) in tls.items():
        (folder / f"{host}.crt").write_bytes(chain)
        key_path = folder / f"{host}.key"
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
    passwd = folder / "passwd"
    passwd.write_text("".join(rows))
    passwd.chmod(0o644 if accounts.as_root else 0o600)
    if accounts.as_root and mail_root is not None:
        blocked = _blocked_folder(mail_root.parent.parent, accounts.mail_uid, accounts.mail_gid)
        if blocked is not None:
            raise MailstoreUnavailable(
                f"Dovecot reads mail as 'nobody', who may not enter {blocked}; "
                "keep the lab's root folder where every user may pass (e.g. under /tmp)"
            )
        for shared in (mail_root.parent, mail_root):  # the lab's root and its mail/
            shared.chmod(shared.stat().st_mode | stat.S_IXOTH)
        _chown_tree(mail_root, accounts.mail_uid, accounts.mail_gid)
    for sub in ("run", "state"):
        (folder / sub).mkdir()


def configuration(folder: Path, accounts: Accounts, ports: dict[str, int]) -> str:
    """``dovecot.conf`` for a private Dovecot in ``folder`` listening on ``ports``."""
    a = accounts
    f = folder
    imap_cert, pop_cert = f / f"{IMAP_HOST}.crt", f / f"{POP_HOST}.crt"
    return f"""\
# A private Dovecot for one smtplab lab (generated; see smtplab/mailstore/dovecot_conf.py).
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
