"""The module paths of smtplab 0.1, before the package was cut into layers, for one release.

Code written against 0.1 imported ``from smtplab.tlsca import LabSMTP`` or
``from smtplab.labdns import RecordStore``; those modules now live in layer folders (README, "How it
works"). This finder, appended to ``sys.meta_path`` by ``smtplab/__init__.py``, answers an
old path with a module that finds each name in the modules that took over its job, and
warns (DeprecationWarning) once per old module with where to import from instead. It only
answers names no real module has, so it never shadows one. It goes in smtplab 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence

#: Old module → the modules that hold its names now, first match wins.
MOVED: dict[str, tuple[str, ...]] = {
    "smtplab.authenticity": (
        "smtplab.senderauth.checks",
        "smtplab.senderauth.signatures",
        "smtplab.senderauth.lookups",
    ),
    "smtplab.client": ("smtplab.smtp.client",),
    "smtplab.clock": ("smtplab.protocol.clock",),
    "smtplab.compose": ("smtplab.protocol.message",),
    "smtplab.conversation": ("smtplab.smtp.conversation",),
    "smtplab.dovecot": ("smtplab.mailstore.dovecot", "smtplab.mailstore.dovecot_conf"),
    "smtplab.dsn": ("smtplab.protocol.dsn", "smtplab.protocol.dsn_params"),
    "smtplab.faults": ("smtplab.smtp.faults",),
    "smtplab.handlers": ("smtplab.roles.handlers",),
    "smtplab.journal": ("smtplab.record.recordings",),
    "smtplab.journey": ("smtplab.record.journey",),
    "smtplab.labauth": ("smtplab.senderauth.wiring",),
    "smtplab.labdns": ("smtplab.dns.server", "smtplab.dns.records"),
    "smtplab.maildir": ("smtplab.mailstore.maildir",),
    "smtplab.mx": ("smtplab.dns.route",),
    "smtplab.outbound": ("smtplab.queue.delivery", "smtplab.queue.settle"),
    "smtplab.pictures": ("smtplab.view.pictures",),
    "smtplab.printer": ("smtplab.cli.printer",),
    "smtplab.reader": ("smtplab.protocol.reader",),
    "smtplab.relaying": ("smtplab.roles.relaying",),
    "smtplab.replies": ("smtplab.protocol.replies",),
    "smtplab.retrieval": (
        "smtplab.mailstore.retrieval",
        "smtplab.mailstore.clients",
        "smtplab.record.retrieval",
    ),
    "smtplab.server": ("smtplab.smtp.session", "smtplab.smtp.controller", "smtplab.smtp.policy"),
    "smtplab.spamfilter": ("smtplab.senderauth.spam",),
    "smtplab.spool": ("smtplab.queue.spool",),
    "smtplab.tlsca": ("smtplab.tls.ca", "smtplab.tls.eavesdrop", "smtplab.smtp.client"),
    "smtplab.tlsrecords": ("smtplab.tls.records",),
    "smtplab.transcript": ("smtplab.record.transcript",),
    "smtplab.widgets": ("smtplab.view.widgets",),
    **{
        f"smtplab.widgets.{name}": (f"smtplab.view.widgets.{name}",)
        for name in ("compose", "dashboard", "mailbox_view", "models", "path", "transcript_view")
    },
    "smtplab.wire": ("smtplab.record.wirelog",),
}

#: Names that changed with the move: old name → new name.
RENAMED = {
    "WireJournal": "Recordings",
    "ServerReply": "SMTPReply",
    "END_OF_DATA": "AT_END_OF_DATA",  # the fault point (smtplab.faults, smtplab.server)
}


def forwarding(old: str, homes: Sequence[str]) -> types.ModuleType:
    """A module named ``old`` whose attributes are looked up in ``homes`` (PEP 562)."""
    module = types.ModuleType(old, f"Moved: import from {', '.join(homes)} instead.")
    module.__path__ = []  # a package, so that smtplab.widgets.compose is found as well

    def __getattr__(name: str) -> object:
        for home in homes:
            held = importlib.import_module(home)
            if hasattr(held, RENAMED.get(name, name)):
                return getattr(held, RENAMED.get(name, name))
        raise AttributeError(f"{old} had no {name!r} that {', '.join(homes)} still has")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED`, last on ``sys.meta_path``."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        homes = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved in smtplab 0.2: import from {' or '.join(homes)} (or from "
            "smtplab, for the names it exports); the old path goes in smtplab 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return forwarding(spec.name, homes)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module forwards every name it is asked for."""


def install() -> None:
    """Answer the old paths, after every real module (idempotent)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
