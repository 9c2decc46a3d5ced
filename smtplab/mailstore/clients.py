"""poplib and imaplib with a tap on each direction: the lab's recording POP3/IMAP clients.

Like :class:`~smtplab.smtp.client.RecordingClient` for smtplib, what the library
sends (``_putline`` / ``send``) and every line or literal it reads (its socket
file, swapped for a recording one whenever the library sets ``file``) go into a
:class:`~smtplab.record.wirelog.WireLog`. They connect to 127.0.0.1 but verify TLS
certificates against the lab host name (:mod:`smtplab.tls.loopback`). imaplib
starts its tags with a random prefix (``JFAP1``); :class:`RecordingIMAP` uses
``A`` (``A0``, ``A1``, ...) so that transcripts are the same every run.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any, Literal

from smtplab.record.wirelog import ReadTap, WireLog
from smtplab.tls import loopback

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_TIMEOUT = 10.0


class _Recording:
    """What the POP3 and IMAP recording clients share: loopback, implicit TLS, the tap."""

    host: str
    port: int
    sock: Any

    def _setup(self, implicit_tls: ssl.SSLContext | None, wire: WireLog) -> None:
        self.implicit_tls = implicit_tls
        self.wire = wire
        self._file: ReadTap | None = None
        self._tls_noted = False

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = loopback.connect(self.port, timeout)
        self.wire.peer = sock.getsockname()[:2]
        if self.implicit_tls is not None:  # ports 993/995 style: TLS before the greeting
            try:
                return loopback.start_tls(sock, self.implicit_tls, self.host)
            except (ssl.SSLError, OSError) as error:
                self.wire.note(f"TLS handshake failed: {error}")
                raise
        return sock

    # poplib and imaplib set ``file`` after connecting and again after STARTTLS.
    @property
    def file(self) -> ReadTap | None:
        return self._file

    @file.setter
    def file(self, inner: Any) -> None:
        if inner is None:
            self._file = None
            return
        if isinstance(self.sock, ssl.SSLSocket) and not self._tls_noted:
            self._tls_noted = True  # noted before the library reads or sends anything more
            cipher = self.sock.cipher()
            self.wire.tls_started(str(self.sock.version()), cipher[0] if cipher else "?")
        self._file = ReadTap(inner, self.wire)

    def _record(self, data: bytes) -> None:
        self.wire.record("client", data)

    def _finish(self) -> None:
        self.wire.close()


# poplib and imaplib declare ``file`` a plain attribute; the property sees every assignment.
class RecordingPOP3(_Recording, poplib.POP3):  # type: ignore[misc]
    """poplib.POP3 that records the conversation; connect it to a lab host *name*."""

    def __init__(
        self,
        host: str,
        port: int,
        wire: WireLog,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self._setup(implicit_tls, wire)
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            if getattr(self, "sock", None) is not None:  # poplib leaves it open on a bad greeting
                self.close()
            raise

    def _putline(self, line: bytes) -> None:
        self._record(line + poplib.CRLF)
        super()._putline(line)  # type: ignore[misc]  # poplib's, missing from its stubs

    def close(self) -> None:
        super().close()
        self._finish()


# RFC 9051 §9: ASTRING-CHAR, any CHAR but atom-specials ("(", ")", "{", SP, CTL, "%", "*",
# DQUOTE, "\\"); "]" is allowed.
_ASTRING = re.compile(r"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")


class RecordingIMAP(_Recording, imaplib.IMAP4):  # type: ignore[misc]
    """imaplib.IMAP4 that records the conversation; connect it to a lab host *name*."""

    def __init__(
        self,
        host: str,
        port: int,
        wire: WireLog,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self._setup(implicit_tls, wire)
        super().__init__(host, port, timeout)

    # imaplib draws a random tag prefix per connection; a fixed one keeps transcripts stable.
    # (imaplib's stubs say str; imaplib itself makes and uses bytes.)
    @property  # type: ignore[override]
    def tagpre(self) -> bytes:
        return b"A"

    @tagpre.setter
    def tagpre(self, value: bytes) -> None:
        pass

    def send(self, data: ReadableBuffer) -> None:
        self._record(bytes(data))
        super().send(data)

    def login(self, user: str, password: str) -> tuple[Literal["OK"], list[bytes]]:
        """LOGIN, with the userid quoted where an atom cannot carry it.

        imaplib quotes the password but sends the userid bare; an address such as
        ``a%u@example.org`` holds a list wildcard, which no atom may (RFC 9051 §9:
        LOGIN takes two astrings; ``%``, ``*``, ``(``, ``{``, ``"``, ``\\`` need a
        quoted string).
        """
        userid = user if _ASTRING.fullmatch(user) else self._quote(user)
        return super().login(userid, password)

    def shutdown(self) -> None:
        super().shutdown()
        self._finish()
