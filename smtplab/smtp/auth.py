"""SMTP AUTH (RFC 4954) as the lab's servers answer it: PLAIN and LOGIN.

Theory of operation
-------------------
:class:`AuthenticatingSession` is the part of a lab session that logs users in. It
keeps aiosmtpd's AUTH command and its authenticator callback, and replaces what the
lab answers differently:

* PLAIN (RFC 4616) checks the authorization identity, which aiosmtpd ignores: the lab
  has no proxy users, so an authzid other than the user's own is refused (§2).
* LOGIN prompts ``Username:`` and ``Password:``, as every major server does.
* Each response line is read to its end but kept only up to ``AUTH_LINE_LIMIT`` octets
  (RFC 4954 §4); a longer one, a ``*`` (cancel) or bad base64 gets its own reply.
* Only checked credentials count as failed logins (an unknown mechanism's 504, a syntax
  error or a cancel do not); after ``AUTH_FAILURE_LIMIT`` the server hangs up (both
  limits are :mod:`smtplab.smtp.policy`'s).
* A role that does not authenticate (an MX) answers AUTH with 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword, syntax

from smtplab.protocol.replies import (
    AUTH_CANCELLED,
    AUTH_LINE_TOO_LONG,
    AUTH_NOT_OFFERED,
    AUTHZID_REFUSED,
    BAD_BASE64,
    CANNOT_SPLIT,
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    TOO_MANY_AUTH_FAILURES,
)
from smtplab.smtp._aiosmtpd import AiosmtpdSession
from smtplab.smtp.policy import (
    AUTH_LINE_LIMIT,
    acts_as_another,
    too_many_auth_failures,
)

#: aiosmtpd's ``authenticator=``: (server, session, envelope, mechanism, data) → result.
Authenticator = Callable[[Any, Any, Any, str, Any], AuthResult]


class AuthenticatingSession(AiosmtpdSession):
    """A session that logs users in with PLAIN or LOGIN (see the module docstring)."""

    #: AUTH LOGIN's prompts (aiosmtpd's own are "User Name\0" and "Password\0").
    AuthLoginUsernameChallenge = LOGIN_USERNAME_PROMPT
    AuthLoginPasswordChallenge = LOGIN_PASSWORD_PROMPT

    def __init__(self, handler: Any, **kwargs: Any):
        authenticator = kwargs.get("authenticator")
        self._check = None if authenticator is None else self._counting(authenticator)
        if self._check is not None:
            kwargs["authenticator"] = self._check
        super().__init__(handler, **kwargs)
        self._auth_failures = 0
        self._credentials_refused = False

    def _counting(self, authenticator: Authenticator) -> Authenticator:
        """The authenticator, noting each refusal: only checked credentials are failed
        logins (an unknown mechanism's 504, a syntax error or a cancel are not)."""

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            result: AuthResult = authenticator(server, session, envelope, mechanism, data)
            self._credentials_refused = not result.success
            return result

        return check

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH (RFC 4954), hanging up after repeated failures (§4: servers may limit)."""
        if not getattr(self.event_handler, "offers_auth", True):
            await self.push(AUTH_NOT_OFFERED())
            return
        self._credentials_refused = False
        await super().smtp_AUTH(arg)
        if not self._credentials_refused or self.transport is None:
            return
        self._auth_failures += 1
        if too_many_auth_failures(self._auth_failures):
            await self.push(TOO_MANY_AUTH_FAILURES())
            self.transport.close()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        """PLAIN (RFC 4616) with its authorization identity, which aiosmtpd ignores (so
        ``bob\\0alice\\0alice's password`` logged in as alice). The lab has no proxy users:
        an authzid other than the authcid is refused (§2) before any password is checked."""
        response = await self._initial_or_challenged(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\0")
        if len(parts) != 3:
            await self.push(CANNOT_SPLIT())
            return AuthResult(success=False, handled=True)
        authzid, authcid, password = parts
        if acts_as_another(authzid, authcid):
            self._credentials_refused = True
            return AuthResult(success=False, handled=False, message=AUTHZID_REFUSED())
        return self._check_password("PLAIN", authcid, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """LOGIN (draft-murchison-sasl-login): the user name (perhaps on the AUTH line),
        then the password, each after its prompt."""
        login = await self._initial_or_challenged(args, LOGIN_USERNAME_PROMPT)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._challenged(LOGIN_PASSWORD_PROMPT)
        if password is None:
            return AuthResult(success=False, handled=True)
        return self._check_password("LOGIN", login, password)

    def _check_password(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        assert self.session is not None and self.envelope is not None
        if self._check is None:  # no users on this server: nobody logs in
            return AuthResult(success=False, handled=False)
        data = LoginPassword(login, password)
        return self._check(self, self.session, self.envelope, mechanism, data)

    async def _initial_or_challenged(self, args: list[str], prompt: str) -> bytes | None:
        """The initial response on the AUTH line (RFC 4954 §4), else the answer to
        ``prompt``; None once a reply has said why there is none."""
        if len(args) == 1:
            return await self._challenged(prompt)
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await self.push(BAD_BASE64())
            return None

    async def _challenged(self, prompt: str) -> bytes | None:
        """Send a 334 challenge and decode the client's answer; None once a reply has said
        why there is none: cancelled (``*``), not base64, or too long (RFC 4954 §4)."""
        await self.push(b"334 " + base64.b64encode(prompt.encode()))
        line = await self._auth_line()
        if line is None:
            await self.push(AUTH_LINE_TOO_LONG())
            return None
        blob = line.strip()
        if blob == b"*":
            await self.push(AUTH_CANCELLED())
            return None
        try:
            return base64.b64decode(blob, validate=True)
        except binascii.Error:
            await self.push(BAD_BASE64())
            return None

    async def _auth_line(self) -> bytes | None:
        """The client's next line, at most ``AUTH_LINE_LIMIT`` octets; a longer one is read
        to its end, kept no further, and gives None. (aiosmtpd's ``readline`` raised at
        the stream's limit, and its text became the reply.)"""
        kept, size = bytearray(), 0
        while True:
            try:
                piece = await self.reader.readuntil()
                done = True
            except asyncio.LimitOverrunError as error:
                piece, done = await self.reader.readexactly(error.consumed), False
            except asyncio.IncompleteReadError as error:
                piece, done = error.partial, True
            size += len(piece)
            if size <= AUTH_LINE_LIMIT:
                kept += piece
            if done:
                return bytes(kept) if size <= AUTH_LINE_LIMIT else None
