"""One running lab server: where it listens, and the switches a lesson flips on it.

A :class:`LabServer` wraps the :class:`~smtplab.smtp.controller.LabController` of one
host of the world. It can go down and come back on the same port (a crashed host
refuses connections; its port is kept so that they really are refused), fail
chosen commands (:mod:`smtplab.smtp.faults`), sit a network round trip away, and
switch ESMTP extensions off and on by restarting with other options.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from smtplab.record.recordings import Recordings
from smtplab.roles.handlers import RoleHandler
from smtplab.smtp.controller import LabController
from smtplab.smtp.faults import Faults
from smtplab.smtp.policy import LAB_EXTENSIONS
from smtplab.world import ServerSpec, server_listing

#: The SIZE a lab server announces (RFC 1870) while the extension is on.
MAX_MESSAGE_SIZE = 10 * 1024 * 1024


class LabServer:
    """A running lab server: its spec, where it listens, and the switches a lesson flips."""

    def __init__(
        self,
        spec: ServerSpec,
        handler: RoleHandler,
        journal: Recordings,
        *,
        port: int = 0,
        **smtp: Any,
    ):
        self.spec = spec
        self.handler = handler
        self.faults = Faults()
        self._journal = journal
        self._smtp = smtp
        self._tls = smtp.get("tls_context")
        self.controller: LabController | None = None
        self._port = port  # 0: the OS picks one
        self.up()

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def port(self) -> int:
        """Where it listens (kept while it is down, so connections are really refused)."""
        return self._port

    @property
    def is_up(self) -> bool:
        return self.controller is not None

    def up(self) -> None:
        """Start (again), on the same port as before if it had one."""
        if self.controller is not None:
            return
        controller = LabController(
            self.handler,
            host_name=self.host,
            journal=self._journal,
            faults=self.faults,
            port=self._port,
            **self._smtp,
        )
        controller.start()
        self.controller, self._port = controller, int(controller.port)

    def down(self) -> None:
        """Stop listening, as if the host crashed: connections are refused. Returns within
        a few seconds: a server that cannot stop cleanly gives up, frees its port and warns."""
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()

    def fail(self, command: str, reply: str | None, times: int | None = 1) -> None:
        """Answer ``reply`` to ``command`` (``None``: hang up) the next ``times`` times.

        ``command`` is an SMTP verb, or ``"END-OF-DATA"`` for the moment after the
        final dot. Examples: ``fail("RCPT", "451 4.7.1 Greylisted, try again later")``,
        ``fail("END-OF-DATA", None)``.
        """
        self.faults.add(command, reply, times)

    def slow_down(self, seconds: float) -> None:
        """Put the server a network round trip of ``seconds`` away (see faults.latency)."""
        self.faults.latency = seconds

    def heal(self) -> None:
        """Remove every fault rule and added latency."""
        self.faults.clear()

    def reconfigure(self, **smtp: Any) -> None:
        """Restart on the same port with changed aiosmtpd/smtplab server options."""
        self._smtp.update(smtp)
        was_up = self.is_up
        self.down()
        if was_up:
            self.up()

    def disable(self, *extensions: str) -> None:
        """Stop offering ESMTP extensions, e.g. ``disable("PIPELINING", "SIZE")``."""
        self.reconfigure(**self._extension_options(extensions, on=False))

    def enable(self, *extensions: str) -> None:
        """Offer ESMTP extensions again (see :meth:`disable`)."""
        self.reconfigure(**self._extension_options(extensions, on=True))

    def _extension_options(self, names: Iterable[str], *, on: bool) -> dict[str, Any]:
        options: dict[str, Any] = {}
        ours = set(self._smtp.get("extensions", LAB_EXTENSIONS))
        for name in (n.upper() for n in names):
            if name in LAB_EXTENSIONS:
                ours = ours | {name} if on else ours - {name}
            elif name == "SIZE":
                options["data_size_limit"] = MAX_MESSAGE_SIZE if on else None
            elif name == "8BITMIME":
                options["decode_data"] = not on
            elif name == "SMTPUTF8":
                options["enable_SMTPUTF8"] = on
            elif name == "STARTTLS" and self._tls is not None:
                options["tls_context"] = self._tls if on else None
            else:
                raise ValueError(f"{name!r} cannot be switched on {self.host}")
        return {**options, "extensions": frozenset(ours)}

    def allow_plaintext_auth(self, allowed: bool = True) -> None:
        """Let AUTH run before TLS (off by default: RFC 8314 §3).

        Only for the lesson that base64 is not encryption: lab servers listen on
        127.0.0.1, so the secret never leaves this machine.
        """
        self.reconfigure(auth_require_tls=not allowed)

    def describe(self) -> dict[str, Any]:
        return server_listing(self.role, self.host, self.port, self.spec.domains)
