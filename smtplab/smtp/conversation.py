"""Talking SMTP by hand: one line at a time, for the lessons.

``lab.talk("mx1.example.org")`` opens a recorded connection and returns a
:class:`Conversation`. The reader types a command and gets the server's reply
back as a :class:`~smtplab.record.transcript.Reply`, read from the recorded wire (so
what a lesson shows is what crossed the socket). :meth:`Conversation.send`
writes raw bytes, for what no well-behaved client would send: pipelined
commands, bare line ends, a smuggling attempt.
"""

from __future__ import annotations

import ssl
from typing import Any

from smtplab.record.transcript import Reply, Transcript
from smtplab.smtp.client import RecordingClient


class Conversation:
    """A hand-driven SMTP session on a :class:`~smtplab.smtp.client.RecordingClient`."""

    def __init__(self, client: RecordingClient, tls: ssl.SSLContext):
        self._client = client
        self._tls = tls
        self.greeting = self._last_reply()

    @property
    def transcript(self) -> Transcript:
        assert self._client.wire is not None
        return self._client.wire.transcript()

    def server_view(self, timeout: float = 10.0) -> Transcript:
        """This connection as the server recorded it (after :meth:`close`)."""
        assert self._client.wire is not None and self._client.journal is not None
        return self._client.journal.other_end(self._client.wire, timeout).transcript()

    def _last_reply(self) -> Reply:
        return self.transcript.replies[-1]

    def say(self, line: str) -> Reply:
        """Send one command line (CRLF is added) and return the server's reply."""
        verb, _, argument = line.partition(" ")
        if verb.upper() == "EHLO":  # through smtplib, which remembers the extensions
            self._client.ehlo(argument)
        elif verb.upper() == "HELO":
            self._client.helo(argument)
        else:
            self._client.send(f"{line}\r\n".encode())  # UTF-8, for SMTPUTF8 lessons (RFC 6531)
            self._client.getreply()
        return self._last_reply()

    def send(self, data: bytes, replies: int = 1) -> list[Reply]:
        """Write ``data`` exactly as given, then read ``replies`` replies."""
        self._client.send(data)
        for _ in range(replies):
            self._client.getreply()
        return self.transcript.replies[-replies:] if replies else []

    def starttls(self, inject: bytes = b"") -> Reply:
        """STARTTLS with the lab CA, verifying the server's host name (RFC 3207).

        ``inject`` is written in the same packet right behind ``STARTTLS``: the
        command-injection attack, which a correct server discards (§4.2).
        """
        self._client.ehlo_or_helo_if_needed()
        self._client.piggyback = inject
        self._client.starttls(context=self._tls)
        return self._last_reply()

    def login(self, user: str, password: str) -> Reply:
        """AUTH with the best mechanism both sides know (smtplib picks PLAIN here)."""
        try:
            self._client.login(user, password)
        except Exception as error:  # the reply is in the transcript either way
            if not hasattr(error, "smtp_code"):
                raise
        return self._last_reply()

    def close(self) -> Transcript:
        """QUIT (if the connection is still open) and return the whole transcript."""
        if self._client.sock is not None:
            try:
                self._client.quit()
            except OSError:
                self._client.close()
        return self.transcript

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self.transcript))

    def _repr_html_(self) -> str:
        return self.transcript._repr_html_()
