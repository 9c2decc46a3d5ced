"""The lab users' passwords: what the lab's clients log in with, and the check behind the
submission servers' SMTP AUTH (RFC 4954)."""

from __future__ import annotations

from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from smtplab.world import World


class Accounts:
    """The users of ``world`` and their lab passwords."""

    def __init__(self, world: World):
        self.world = world

    def password(self, address: str) -> str:
        """A lab user's password; empty for an address that is no user (the server says no)."""
        user = self.world.user(address)
        return user.password if user is not None else ""

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator: check a lab user's password (PLAIN and LOGIN give a
        LoginPassword)."""
        if isinstance(data, LoginPassword):
            user = self.world.user(data.login.decode("utf-8", "replace"))
            if user is not None and user.password == data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)
