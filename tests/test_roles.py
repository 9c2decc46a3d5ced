"""The ROLES table (smtplab.world) says what each role's server does: check it against
running servers, one fact at a time, on every role a lab can start."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
from test_relaying import relay_world

from smtplab import Lab
from smtplab.smtp.client import RecordingClient
from smtplab.world import (
    CLIENT_HOST,
    LOOPBACK,
    MAILSTORE_ROLES,
    ROLES,
    SMTP_ROLES,
    mailstore_role,
)

SENDER, PASSWORD, RECIPIENT = "alice@example.com", "alice-lab-pw", "bob@example.org"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(
        relay_world(),  # its backup MX is a relay: all four SMTP roles
        name="test-roles",
        retrieval="auto",
    ) as running:
        yield running


#: The server each role is tested on: one that takes mail for RECIPIENT.
HOSTS = {
    "mx": "mx1.example.org",
    "submission": "smtp.example.com",
    "submissions": "smtps.example.com",
    "relay": "mx2.example.org",
}


def server_of(lab: Lab, role: str) -> tuple[str, int]:
    host = HOSTS[role]
    assert lab.server(host).role == role
    return host, lab.server(host).port


def client_for(lab: Lab, role: str) -> RecordingClient:
    """The lab's own client, connected to the role's server (TLS first where implicit)."""
    host, port = server_of(lab, role)
    implicit = lab.client_tls if ROLES[role].implicit_tls else None
    client = RecordingClient(host, client_name=CLIENT_HOST, implicit_tls=implicit)
    client.connect(host, port)
    return client


def greeting(port: int, tls: ssl.SSLContext | None, host: str) -> bytes:
    """The first bytes a server sends, on a plain socket or after a TLS handshake."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as plain:
        if tls is None:
            return plain.recv(100)
        with tls.wrap_socket(plain, server_hostname=host) as wrapped:
            return wrapped.recv(100)


# -- the table on its own --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ROLES))
def test_each_role_is_consistent(name):
    role = ROLES[name]
    assert role.name == name
    assert not (role.starttls_required and not role.starttls_offered)
    assert not (role.auth_required and not role.auth_offered)
    assert not (role.implicit_tls and role.starttls_offered)  # TLS already: no STARTTLS
    assert not (role.final_delivery and role.forwards)


def test_the_roles_split_into_smtp_and_mailstore_with_one_default():
    assert set(SMTP_ROLES) | set(MAILSTORE_ROLES) == set(ROLES)
    assert not set(SMTP_ROLES) & set(MAILSTORE_ROLES)
    assert SMTP_ROLES == ("mx", "submission", "submissions", "relay")
    assert MAILSTORE_ROLES == ("imap", "imaps", "pop3", "pop3s")  # the port plan's order
    assert [r for r in ROLES if ROLES[r].client_default] == ["submission"]


@pytest.mark.parametrize(
    ("protocol", "implicit", "expected"),
    [
        ("imap", False, "imap"),
        ("imap", True, "imaps"),
        ("pop3", False, "pop3"),
        ("pop3", True, "pop3s"),
    ],
)
def test_mailstore_role_names_the_listener(protocol, implicit, expected):
    assert mailstore_role(protocol, implicit_tls=implicit) == expected


# -- against running servers -----------------------------------------------------------------


@pytest.mark.parametrize("name", SMTP_ROLES)
def test_implicit_tls_roles_speak_tls_first_and_the_others_plain_smtp(lab, name):
    host, port = server_of(lab, name)
    tls = lab.client_tls if ROLES[name].implicit_tls else None
    assert greeting(port, tls, host).startswith(b"220 ")


@pytest.mark.parametrize("name", SMTP_ROLES)
def test_ehlo_offers_starttls_and_auth_as_the_table_says(lab, name):
    role = ROLES[name]
    with client_for(lab, name) as client:
        client.ehlo()
        assert client.has_extn("starttls") == role.starttls_offered
        before_tls = client.has_extn("auth")
        if role.starttls_offered:
            client.starttls(context=lab.client_tls)
            client.ehlo()
        assert client.has_extn("auth") == role.auth_offered
        assert before_tls == (role.auth_offered and not role.starttls_required)


@pytest.mark.parametrize("name", SMTP_ROLES)
def test_mail_needs_auth_and_tls_where_the_table_says(lab, name):
    role = ROLES[name]
    with client_for(lab, name) as client:
        client.ehlo()
        code, _ = client.mail(SENDER)
        assert (code == 530) == (role.auth_required or role.starttls_required)
        client.rset()
        if role.starttls_offered:
            client.starttls(context=lab.client_tls)
            client.ehlo()
        code, _ = client.mail(SENDER)
        assert (code == 530) == role.auth_required
        if role.auth_required:
            client.rset()
            client.login(SENDER, PASSWORD)
            assert client.mail(SENDER)[0] == 250


@pytest.mark.parametrize("name", SMTP_ROLES)
def test_final_delivery_stores_and_forwarding_queues(lab, name):
    role = ROLES[name]
    host, _ = server_of(lab, name)
    before = len(lab.mailbox(RECIPIENT))
    lab.hold()  # what the server itself does with it, not what its queue does later
    try:
        result = lab.send(SENDER, RECIPIENT, f"to {name}", "x", via=host)
        assert result.ok
        stored = len(lab.mailbox(RECIPIENT)) - before
        assert stored == (1 if role.final_delivery else 0)
        queued = [s for s in result.journey.steps if s.kind == "queued" and s.host == host]
        assert bool(queued) == role.forwards
    finally:
        lab.release()
    lab.settle()
    assert result.journey.outcome(RECIPIENT) == "delivered"


@pytest.mark.parametrize("name", MAILSTORE_ROLES)
def test_mailstore_listeners_speak_tls_first_where_the_table_says(lab, name):
    if lab.mailstore is None:
        pytest.skip(f"no POP3/IMAP here: {lab.mailstore_unavailable}")
    listener = lab.mailstore.listeners[name]
    assert listener.implicit_tls == ROLES[name].implicit_tls
    tls = lab.client_tls if ROLES[name].implicit_tls else None
    expected = b"* OK" if ROLES[name].protocol == "imap" else b"+OK"
    assert greeting(listener.port, tls, listener.host).startswith(expected)


@pytest.mark.parametrize("name", [r for r in MAILSTORE_ROLES if not ROLES[r].implicit_tls])
def test_plain_mailstore_listeners_offer_starttls_where_the_table_says(lab, name):
    if lab.mailstore is None:
        pytest.skip(f"no POP3/IMAP here: {lab.mailstore_unavailable}")
    listener = lab.mailstore.listeners[name]
    imap = ROLES[name].protocol == "imap"
    ask, end, keyword = (
        (b"a CAPABILITY\r\n", b"a OK", b"STARTTLS")
        if imap
        else (b"CAPA\r\n", b"\r\n.\r\n", b"STLS")
    )
    with socket.create_connection((LOOPBACK, listener.port), timeout=10) as plain:
        plain.recv(1000)  # the greeting
        plain.sendall(ask)
        answer = b""
        while end not in answer:
            chunk = plain.recv(1000)
            assert chunk, answer
            answer += chunk
    assert (keyword in answer) == ROLES[name].starttls_offered
