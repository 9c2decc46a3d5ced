"""Reading stored mail (smtplab/protocol/reader.py): hostile MIME never makes a mailbox
unreadable; such a message is listed as "could not be displayed" with its size.
docs/hardening.md lists the case with its test id.
"""

from __future__ import annotations

import tracemalloc

import pytest
from peers.smtp import RECIPIENT, SENDER

from smtplab import Lab, UnreadableMessage

pytestmark = pytest.mark.hardening


# -- hostile MIME ----------------------------------------------------------------------------------
def hostile_head(tag: str, subject: bytes = b"") -> bytes:
    return (
        b"From: eve@example.net\r\nTo: bob@example.org\r\n"
        + f"Message-ID: <{tag}@hostile.example.net>\r\n".encode()
        + (b"Subject: " + subject + b"\r\n" if subject else b"")
    )


def nested_multipart(depth: int) -> bytes:
    opening = [
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (d, d)
        for d in range(depth)
    ]
    closing = [b"--b%d--\r\n" % d for d in reversed(range(depth))]
    return (
        hostile_head("nested", b"nested")
        + b"MIME-Version: 1.0\r\n"
        + b"".join(opening)
        + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
        + b"".join(closing)
    )


def encoded_words(count: int) -> bytes:
    lines = [b" ".join([b"=?utf-8?q?a?="] * 60) for _ in range(count // 60)]
    return hostile_head("words") + b"Subject: " + b"\r\n ".join(lines) + b"\r\n\r\nx\r\n"


def folded_subject(lines: int) -> bytes:
    fold = b"".join(b" " + b"w " * 490 + b"\r\n" for _ in range(lines))
    return hostile_head("folded") + b"Subject: folded\r\n" + fold + b"\r\nx\r\n"


def many_parts(count: int) -> bytes:
    body = b"".join(b"--B\r\n\r\n%d\r\n" % n for n in range(count)) + b"--B--\r\n"
    return (
        hostile_head("parts", b"parts")
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + body
    )


def many_headers(count: int) -> bytes:
    fields = b"".join(b"X-H: %d\r\n" % n for n in range(count))
    return hostile_head("headers", b"headers") + fields + b"\r\nx\r\n"


HOSTILE = {
    "nested 1000 deep": (nested_multipart(1000), "MIME parts nested more than 50 deep"),
    "100k encoded words": (encoded_words(100_000), "a header section of more than"),
    "a Subject folded over 1000 lines": (folded_subject(1000), "a header section of more than"),
    "300k parts": (many_parts(300_000), "more than 200 MIME parts"),
    "300k header fields": (many_headers(300_000), "a header section of more than"),
}


@pytest.mark.slow
def test_hostile_mime_accepted_by_the_mx_never_makes_the_mailbox_unreadable():
    """The MX accepts them, as a real MX does (RFC 5321 §4.5.3.1.7: only the size is its
    business); reading, listing and rendering stay bounded: each hostile message shows as
    "could not be displayed: ..." with its size, its bytes stay in .raw, and the messages
    around it read as usual (before: RecursionError, MemoryError past 5 GB, minutes)."""
    from smtplab.view.widgets import mailbox_view

    with Lab(name="hostile-mime", retrieval="auto") as lab:
        ordinary = b"From: alice@example.com\r\nSubject: before\r\n\r\nhello\r\n"
        assert lab.send(SENDER, RECIPIENT, message=ordinary, via="mx1.example.org").ok
        for name, (raw, _) in HOSTILE.items():
            result = lab.send(SENDER, RECIPIENT, message=raw, via="mx1.example.org")
            assert result.ok, (name, result.summary())
        after = ordinary.replace(b"before", b"after")
        assert lab.send(SENDER, RECIPIENT, message=after, via="mx1.example.org").ok
        tracemalloc.start()
        try:
            mailbox = lab.mailbox(RECIPIENT)
            listing, page = repr(mailbox), mailbox._repr_html_()
            view = mailbox_view(lab, RECIPIENT)
            for index in range(len(mailbox)):
                view.model.selected = index
                assert view.headers.value and view.source.value
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 2**20, f"peak {peak / 2**20:.0f} MiB"
        first, *hostile, last = mailbox
        assert (first.subject, first.body, last.subject) == ("before", "hello\n", "after")
        for message, (name, (raw, why)) in zip(hostile, HOSTILE.items(), strict=True):
            assert message.problem is not None and message.problem.startswith(why), name
            assert message.raw.endswith(raw.replace(b"\r\n", b"\n")), name
            assert (message.subject, message.sender, message.body) == ("", "", ""), name
            with pytest.raises(UnreadableMessage, match=f"{len(message.raw)} bytes"):
                message.message.items()
            notice = f"could not be displayed: {message.problem} ({len(message.raw)} bytes"
            assert (
                notice in listing and notice in view.messages.options[hostile.index(message) + 1][0]
            )
        assert listing.count("could not be displayed") == len(HOSTILE)
        assert page.count("could not be displayed") == len(HOSTILE)
        if lab.mailstore is not None:  # the same messages over IMAP (RetrievedMessage)
            fetched = lab.fetch(RECIPIENT)
            assert fetched.ok and fetched.summary().count("could not be displayed") == len(HOSTILE)
