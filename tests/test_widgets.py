"""The widgets without a browser: set values, click, wait with a deadline, read models and HTML.

Every test drives real parts: a running lab (``lab``, a fresh one for a test that
counts a mailbox; ``shared_lab``, one for this module, left as each test found it),
or journeys whose hops were recorded by a real :class:`WireLog`, fed the bytes of
a conversation.
"""

from __future__ import annotations

import html
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as ipw
import nbformat
import pytest

from smtplab import Lab
from smtplab.record.journey import Journey, Step
from smtplab.record.transcript import Command, Reply, Transcript
from smtplab.record.wirelog import WireLog
from smtplab.view.pictures import journey_svg, sequence_svg
from smtplab.view.widgets import (
    SEND_OPTIONS,
    JourneyModel,
    MailboxModel,
    compose,
    dashboard,
    journey_of,
    mailbox_view,
    path_view,
    transcript_view,
)

DEADLINE = 15.0
ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[Lab]:
    """One running lab for the tests that leave it as they found it (a real lab starts in ~1 s)."""
    with Lab(name="test-widgets-shared") as running:
        yield running


# -- data for the drawings and the tabs ----------------------------------------------------
def recorded(client: str, server: str, final: int = 250, *, tls: bool = False) -> WireLog:
    """A finished recording of one submission: the bytes of each side, as a lab's wire tap
    records them; ``final`` is the reply to the message data."""
    wire = WireLog(client, server, "client")
    wire.record("server", f"220 {server} ESMTP\r\n".encode())
    wire.record("client", f"EHLO {client}\r\n".encode())
    wire.record("server", f"250-{server}\r\n250-PIPELINING\r\n250 8BITMIME\r\n".encode())
    if tls:
        wire.record("client", b"STARTTLS\r\n")
        wire.record("server", b"220 Ready to start TLS\r\n")
        wire.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    for command, reply in (
        ("MAIL FROM:<alice@example.com>", "250 2.1.0 Sender ok"),
        ("RCPT TO:<bob@example.org>", "250 2.1.5 Recipient <ok> & fine"),
        ("DATA", "354 End data with <CR><LF>.<CR><LF>"),
        ("Subject: hi\r\n\r\nhello\r\n.", f"{final} {final // 100}.0.0 done"),
        ("QUIT", "221 2.0.0 Bye"),
    ):
        wire.record("client", f"{command}\r\n".encode())
        wire.record("server", f"{reply}\r\n".encode())
    wire.note("a remark")
    wire.close()
    return wire


def conversation(client: str, server: str, final: int = 250, *, tls: bool = False) -> Transcript:
    return recorded(client, server, final, tls=tls).transcript()


def relayed_steps() -> list[Step]:
    """Submission, DNS, a greylisted attempt, a retry, success: the journey chapter 06 tells."""
    rcpt = ("bob@example.org",)
    return [
        Step(
            "submitted",
            "client.example.com",
            "→ smtp.example.com",
            rcpt,
            recorded("client.example.com", "smtp.example.com", tls=True),
        ),
        Step("queued", "smtp.example.com", "queued as 000001-1", rcpt),
        Step("route", "smtp.example.com", "MX example.org: 10 mx1.example.org", rcpt),
        Step(
            "attempt",
            "smtp.example.com",
            "→ mx1.example.org: 451",
            rcpt,
            recorded("smtp.example.com", "mx1.example.org", 451),
        ),
        Step("retry", "smtp.example.com", "next attempt in 2 s", rcpt),
        Step(
            "attempt",
            "smtp.example.com",
            "→ mx1.example.org: 250",
            rcpt,
            recorded("smtp.example.com", "mx1.example.org"),
        ),
        Step("delivered", "smtp.example.com", "mx1.example.org accepted it", rcpt),
    ]


def relayed_journey() -> Journey:
    journey = Journey("<0001.test@example.com>", ("bob@example.org",))
    for step in relayed_steps():
        journey.add(step)
    return journey


# -- compose ------------------------------------------------------------------------------------
def fill(view: Any, **values: str) -> None:
    for name, value in values.items():
        getattr(view, name).value = value


def test_compose_sends_in_the_background_and_shows_the_outcome(lab):
    view = compose(lab)
    assert view.sender.options == tuple(u.address for u in lab.world.users)
    assert ("mx1.example.org (mx)", "mx1.example.org") in view.via.options
    fill(
        view,
        to="bob@example.org, carol@example.org",
        subject="Hi",
        body="Hello",
        via="mx1.example.org",
    )
    assert view.model.to == "bob@example.org, carol@example.org"  # linked, not copied
    view.send_button.click()
    result = view.model.wait(DEADLINE)
    assert result.ok and result.server == "mx1.example.org"
    assert [o.recipient for o in result.outcomes] == ["bob@example.org", "carol@example.org"]
    assert not view.send_button.disabled and view.send_button.description == "Send"
    assert "2 accepted, 0 refused" in view.status.value
    assert "✓ bob@example.org: 250" in view.outcomes.value
    assert all(error.value == "" for error in view.errors.values())
    assert [m.subject for m in lab.mailbox("carol@example.org")] == ["Hi"]


def test_the_button_is_disabled_while_sending_and_a_second_click_is_ignored(shared_lab):
    server = shared_lab.server("mx1.example.org")
    server.slow_down(0.3)  # a round trip away: the send takes a few seconds
    try:
        view = compose(shared_lab)
        fill(view, to="bob@example.org", subject="Only once", via="mx1.example.org")
        view.send_button.click()
        assert view.send_button.disabled and view.send_button.description == "Sending…"
        assert view.model.send() is None  # already sending
        result = view.model.wait(DEADLINE)
    finally:
        server.heal()
    assert result.ok and not view.send_button.disabled
    subjects = [m.subject for m in shared_lab.mailbox("bob@example.org")]
    assert subjects.count("Only once") == 1


def test_invalid_input_is_shown_beside_its_field_and_cleared_on_the_next_send(lab):
    view = compose(lab)
    fill(view, to="bob@@example.org", subject="Hi", via="mx1.example.org")
    view.send_button.click()
    assert view.model.wait(DEADLINE) is None
    assert view.model.errors == {"to": "'bob@@example.org' is not an address like name@example.org"}
    assert "is not an address like name@example.org" in view.errors["to"].value
    assert "color:#c62828" in view.errors["to"].value
    assert "Traceback" not in view.status.value and view.outcomes.value == ""
    assert all(view.errors[f].value == "" for f in view.errors if f != "to")
    # the To row holds the field and its error side by side
    row = next(r for r in view.children if isinstance(r, ipw.HBox) and view.to in r.children)
    assert row.children == (view.to, view.errors["to"])

    fill(view, to="bob@example.org", subject="Two\r\nBcc: eve@example.net")
    view.send_button.click()
    view.model.wait(DEADLINE)
    assert view.errors["to"].value == ""
    assert "header injection" in view.errors["subject"].value

    view.subject.value = "Fine"
    view.send_button.click()
    assert view.model.wait(DEADLINE).ok
    assert all(error.value == "" for error in view.errors.values())


def test_other_failures_are_shown_beside_send_not_as_a_traceback(shared_lab):
    server = shared_lab.server("mx1.example.org")
    server.down()  # as if the host crashed: the connection is refused
    try:
        view = compose(shared_lab)
        fill(view, to="bob@example.org", via="mx1.example.org")
        view.send_button.click()
        view.model.wait(DEADLINE)
    finally:
        server.up()
    assert "ConnectionRefusedError" in view.errors["send"].value
    assert "Traceback" not in view.errors["send"].value
    assert view.model.status == "Not sent." and view.status.value == "Not sent."


def test_errors_of_fields_the_form_does_not_have_go_beside_send(shared_lab):
    view = compose(shared_lab)
    view.model.errors = {"send": "first", "headers": "X-Custom: bad header"}
    assert "first; headers: X-Custom: bad header" in view.errors["send"].value
    assert all(view.errors[f].value == "" for f in view.errors if f != "send")


def test_notify_is_offered_and_ticking_it_asks_for_notices(shared_lab):
    view = compose(shared_lab)
    assert list(view.option_boxes) == [option.name for option in SEND_OPTIONS] == ["notify"]
    view.option_boxes["notify"].value = True
    assert view.model.options == {"notify": True}
    fill(view, to="bob@example.org", subject="Tell me", via="mx1.example.org")
    view.send_button.click()
    result = view.model.wait(DEADLINE)
    assert result.ok
    rcpt = [c.line for c in result.transcript.commands if c.verb == "RCPT"]
    assert rcpt == ["RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE"]


# -- transcripts -------------------------------------------------------------------------------
def test_transcript_tabs_follow_a_journey_as_steps_arrive_from_other_threads():
    journey = Journey("<0001.test@example.com>", ("bob@example.org",))
    view = transcript_view(journey)
    assert view.tabs.children == () and "&lt;0001.test@example.com&gt;" in view.summary.value
    steps = relayed_steps()

    def worker(chunk: list[Step]) -> None:
        for step in chunk:
            journey.add(step)

    first = threading.Thread(target=worker, args=(steps[:4],))
    first.start()
    first.join(DEADLINE)
    assert view.tabs.titles == (
        "client.example.com → smtp.example.com",
        "smtp.example.com → mx1.example.org",
    )
    assert "on its way" in view.summary.value
    assert view.tabs.selected_index == 1
    second = threading.Thread(target=worker, args=(steps[4:],))
    second.start()
    second.join(DEADLINE)
    view.model.wait(DEADLINE)
    assert view.tabs.titles[-1] == "smtp.example.com → mx1.example.org (2)"
    assert len(view.tabs.children) == 3
    assert view.tabs.children[1].value == steps[3].transcript._repr_html_()
    assert "451" in view.tabs.children[1].value and "every recipient" in view.summary.value


def test_a_hop_still_going_on_is_read_again_when_its_connection_closes():
    wire = WireLog("client.example.com", "mx1.example.org", "client")  # still open
    journey = Journey("<1@x>", ("bob@example.org",))
    journey.add(Step("submitted", "client.example.com", "→ mx1", ("bob@example.org",), wire))
    view = transcript_view(journey)
    assert "220" not in view.tabs.children[0].value
    journey.add(Step("delivered", "mx1.example.org", "stored", ("bob@example.org",)))
    wire.record("server", b"220 mx1.example.org ESMTP\r\n")
    wire.close()  # no new step: only the watcher of the connection notices
    view.model.wait(DEADLINE)
    assert (
        "220" in view.tabs.children[0].value and "connection closed" in view.tabs.children[0].value
    )


def test_a_journey_no_longer_shown_does_not_change_the_view():
    old = Journey("<old@x>", ("bob@example.org",))
    view = transcript_view(old)
    view.model.show(relayed_journey())
    late = relayed_steps()[0]
    old.add(late)  # the lab still reports on the old message
    assert len(view.tabs.children) == 3 and view.model.journey is not old
    other = JourneyModel(old)
    assert other.hops == [late.transcript]


def test_a_results_tabs_are_the_hops_of_its_journey(shared_lab):
    result = shared_lab.send(
        "alice@example.com", "bob@example.org", "Direct", "x", via="mx1.example.org"
    )
    view = transcript_view(result)
    view.model.wait(DEADLINE)
    assert view.model.result is result and view.model.journey is journey_of(result)
    assert journey_of(result) is result.journey
    assert [s.kind for s in view.model.steps] == ["submitted", "delivered"]
    assert view.model.hops == result.journey.hops() and len(view.model.hops) == 1
    assert view.tabs.titles == (f"{shared_lab.world.client_host} → mx1.example.org",)
    assert view.tabs.children[0].value == result.journey.hops()[0]._repr_html_()
    assert "every recipient has a final outcome" in view.summary.value
    assert "✓ bob@example.org: 250" in view.summary.value


# -- mailbox -----------------------------------------------------------------------------------
def test_mailbox_view_lists_reads_and_refreshes(lab):
    view = mailbox_view(lab, "bob@example.org")
    assert view.messages.options == () and "0 messages" in view.count.value
    lab.send("alice@example.com", "bob@example.org", "First", "one", via="mx1.example.org")
    view.refresh_button.click()
    assert [label for label, _ in view.messages.options] == ["1. alice@example.com — First"]
    assert view.messages.value == 0
    assert "<th" in view.headers.value and "Subject" in view.headers.value
    assert "Return-Path" in view.headers.value and "First" in view.headers.value
    assert "Subject: First" in view.source.value

    lab.send("alice@example.com", "bob@example.org", "Second", "two", via="mx1.example.org")
    view.refresh_button.click()
    assert len(view.messages.options) == 2
    assert view.messages.value == 0  # the selection is kept
    view.messages.value = 1
    assert view.model.message.subject == "Second" and "Second" in view.headers.value

    view.user.value = "carol@example.org"
    assert view.messages.options == () and view.model.selected == -1
    assert "No message selected" in view.headers.value


def test_an_unknown_mailbox_is_an_error_not_a_traceback(lab):
    model = MailboxModel(lab, "nobody@example.org")
    assert "not a lab user" in model.error and model.messages == []


# -- drawings ----------------------------------------------------------------------------------
def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def groups(root: ET.Element, css_class: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class", "").split()[0] == css_class]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_journey_svg_draws_hosts_hops_mailboxes_dns_and_retries():
    svg = journey_svg(relayed_journey(), roles={"smtp.example.com": "submission"})
    assert svg == journey_svg(relayed_journey(), roles={"smtp.example.com": "submission"})
    root = parse(svg)
    words = texts(root)
    for host in ("client.example.com", "smtp.example.com", "mx1.example.org"):
        assert host in words
    assert {"client", "submission", "mailbox", "bob@example.org"} <= set(words)
    hops = groups(root, "hop")
    assert len(hops) == 3  # client→smtp, smtp→mx1 (twice, one arrow), mx1→mailbox
    assert "451 ↻ 250" in words
    tags = [g.get("class") for g in groups(root, "tag")]
    assert tags == ["tag queued", "tag route", "tag retry"]
    assert any(w.startswith("DNS: MX example.org") for w in words)
    assert any(w.startswith("↻ retry: next attempt") for w in words)
    assert "1 delivered" in root.find(f"{SVG}title").text


def test_journey_svg_escapes_cuts_long_text_and_keeps_it_in_a_tooltip():
    journey = Journey("<a&b@example.com>", ("x@example.org",))
    long = "550 " + "very long reason " * 20 + "<end>"
    journey.add(Step("bounced", "smtp.example.com", long, ("x@example.org",)))
    root = parse(journey_svg(journey))
    (tag,) = groups(root, "tag")
    assert tag.find(f"{SVG}title").text.endswith("<end> [x@example.org]")
    assert any(t.endswith("…") for t in texts(tag))
    assert "1 bounced" in root.find(f"{SVG}title").text


def test_an_empty_journey_is_still_a_drawing():
    root = parse(journey_svg(Journey("<1@x>", ("bob@example.org",))))
    assert "No steps yet." in texts(root)


def test_sequence_svg_has_two_lanes_and_an_arrow_per_command_and_reply():
    transcript = conversation("client.example.com", "mx1.example.org", tls=True)
    svg = sequence_svg(transcript)
    assert svg == sequence_svg(conversation("client.example.com", "mx1.example.org", tls=True))
    root = parse(svg)
    assert len(groups(root, "lane")) == 2
    assert len(groups(root, "command")) == len(transcript.commands) + 1  # + the message data
    assert len(groups(root, "reply")) == len(transcript.replies)
    words = texts(root)
    assert "250-mx1.example.org (+2 lines)" in words
    assert "250 2.1.5 Recipient <ok> & fine" in words  # escaped in the XML, intact once parsed
    assert "[message data: 3 lines, 22 bytes] ." in words
    assert len(groups(root, "note")) == 4  # connected, TLS, remark, closed
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "encrypted"]) == 1
    five = groups(parse(sequence_svg(conversation("a", "b", 554))), "reply")
    assert any(g.find(f"{SVG}line").get("stroke") == "#c62828" for g in five)


def test_sequence_svg_masks_auth_and_cuts_long_lines():
    transcript = Transcript(
        "c",
        "s",
        (
            Command(0.0, "AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Reply(0.0, 250, ("x" * 300,)),
        ),
    )
    svg = sequence_svg(transcript)
    assert "AGFsaWNlAHNlY3JldA==" not in svg
    (reply,) = groups(parse(svg), "reply")
    assert reply.find(f"{SVG}text").text.endswith("…")
    assert reply.find(f"{SVG}title").text == "250 " + "x" * 300


def test_path_view_shows_the_journey_and_the_chosen_hop():
    view = path_view(relayed_journey())
    assert (
        view.journey_html.value.startswith("<svg") and "smtplab-journey" in view.journey_html.value
    )
    assert [label for label, _ in view.hop_picker.options][1:] == [
        "1. client.example.com → smtp.example.com",
        "2. smtp.example.com → mx1.example.org",
        "3. smtp.example.com → mx1.example.org",
    ]
    assert "smtp.example.com → mx1.example.org" in view.sequence_html.value  # newest
    view.hop_picker.value = 0
    assert "client.example.com → smtp.example.com" in view.sequence_html.value


# -- the dashboard ---------------------------------------------------------------------------------
def test_dashboard_follows_a_submitted_message_to_the_mailbox(lab, capsys):
    board = dashboard(lab)
    assert isinstance(board, ipw.VBox) and board.tabs.titles == ("Transcript", "Path", "Mailbox")
    fill(board.compose, to="bob@example.org", subject="Via submission", body="hello")
    board.compose.send_button.click()
    result = board.model.compose.wait(DEADLINE)
    assert result.ok
    board.model.journey.wait(DEADLINE)
    titles = board.transcripts.tabs.titles
    assert titles[0] == f"{lab.world.client_host} → {result.server}"
    assert len(titles) == len(result.journey.hops())
    assert all("250" in page.value for page in board.transcripts.tabs.children)
    assert "<svg" in board.path.journey_html.value and "mailbox" in board.path.journey_html.value
    assert len(board.path.hop_picker.options) == len(titles) + 1  # + "newest"
    assert "221 2.0.0 Bye" in board.path.sequence_html.value
    assert board.mailbox.user.value == "bob@example.org"
    assert [m.subject for m in board.model.mailbox.messages] == ["Via submission"]
    assert capsys.readouterr() == ("", "")  # nothing printed, from any thread


# -- a stopped lab ---------------------------------------------------------------------------------
def test_a_stopped_labs_dashboard_says_so_in_words_and_how_to_start_again():
    lab = Lab(name="test-stopped-dashboard")
    board = dashboard(lab)
    lab.stop()
    fill(board.compose, to="bob@example.org", subject="After the stop", body="hello")
    board.compose.send_button.click()
    assert board.model.compose.wait(DEADLINE) is None
    said = board.model.compose.errors["send"]
    assert html.escape(said) in board.compose.errors["send"].value
    assert "KeyError" not in said and "have []" not in said
    assert "lab 'test-stopped-dashboard' is stopped" in said
    assert "Lab(" in said and "lab.ui()" in said  # how to start again
    assert board.compose.status.value == "Not sent: the lab is stopped."

    board.mailbox.refresh_button.click()
    assert board.model.mailbox.messages == []
    assert "is stopped" in board.model.mailbox.error and "is stopped" in board.mailbox.error.value


def test_the_placeholder_of_a_widget_says_to_re_run_its_cell(lab):
    for view in (dashboard(lab), compose(lab), mailbox_view(lab), transcript_view(), path_view()):
        text = repr(view)
        assert "re-run this cell" in text and "run this notebook in Jupyter" not in text


def test_the_index_keeps_its_lab_running_after_run_all():
    """Its dashboard is the last thing Run All draws: a lab.stop() after it would leave it dead."""
    index = nbformat.read(ROOT / "notebooks" / "00-index.ipynb", as_version=4)
    code = [cell.source for cell in index.cells if cell.cell_type == "code"]
    assert "lab.ui()" in code and not any("lab.stop()" in source for source in code)
    prose = [cell.source for cell in index.cells if cell.cell_type == "markdown"]
    assert any("`lab.stop()`" in text for text in prose)  # says how to stop it
