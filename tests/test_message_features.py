"""Message features of lab.send: attachments, with bytes that reproduce run after run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smtplab import InvalidInput, Lab
from smtplab.view.widgets import compose

DEADLINE = 30.0
PDF = b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF\n"


def send_with_attachments(lab: Lab):
    return lab.send(
        "alice@example.com",
        "bob@example.org",
        subject="Minutes",
        body="Minutes attached.",
        via="mx1.example.org",
        attachments=[("minutes.pdf", PDF, "application/pdf"), ("notes.txt", b"hi\n", "text/plain")],
    )


def test_attachments_arrive_with_their_names_types_and_bytes(lab):
    result = send_with_attachments(lab)
    assert result.ok
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.message.get_content_type() == "multipart/mixed"
    assert stored.body == "Minutes attached.\n"
    pdf, notes = stored.message.iter_attachments()
    assert (pdf.get_filename(), pdf.get_content_type()) == ("minutes.pdf", "application/pdf")
    assert pdf.get_content() == PDF and pdf["Content-Transfer-Encoding"] == "base64"
    assert (notes.get_filename(), notes.get_content()) == ("notes.txt", "hi\n")
    # the boundary is named in the header and delimits the three parts on the wire
    boundary = stored.message.get_boundary()
    assert boundary is not None and boundary.startswith("=_smtplab_")
    wire = result.transcript.data.wire
    assert wire.count(f"\r\n--{boundary}\r\n".encode()) == 3
    assert wire.count(f"\r\n--{boundary}--\r\n".encode()) == 1


def test_the_same_send_in_two_labs_gives_the_same_bytes():
    wires = []
    for _ in range(2):
        with Lab(name="test-attachment-bytes") as lab:
            wires.append(send_with_attachments(lab).transcript.data.wire)
    assert wires[0] == wires[1]


def test_a_send_without_attachments_is_unchanged(lab):
    result = lab.send("alice@example.com", "bob@example.org", "Plain", "Hi", via="mx1.example.org")
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.message.get_content_type() == "text/plain"
    assert b"boundary" not in result.transcript.data.wire


@pytest.mark.parametrize(
    "attachments",
    [
        [("a.bin", b"x", "octet-stream")],
        [("a.bin", b"x", "")],
        [("", b"x", "text/plain")],
        [("evil\r\nBcc: eve@example.net", b"x", "text/plain")],
    ],
)
def test_a_bad_attachment_is_refused_before_anything_is_sent(lab, attachments):
    before = len(lab.journal.logs())
    with pytest.raises(InvalidInput) as error:
        lab.send(
            "alice@example.com",
            "bob@example.org",
            via="mx1.example.org",
            attachments=attachments,
        )
    assert error.value.field == "attachment"
    assert len(lab.journal.logs()) == before


def test_attachments_and_a_ready_made_message_do_not_mix(lab):
    with pytest.raises(InvalidInput, match="attachment"):
        lab.send(
            "alice@example.com",
            "bob@example.org",
            via="mx1.example.org",
            message=b"Subject: x\r\n\r\nhi\r\n",
            attachments=[("a.txt", b"x", "text/plain")],
        )


def test_the_dashboard_attachment_goes_through_lab_send(lab):
    view = compose(lab)
    view.attachment.value = (
        {
            "name": "photo.png",
            "type": "image/png",
            "size": 8,
            "content": memoryview(b"\x89PNG\r\n\x1a\n"),
            "last_modified": datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        },
    )
    view.to.value = "carol@example.org"
    view.subject.value = "A photo"
    view.body.value = "Look!"
    view.via.value = "mx1.example.org"
    _, kwargs = view.model.send_arguments()
    assert "message" not in kwargs
    assert kwargs["attachments"] == [("photo.png", b"\x89PNG\r\n\x1a\n", "image/png")]
    view.send_button.click()
    assert view.model.wait(DEADLINE).ok
    (stored,) = lab.mailbox("carol@example.org")
    (part,) = stored.message.iter_attachments()
    assert part.get_filename() == "photo.png" and part.get_content() == b"\x89PNG\r\n\x1a\n"
    assert stored.message["Message-ID"].strip() == view.model.result.message_id
