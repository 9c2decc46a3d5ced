"""Building a message (smtplab/protocol/message.py): lab.send refuses headers and
parameters that break RFC 5322 or could not be sent, with InvalidInput naming the field,
before any connection is opened. docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import pytest
from peers.smtp import RECIPIENT, SENDER

from smtplab import InvalidInput, Lab

pytestmark = pytest.mark.hardening


# -- lab.send input --------------------------------------------------------------------------------
BAD_HEADERS = [
    # (headers=, why)
    ({"Bcc: carol@example.org, X-Y": "v"}, "a colon in the name: a visible Bcc line"),
    ({"X Bad": "v"}, "a space in the name"),
    ({"": "v"}, "an empty name"),
    ({"X-Ü": "v"}, "a name that is not US-ASCII"),
    ({"X-\x7f": "v"}, "DEL in the name"),
    ({"Subject:": "two"}, "a second Subject behind a colon"),
    ({"Subject ": "two"}, "a second Subject behind a space"),
    ({"subject": "two"}, "a second Subject in other case"),
    ({"FROM": "eve@example.net"}, "a second From"),
    ({"Date": "Mon, 2 Nov 2026 09:00:00 +0000"}, "a second Date"),
    ({"Message-ID": "<x@example.com>"}, "a second Message-ID"),
    ({"To": "eve@example.net"}, "To: is what recipients= writes"),
    ({"Cc": "eve@example.net"}, "Cc: is what cc= writes"),
    ({"Bcc": "eve@example.net"}, "a Bcc: line every recipient would see"),
    ({"Reply-To": "a@example.com", "reply-to": "b@example.com"}, "two Reply-To"),
    ({"References": "<a@x>", "REFERENCES": "<b@x>"}, "two References"),
    ({"Content-Type": "text/html"}, "MIME headers come from the body and attachments"),
    ({"MIME-Version": "2.0"}, "MIME headers come from the body and attachments"),
    ({"X-Tag": "a\u2028b"}, "a line separator in a value"),
    ({"X-Tag": "a\x00b"}, "NUL in a value"),
    ({"X-Tag": "a\udcffb"}, "a lone surrogate in a value"),
    ({"X-Tag": 7}, "a value that is not text"),
]


@pytest.fixture(scope="module")
def input_lab():
    with Lab(name="hardening-ii-input") as running:
        yield running


def refused_before_sending(lab: Lab, field: str, **send) -> InvalidInput:
    """lab.send(...) raises InvalidInput naming ``field``, and no connection was opened."""
    before = len(lab.journal.logs())
    arguments = {"sender": SENDER, "recipients": RECIPIENT, "subject": "Hi", "body": "x", **send}
    with pytest.raises(InvalidInput) as refused:
        lab.send(**arguments)
    assert refused.value.field == field, refused.value
    assert len(lab.journal.logs()) == before
    return refused.value


@pytest.mark.parametrize(("headers", "why"), BAD_HEADERS, ids=[why for _, why in BAD_HEADERS])
def test_a_header_name_or_value_that_breaks_rfc_5322_is_refused_before_sending(
    input_lab, headers, why
):
    """RFC 5322 §2.2 (a field name is printable US-ASCII but ':'; no line breaks in a body)
    and §3.6 (at most one From, Subject, Date, Message-ID, To, Cc, Bcc, Reply-To, References)."""
    refused = refused_before_sending(input_lab, "headers", headers=headers)
    assert "Traceback" not in str(refused), why


def test_extra_headers_that_follow_rfc_5322_are_sent_once_each(input_lab):
    """RFC 5322 §3.6: optional fields, Reply-To and References once each, in the stored copy."""
    headers = {"Reply-To": "carol@example.org", "References": "<a@x>", "X-Tag": "kept"}
    result = input_lab.send(
        SENDER, RECIPIENT, "One subject", "x", headers=headers, via="mx1.example.org"
    )
    assert result.ok
    stored = input_lab.mailbox(RECIPIENT)[-1].message
    for name, value in [*headers.items(), ("Subject", "One subject")]:
        assert stored.get_all(name) == [value], name


@pytest.mark.parametrize(
    ("field", "send"),
    [
        ("notify", {"notify": ["SUCCESS\r\nRSET"]}),
        ("notify", {"notify": ["SUCCESS ORCPT=rfc822;eve@example.net"]}),
        ("notify", {"notify": ["SUCC\udcffESS"]}),
        ("ret", {"ret": "FULL\r\nRSET"}),
        ("ret", {"ret": "HDRS ENVID=x"}),
        ("to", {"recipients": "b\udcffob@example.org"}),
        ("to", {"recipients": "b\x00ob@example.org"}),
        ("to", {"recipients": [None]}),
        ("cc", {"cc": "c\ud800@example.org"}),
        ("bcc", {"bcc": "carol@example.org\u2028"}),
        ("from", {"sender": "al\udcffice@example.com"}),
        ("subject", {"subject": "a\u2028b"}),
        ("subject", {"subject": "a\x0bb"}),
        ("subject", {"subject": "a\udcffb"}),
        ("subject", {"subject": None}),
        ("body", {"body": "a\udcffb"}),
        ("body", {"body": b"bytes"}),
        ("password", {"password": "\udcff"}),
        ("attachment", {"attachments": [("f\udcff.txt", b"x", "text/plain")]}),
        ("attachment", {"attachments": [("f\u2028.txt", b"x", "text/plain")]}),
        ("attachment", {"attachments": [("f.txt", b"x", "text/pl\r\nain")]}),
        ("attachment", {"attachments": [("f.txt", "not bytes", "text/plain")]}),
        ("via", {"via": "nowhere.example"}),
        ("message", {"message": "a str is not a message"}),
    ],
)
def test_every_send_parameter_refuses_what_it_cannot_send_with_invalid_input(
    input_lab, field, send
):
    """Bad input gets InvalidInput naming the field, never ValueError or UnicodeEncodeError
    from deep inside smtplib or email (RFC 3461 §4.1, §4.3: NOTIFY and RET are one word each;
    RFC 5322 §2.2: no line breaks in a header; a lone surrogate cannot be encoded)."""
    refused_before_sending(input_lab, field, **send)
