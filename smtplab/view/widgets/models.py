"""The state behind the smtplab widgets, kept apart from how it is drawn.

Theory of operation
-------------------
Each view in this package (the compose form, the transcript tabs, the mailbox
browser, the path drawing) is a thin ipywidgets layout over one model defined
here, as in the jupyter-widgets tutorial's password generator: a model is a
``traitlets.HasTraits`` object that holds the state, does the work by calling
the lab's *public* API (``lab.send``, ``lab.mailbox``) and announces every
change through its traits. Views only link their controls to traits and
re-render when a trait changes. So a model can be driven, and tested, with no
widget at all, and nothing in this package opens a socket or speaks SMTP.

Two kinds of thread write to models: the compose model's send thread (so the
notebook stays responsive while a message is on its way) and the lab's queue
workers, which report a :class:`~smtplab.record.journey.Journey`'s new steps through
``journey.on_step`` (the models that follow a journey are in
:mod:`~smtplab.view.widgets.journey_model`). Both only *assign traits*; the
observers that re-render widget values run on that thread, and ipywidgets syncs
those values to the browser from any thread. Nothing here prints, and nothing
calls ``display()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, HasTraits, Int, List, TraitType, Unicode, observe

from smtplab.protocol.message import InvalidInput
from smtplab.view.widgets.journey_model import JourneyModel, PathModel

if TYPE_CHECKING:
    from smtplab.lab import Lab
    from smtplab.lab.sendresult import SendResult
    from smtplab.mailstore.maildir import StoredMessage

# Fields of the compose form; an InvalidInput whose ``field`` is not one of
# them (a custom header's name, say) is shown beside the Send button.
FIELDS = ("from", "to", "cc", "bcc", "subject", "body", "attachment", "via")


def stopped_notice(lab: Lab) -> str | None:
    """Why a lab's widget can do nothing now, and how to start again; None while it runs.

    A widget outlives its lab (a notebook's last cell may stop it): instead of the
    KeyError a send would meet, the reader gets this sentence. ``Lab.stop`` empties
    ``lab.servers``, and a running lab always has servers.
    """
    if lab.servers:
        return None
    return (
        f"The lab {lab.name!r} is stopped, so nothing can be sent or read. To start again, "
        "run the cell that makes it (lab = Lab(…)), then lab.ui() for a new dashboard."
    )


@dataclass(frozen=True)
class SendOption:
    """A tick box on the compose form that becomes one keyword argument of ``lab.send``:
    when ticked, ``name=value`` is passed."""

    name: str
    label: str
    value: object
    tooltip: str


SEND_OPTIONS: tuple[SendOption, ...] = (
    SendOption(
        "notify",
        "NOTIFY (DSN)",
        ("SUCCESS", "FAILURE"),
        "Ask for a delivery status notification on success or failure (RFC 3461)",
    ),
)


@dataclass(frozen=True)
class Attachment:
    """A file to attach, as the reader uploaded it."""

    name: str
    content: bytes
    content_type: str = "application/octet-stream"

    def as_argument(self) -> tuple[str, bytes, str]:
        """The ``(filename, content, content_type)`` triple passed as ``attachments=[...]``."""
        return (self.name, self.content, self.content_type)


class ComposeModel(HasTraits):
    """What the reader typed into the compose form, and what happened when they sent it.

    ``send()`` runs ``lab.send`` in a background thread; ``sending`` is True
    meanwhile. Afterwards either ``result`` holds the SendResult or ``errors``
    maps a field (``"to"``, ``"subject"``…; ``"send"`` for anything else) to
    the message to show beside it.
    """

    sender = Unicode(help="From: one of the lab's users")
    to = Unicode(help="comma-separated addresses")
    cc = Unicode(help="comma-separated addresses")
    bcc = Unicode(help="comma-separated addresses")
    subject = Unicode()
    body = Unicode()
    via = Unicode(help='the lab host to submit to; "" lets the lab choose (its default route)')
    options = Dict(help="SendOption name -> ticked")
    attachments: List[Attachment] = List(help="Attachment objects")
    sending = Bool(False, read_only=True)
    errors = Dict(help="field -> message, from the last send")
    result: TraitType[SendResult | None, SendResult | None] = AnyTrait(
        None, help="the SendResult of the last successful call"
    )
    status = Unicode(help="one line about the last send")

    def __init__(self, lab: Lab, **kwargs: Any):
        super().__init__(**kwargs)
        self.lab = lab
        self.options = {o.name: bool(self.options.get(o.name)) for o in SEND_OPTIONS}
        if not self.sender and self.senders:
            self.sender = self.senders[0]
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    # -- what the form offers ------------------------------------------------------
    @property
    def senders(self) -> list[str]:
        return [user.address for user in self.lab.world.users]

    @property
    def servers(self) -> list[tuple[str, str]]:
        """``(host, role)`` of every lab server, in the lab's order."""
        return [(host, server.role) for host, server in self.lab.servers.items()]

    # -- sending -------------------------------------------------------------------
    def send_arguments(self) -> tuple[tuple[str, str, str, str], dict[str, Any]]:
        """The positional and keyword arguments for ``lab.send`` (InvalidInput if unusable)."""
        kwargs: dict[str, Any] = {"cc": self.cc, "bcc": self.bcc}
        if self.via:
            kwargs["via"] = self.via
        for option in SEND_OPTIONS:
            if self.options.get(option.name):
                kwargs[option.name] = option.value
        if self.attachments:
            kwargs["attachments"] = [a.as_argument() for a in self.attachments]
        return (self.sender, self.to, self.subject, self.body), kwargs

    def send_now(self) -> SendResult | None:
        """Send on this thread; return the SendResult, or None (then see ``errors``)."""
        self.errors = {}
        notice = stopped_notice(self.lab)
        if notice is not None:
            self.errors = {"send": notice}
            self.status = "Not sent: the lab is stopped."
            return None
        try:
            args, kwargs = self.send_arguments()
            result = self.lab.send(*args, **kwargs)
        except InvalidInput as error:
            self.errors = {error.field: error.message}
            self.status = "Not sent: please correct the field marked in red."
            return None
        except Exception as error:  # shown beside Send: a reader never sees a traceback
            self.errors = {"send": f"{type(error).__name__}: {error}"}
            self.status = "Not sent."
            return None
        accepted = sum(1 for o in result.outcomes if o.accepted)
        refused = len(result.outcomes) - accepted
        self.status = f"Sent via {result.server}: {accepted} accepted, {refused} refused."
        self.result = result
        return result

    def send(self) -> threading.Thread | None:
        """Start sending in a background thread; None if a send is already running."""
        with self._lock:
            if self.sending:
                return None
            self.set_trait("sending", True)
            self._idle.clear()
        self.errors = {}
        self.status = "Sending…"
        thread = threading.Thread(target=self._run, name="smtplab-compose-send", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            self.send_now()
        finally:
            with self._lock:
                self.set_trait("sending", False)
            self._idle.set()

    def wait(self, timeout: float = 30.0) -> SendResult | None:
        """Block until no send is running; return ``result``. TimeoutError past ``timeout``."""
        if not self._idle.wait(timeout):
            raise TimeoutError(f"still sending after {timeout} s")
        return self.result


class MailboxModel(HasTraits):
    """One lab user's mailbox, read again on :meth:`refresh`, and the message selected."""

    address = Unicode(help="whose mailbox")
    messages: List[StoredMessage] = List(help="StoredMessage objects, oldest first")
    selected = Int(-1, help="index into messages; -1 for none")
    error = Unicode()

    def __init__(self, lab: Lab, address: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.lab = lab
        self._lock = threading.RLock()  # the send thread and the lab's threads refresh too
        users = self.users
        self.address = address or (users[0] if users else "")
        self.refresh()

    @property
    def users(self) -> list[str]:
        return [user.address for user in self.lab.world.users]

    @property
    def message(self) -> StoredMessage | None:
        """The selected StoredMessage, or None."""
        if 0 <= self.selected < len(self.messages):
            return self.messages[self.selected]
        return None

    @observe("address")
    def _address_changed(self, change: dict[str, Any]) -> None:
        self.selected = -1
        self.refresh()

    def refresh(self) -> None:
        """Read the mailbox again; keep the selected message, else select the newest."""
        with self._lock:
            if not self.address:
                self.messages, self.selected = [], -1
                return
            current = self.message
            notice = stopped_notice(self.lab)
            if notice is not None:
                self.error = notice
                self.messages, self.selected = [], -1
                return
            try:
                messages = list(self.lab.mailbox(self.address))
            except (KeyError, OSError) as error:
                self.error = str(error.args[0] if error.args else error)
                self.messages, self.selected = [], -1
                return
            self.error = ""
            keys = [m.key for m in messages]
            self.messages = messages
            if current is not None and current.key in keys:
                self.selected = keys.index(current.key)
            else:
                self.selected = len(messages) - 1


class DashboardModel:
    """The models of a dashboard, wired together.

    A send shows its journey in the transcript and path views and switches the
    mailbox view to the first lab user it reached; a ``delivered`` step
    refreshes the mailbox.
    """

    def __init__(self, lab: Lab):
        self.lab = lab
        roles = {host: server.role for host, server in lab.servers.items()}
        roles.setdefault(lab.world.client_host, "client")
        self.compose = ComposeModel(lab)
        self.journey = JourneyModel(roles=roles)
        self.mailbox = MailboxModel(lab)
        self.path = PathModel(self.journey)
        self.compose.observe(self._sent, names="result")
        self.journey.observe(self._stepped, names="steps")

    def _sent(self, change: dict[str, Any]) -> None:
        result = change["new"]
        if result is None:
            return
        self.journey.show(result)
        users = set(self.mailbox.users)
        reached = [o.recipient.lower() for o in result.outcomes if o.accepted]
        target = next((r for r in reached if r in users), None)
        if target and target != self.mailbox.address:
            self.mailbox.address = target
        else:
            self.mailbox.refresh()

    def _stepped(self, change: dict[str, Any]) -> None:
        seen = {id(step) for step in change["old"] or ()}
        if any(step.kind == "delivered" and id(step) not in seen for step in change["new"]):
            self.mailbox.refresh()
