"""A canary for the private parts of aiosmtpd that smtplab/smtp/_aiosmtpd.py builds on.

``AiosmtpdSession`` and ``AiosmtpdController`` (smtplab/smtp/_aiosmtpd.py, the only
module of the lab that touches them; the last test here checks that) override,
call or read about twenty private members of aiosmtpd's ``SMTP`` and ``Controller``,
and depend on how aiosmtpd uses them (commands dispatched through
``self._smtp_methods.get``, replies written only by ``push``, ...).
pyproject.toml holds aiosmtpd to the tested minor series (``<1.5``); when that
bound is raised, these tests say precisely what changed and what in the lab
relies on it, before a behaviour test fails somewhere far away. They check
with ``inspect``: that each member exists, is a coroutine function or not,
takes the same parameters, and, where the lab depends on how aiosmtpd calls
it, that aiosmtpd's source still does so.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtpd
import aiosmtpd.smtp
import pytest
from aiosmtpd.controller import Controller, InetMixin
from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session

import smtplab
from smtplab.smtp._aiosmtpd import STOCK_REPLIES, aiosmtpd_hooks
from smtplab.smtp.session import RecordingSMTP

VERSION = f"aiosmtpd {aiosmtpd.__version__}"


def parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    """``(self, duration=, *args)``-style names: kinds and defaults, not annotations."""
    rendered = []
    for parameter in inspect.signature(function).parameters.values():
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(
            parameter.kind, ""
        )
        default = "=" if parameter.default is not parameter.empty else ""
        rendered.append(f"{prefix}{parameter.name}{default}")
    return tuple(rendered)


@dataclass(frozen=True)
class Method:
    """A method of aiosmtpd's that the lab overrides or calls, with its calling convention."""

    owner: type
    name: str
    coroutine: bool
    params: tuple[str, ...]
    lab: str  # what in the lab relies on it

    def __str__(self) -> str:
        return f"{self.owner.__name__}.{self.name}"


METHODS = [
    Method(
        SMTP,
        "_cb_client_connected",
        False,
        ("self", "reader", "writer"),
        "AiosmtpdSession._cb_client_connected wraps the reader's readuntil to keep each "
        "line as read (last_line): RecordingSMTP spots lines not ended by one CRLF",
    ),
    Method(
        SMTP,
        "_handle_client",
        True,
        ("self",),
        "AiosmtpdSession._handle_client awaits before_greeting() (the simulated latency)",
    ),
    Method(
        SMTP,
        "_getaddr",
        False,
        ("self", "arg"),
        "AiosmtpdSession._getaddr asks read_path(), which parses MAIL/RCPT paths by RFC "
        "5321's grammar and returns (address, rest), or (None, None)",
    ),
    Method(
        SMTP,
        "_reset_timeout",
        False,
        ("self", "duration="),
        "AiosmtpdSession._reset_timeout keeps one lazy idle timer in _timeout_handle",
    ),
    Method(
        SMTP,
        "_timeout_cb",
        False,
        ("self",),
        "AiosmtpdSession._timeout_cb calls idle_timeout(): 421 4.4.2 before closing",
    ),
    Method(
        SMTP,
        "_call_handler_hook",
        True,
        ("self", "command", "*args"),
        "AiosmtpdSession._call_handler_hook asks before_handler() first: end-of-DATA "
        "faults, MAIL/RCPT refusals before the handlers' hooks",
    ),
    Method(
        SMTP,
        "_create_envelope",
        False,
        ("self",),
        "AiosmtpdSession._create_envelope asks new_envelope() (a LabEnvelope, with DSN)",
    ),
    Method(
        SMTP,
        "push",
        True,
        ("self", "status"),
        "RecordingSMTP.push records every reply in the transcript",
    ),
    Method(
        SMTP,
        "handle_exception",
        True,
        ("self", "error"),
        "RecordingSMTP.handle_exception answers an unforeseen error with 451, never its text",
    ),
    Method(
        SMTP,
        "auth_PLAIN",
        True,
        ("self", "_", "args"),
        "AuthenticatingSession.auth_PLAIN (smtp/auth.py) checks the authzid (RFC 4616 §2)",
    ),
    Method(
        SMTP,
        "auth_LOGIN",
        True,
        ("self", "_", "args"),
        "AuthenticatingSession.auth_LOGIN (smtp/auth.py) sends Username:/Password:",
    ),
    Method(
        SMTP,
        "smtp_STARTTLS",
        True,
        ("self", "arg"),
        "RecordingSMTP.smtp_STARTTLS answers 503 5.5.1 inside TLS (RFC 3207 §4.2)",
    ),
    Method(
        Controller,
        "factory",
        False,
        ("self",),
        "LabController.factory builds RecordingSMTP sessions",
    ),
    Method(
        Controller,
        "_factory_invoker",
        False,
        ("self",),
        "AiosmtpdController.new_session calls it for each connection LabController accepts",
    ),
    Method(
        Controller,
        "_create_server",
        False,
        ("self",),
        "AiosmtpdController._create_server returns listen(), LabController's coroutine that "
        "binds port 0 and reads the port back",
    ),
    Method(
        Controller,
        "_trigger_server",
        False,
        ("self",),
        "AiosmtpdController._trigger_server opens the readiness probe from a known port",
    ),
    Method(
        Controller,
        "_cleanup",
        False,
        ("self",),
        "AiosmtpdController.stop resets the controller with it once the thread has ended",
    ),
]


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_each_method_the_lab_overrides_or_calls_keeps_its_calling_convention(method: Method):
    where = f"{VERSION}: {method.owner.__module__}.{method}"
    found = getattr(method.owner, method.name, None)
    assert found is not None, f"{where} is gone; the lab relies on it: {method.lab}"
    assert inspect.iscoroutinefunction(found) == method.coroutine, (
        f"{where} {'is no longer' if method.coroutine else 'is now'} a coroutine function; "
        f"the lab relies on it: {method.lab}"
    )
    assert parameters(found) == method.params, (
        f"{where} now takes ({', '.join(parameters(found))}), not "
        f"({', '.join(method.params)}); the lab relies on it: {method.lab}"
    )


class NoHooks:
    """A handler with no hooks: aiosmtpd's defaults everywhere."""


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop the instances below are built on; never run."""
    fresh = asyncio.new_event_loop()
    yield fresh
    fresh.close()


@pytest.fixture(scope="module")
def instances(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """A session and a controller as aiosmtpd builds them, before any connection."""
    return {
        "SMTP": SMTP(NoHooks(), timeout=7.5, loop=loop),
        "Controller": Controller(
            NoHooks(),
            hostname="127.0.0.1",
            port=0,
            loop=loop,
            server_hostname="mx.example.org",
            ident="ESMTP canary",
            data_size_limit=1000,
        ),
    }


@dataclass(frozen=True)
class Attribute:
    """A private attribute of a new session or controller that the lab reads or replaces."""

    owner: str  # "SMTP" or "Controller"
    name: str
    expected: str
    holds: Callable[[Any], bool]
    lab: str

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"


ATTRIBUTES = [
    Attribute(
        "SMTP",
        "_smtp_methods",
        "a dict of command name to bound smtp_* method",
        lambda value: (
            isinstance(value, dict) and getattr(value.get("MAIL"), "__name__", "") == "smtp_MAIL"
        ),
        "AiosmtpdSession.__init__ wraps it in GuardedCommands, whose get() runs every "
        "command through run_command()",
    ),
    Attribute(
        "SMTP",
        "_auth_require_tls",
        "the auth_require_tls= argument (True by default)",
        lambda value: value is True,
        "AiosmtpdSession.tls_before_auth, read by RecordingSMTP.requires_tls_for_auth: "
        "MAIL before STARTTLS on 587 gets 530 5.7.0 Must issue a STARTTLS command first",
    ),
    Attribute(
        "SMTP",
        "_timeout_duration",
        "the timeout= argument (7.5)",
        lambda value: value == 7.5,
        "AiosmtpdSession._reset_timeout sets its deadline from it",
    ),
    Attribute(
        "SMTP",
        "_timeout_handle",
        "None before a connection (then an asyncio.TimerHandle)",
        lambda value: value is None,
        "AiosmtpdSession._reset_timeout keeps its timer there, which connection_lost cancels",
    ),
    Attribute(
        "SMTP",
        "_handler_coroutine",
        "None before a connection (then the _handle_client task)",
        lambda value: value is None,
        "AiosmtpdSession.cancel_greeting cancels it: RecordingSMTP.connection_made refuses "
        "a session over the limit unheard",
    ),
    Attribute(
        "SMTP",
        "command_size_limit",
        "an int (512)",
        lambda value: isinstance(value, int),
        "RecordingSMTP.__init__ sets its own per-session limit, CRLF included",
    ),
    Attribute(
        "SMTP",
        "command_size_limits",
        "a mapping of command to its line limit",
        lambda value: isinstance(value, Mapping),
        "RecordingSMTP replaces aiosmtpd's shared dict with its own and adds DSN's allowances",
    ),
    Attribute(
        "SMTP",
        "local_part_limit",
        "an int (0: no limit)",
        lambda value: isinstance(value, int),
        "RecordingSMTP.read_path applies it as aiosmtpd's _getaddr does",
    ),
    Attribute(
        "SMTP",
        "_closed",
        "an asyncio.Future (asyncio.StreamReaderProtocol's), done when the stream is closed",
        lambda value: isinstance(value, asyncio.Future),
        "AiosmtpdSession.connection_lost reads its exception, so none is left unretrieved",
    ),
    Attribute(
        "Controller",
        "_thread",
        "None before start() (then the server's thread)",
        lambda value: value is None,
        "AiosmtpdController.stop takes it and joins it for at most stop_deadline seconds",
    ),
    Attribute(
        "Controller",
        "SMTP_kwargs",
        "the session's keyword arguments, server_hostname passed as hostname",
        lambda value: (
            value.get("hostname") == "mx.example.org"
            and value.get("ident") == "ESMTP canary"
            and value.get("data_size_limit") == 1000
        ),
        "LabController.factory passes them on to RecordingSMTP",
    ),
]


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=str)
def test_each_attribute_the_lab_reads_or_replaces_is_still_there(
    attribute: Attribute, instances: dict[str, Any]
):
    where = f"{VERSION}: {attribute.owner}().{attribute.name}"
    instance = instances[attribute.owner]
    assert hasattr(instance, attribute.name), f"{where} is gone; the lab: {attribute.lab}"
    value = getattr(instance, attribute.name)
    assert attribute.holds(value), (
        f"{where} is {value!r}, not {attribute.expected}; the lab: {attribute.lab}"
    )


@dataclass(frozen=True)
class Source:
    """How aiosmtpd's own code uses a member: a pattern its source must still match."""

    owner: type
    name: str
    pattern: str
    says: str
    lab: str

    def __str__(self) -> str:
        return f"{self.owner.__name__}.{self.name}: {self.says}"


Q = r"""['"]"""  # either quote
SOURCES = [
    Source(
        SMTP,
        "_handle_client",
        r"self\._smtp_methods\.get\(\s*command\s*\)",
        "dispatches each command through self._smtp_methods.get(command)",
        "GuardedCommands.get runs every command through run_command (RecordingSMTP's: "
        "CRLF-only lines, NUL, fault rules)",
    ),
    Source(
        SMTP,
        "_handle_client",
        r"self\._reader\.readuntil\(\s*\)",
        "reads command lines with self._reader.readuntil() (up to LF)",
        "AiosmtpdSession._cb_client_connected keeps lines read up to LF as last_line",
    ),
    Source(
        SMTP,
        "smtp_DATA",
        rf"self\._reader\.readuntil\(\s*b{Q}\\r\\n{Q}\s*\)",
        "reads DATA lines with self._reader.readuntil(b'\\r\\n')",
        "AiosmtpdSession._cb_client_connected leaves lines read up to CRLF alone",
    ),
    Source(
        SMTP,
        "_cb_client_connected",
        r"self\._reader\s*=\s*reader",
        "keeps the reader it is given as self._reader",
        "AiosmtpdSession._cb_client_connected wraps that reader's readuntil; "
        "AiosmtpdSession.reader hands it to RecordingSMTP's AUTH exchanges",
    ),
    Source(
        SMTP,
        "_handle_client",
        r"self\.command_size_limits\[\s*command\s*\].*?self\.command_size_limit\b.*?"
        r"len\(\s*line\s*\)\s*>",
        "limits a line (without its CRLF) by command_size_limits[command] after EHLO, "
        "else command_size_limit",
        "RecordingSMTP.__init__ sets both per session, counting the CRLF (RFC 5321 §4.5.3.1.4)",
    ),
    Source(
        SMTP,
        "smtp_EHLO",
        rf"self\.command_size_limits\[\s*{Q}MAIL{Q}\s*\]\s*\+=",
        "adds SIZE's and SMTPUTF8's allowances to command_size_limits['MAIL'] at every EHLO",
        "RecordingSMTP.smtp_EHLO clears the limits first, then adds DSN's (RFC 3461 §4)",
    ),
    Source(
        SMTP,
        "smtp_EHLO",
        rf"_call_handler_hook\(\s*{Q}EHLO{Q}\s*,\s*hostname\s*,\s*response\s*\)",
        "hands the EHLO response lines to a 5-argument handle_EHLO hook and sends its result",
        "RoleHandler.handle_EHLO (smtplab/roles/handlers.py) edits those lines: AUTH, "
        "PIPELINING, DSN",
    ),
    Source(
        SMTP,
        "smtp_MAIL",
        rf"_call_handler_hook\(\s*{Q}MAIL{Q}\s*,\s*address\s*,",
        "calls the MAIL hook with the address first",
        "RecordingSMTP.before_handler reads the address as args[0] (RecordingSMTP._refuse)",
    ),
    Source(
        SMTP,
        "smtp_RCPT",
        rf"_call_handler_hook\(\s*{Q}RCPT{Q}\s*,\s*address\s*,",
        "calls the RCPT hook with the address first",
        "RecordingSMTP.before_handler reads the address as args[0] (RecordingSMTP._refuse)",
    ),
    Source(
        SMTP,
        "smtp_DATA",
        rf"_call_handler_hook\(\s*{Q}DATA{Q}\s*\)",
        "calls the DATA hook once the data is in",
        "RecordingSMTP.before_handler injects end-of-DATA faults and restarts the timer",
    ),
    Source(
        SMTP,
        "smtp_MAIL",
        r"self\._getaddr\(\s*arg\s*\)",
        "parses the reverse-path with self._getaddr(arg)",
        "AiosmtpdSession._getaddr (RecordingSMTP.read_path: RFC 5321 §4.1.2's grammar)",
    ),
    Source(
        SMTP,
        "smtp_RCPT",
        r"self\._getaddr\(\s*arg\s*\)",
        "parses the forward-path with self._getaddr(arg)",
        "AiosmtpdSession._getaddr (RecordingSMTP.read_path: RFC 5321 §4.1.2's grammar)",
    ),
    Source(
        SMTP,
        "_set_post_data_state",
        r"self\.envelope\s*=\s*self\._create_envelope\(\s*\)",
        "makes each new envelope with self._create_envelope()",
        "AiosmtpdSession._create_envelope (LabEnvelope, with DSN options)",
    ),
    Source(
        SMTP,
        "connection_made",
        r"self\._reset_timeout\(\s*\)",
        "starts the idle timer with self._reset_timeout()",
        "AiosmtpdSession._reset_timeout",
    ),
    Source(
        SMTP,
        "connection_made",
        r"self\._handler_coroutine\s*=\s*self\.loop\.create_task\(\s*self\._handle_client\(\s*\)",
        "starts self._handle_client() as the task self._handler_coroutine",
        "AiosmtpdSession.cancel_greeting cancels it to refuse a session over the limit "
        "(421 4.7.0) without a greeting",
    ),
    Source(
        SMTP,
        "connection_lost",
        r"self\._timeout_handle\.cancel\(\s*\)",
        "cancels self._timeout_handle",
        "AiosmtpdSession._reset_timeout keeps its one timer there",
    ),
    Source(
        Controller,
        "_run",
        r"self\._create_server\(\s*\).*?run_until_complete\(",
        "runs what self._create_server() returns with loop.run_until_complete",
        "AiosmtpdController._create_server returns the listen() coroutine",
    ),
    Source(
        Controller,
        "start",
        r"self\._trigger_server\(\s*\)",
        "probes the server with self._trigger_server() once it listens",
        "AiosmtpdController._trigger_server opens that probe from a port it knows first "
        "(is_probe): after a restart a client may come first",
    ),
    Source(
        InetMixin,
        "_trigger_server",
        r"_server_to_client_ssl_ctx\(\s*self\.ssl_context\s*\)",
        "wraps the readiness probe in a client context made from self.ssl_context",
        "AiosmtpdController._trigger_server probes as aiosmtpd does, with "
        "_server_to_client_ssl_ctx on implicit-TLS ports (465, 993)",
    ),
    Source(
        Controller,
        "start",
        r"self\._thread\s*=\s*threading\.Thread\(\s*target\s*=\s*self\._run",
        "runs the server's loop in the thread self._thread",
        "AiosmtpdController.stop joins self._thread for at most stop_deadline seconds",
    ),
    Source(
        Controller,
        "_run",
        r"run_forever\(\s*\).*?self\.server\.close\(\s*\).*?self\.loop\.close\(\s*\)",
        "closes the server and the loop once the loop has stopped",
        "LabController.shut_down stops the loop last, for _run to close the server",
    ),
]


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_aiosmtpd_still_uses_each_member_the_way_the_lab_assumes(source: Source):
    code = inspect.getsource(getattr(source.owner, source.name))
    assert re.search(source.pattern, code, re.DOTALL), (
        f"{VERSION}: {source.owner.__name__}.{source.name} no longer {source.says}; "
        f"the lab relies on it: {source.lab}"
    )


def test_replies_are_written_only_by_push():
    """RecordingSMTP.push records the server's side of every transcript: no other path."""
    module = inspect.getsource(aiosmtpd.smtp)
    push = inspect.getsource(SMTP.push)
    writes = re.findall(r"\.write\(", module)
    assert len(writes) == len(re.findall(r"\.write\(", push)) == 1, (
        f"{VERSION}: aiosmtpd.smtp writes to the wire outside SMTP.push ({len(writes)} "
        "writes); RecordingSMTP.push would miss those replies in the transcript"
    )


def test_the_stock_replies_the_lab_rewrites_are_still_aiosmtpds():
    """smtplab.smtp._aiosmtpd.STOCK_REPLIES answers some of aiosmtpd's replies differently."""
    code = inspect.getsource(aiosmtpd.smtp)
    for (_command, stock), ours in STOCK_REPLIES.items():
        assert stock in code, (
            f"{VERSION}: aiosmtpd.smtp no longer says {stock!r}; RecordingSMTP.push would "
            f"not turn it into {ours()!r} ({ours.rfc})"
        )


def test_sessions_find_commands_mechanisms_and_hooks_only_by_names_the_lab_lists():
    """Sessions and handlers (ListsOnlyHooks) answer dir() with aiosmtpd_hooks(), which keeps only
    some names; SMTP.__init__ must look for nothing else (it runs dir() on both)."""
    code = inspect.getsource(SMTP.__init__)
    prefixes = set(re.findall(r"\.startswith\(\s*['\"](\w+)['\"]\s*\)", code))
    assert prefixes, f"{VERSION}: SMTP.__init__ no longer finds smtp_*/auth_*/handle_* names"
    probe = type("Probe", (), {f"{prefix}probe": None for prefix in prefixes})
    hidden = sorted(p for p in prefixes if f"{p}probe" not in aiosmtpd_hooks(probe))
    assert not hidden, (
        f"{VERSION}: SMTP.__init__ now also looks for attributes starting with {hidden}, "
        "which aiosmtpd_hooks (smtplab/smtp/_aiosmtpd.py) hides from dir() of sessions and "
        "handlers"
    )


def test_the_lab_session_offers_only_its_own_commands_and_mechanisms():
    """aiosmtpd takes every ``auth_*`` attribute of a session for an AUTH mechanism (and
    every ``smtp_*`` for a command): a hook named so would be offered to clients (an
    ``auth_require_tls`` property once made EHLO say ``AUTH LOGIN PLAIN require_tls``)."""
    hooks = aiosmtpd_hooks(RecordingSMTP)
    assert [name for name in hooks if name.startswith("auth_")] == ["auth_LOGIN", "auth_PLAIN"]
    lab_commands = {name for name in hooks if name.startswith("smtp_")} - set(dir(SMTP))
    assert lab_commands == set(), f"commands aiosmtpd does not have: {sorted(lab_commands)}"
    assert [name for name in hooks if name.startswith("handle_")] == ["handle_exception"]


def test_session_and_envelope_still_carry_what_the_handlers_read(
    loop: asyncio.AbstractEventLoop,
):
    """smtplab/roles/handlers.py reads these public attributes in its hooks."""
    session, envelope = Session(loop), Envelope()
    for name in ("host_name", "extended_smtp", "ssl", "authenticated", "peer", "auth_data"):
        assert hasattr(session, name), (
            f"{VERSION}: Session.{name} is gone (smtplab/roles/handlers.py)"
        )
    for name in (
        "mail_from",
        "mail_options",
        "rcpt_tos",
        "rcpt_options",
        "original_content",
        "smtp_utf8",
    ):
        assert hasattr(envelope, name), f"{VERSION}: Envelope.{name} is gone (smtplab)"
    assert LoginPassword(b"alice", b"pw").login == b"alice"


#: Every private name of aiosmtpd's that the canary above watches, and those its patterns read.
PRIVATE_NAMES = sorted(
    {m.name for m in METHODS}
    | {a.name for a in ATTRIBUTES}
    | {s.name for s in SOURCES}
    | {name for s in SOURCES for name in re.findall(r"\\\.(_[a-z]\w*)", s.pattern)}
    | {"_server_to_client_ssl_ctx"}
)
PRIVATE_NAMES = [name for name in PRIVATE_NAMES if name.startswith("_") and name[1] != "_"]
#: Names so common that the lab's own threads and printers use them too (``self._thread``):
#: looked for only in smtplab/smtp/, where the sessions and controllers are.
COMMON_NAMES = {"_run", "_thread", "_closed"}
PACKAGE = Path(smtplab.__file__).parent
DOOR = PACKAGE / "smtp" / "_aiosmtpd.py"


def test_only_the_door_module_touches_aiosmtpds_private_names():
    """smtplab/smtp/_aiosmtpd.py is the one place an aiosmtpd upgrade can break silently."""
    assert {"_smtp_methods", "_getaddr", "_trigger_server", "_reader"} <= set(PRIVATE_NAMES)
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if module == DOOR:
            continue
        in_smtp = module.parent.name == "smtp"
        text = module.read_text()
        for name in PRIVATE_NAMES:
            if name in COMMON_NAMES and not in_smtp:
                continue
            pattern = rf"(?:\.|\bdef\s+|['\"]){re.escape(name)}\b"
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{module.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not found, (
        "aiosmtpd's private names outside smtplab/smtp/_aiosmtpd.py (give it a hook there, "
        f"with a comment and a canary test): {found}"
    )
