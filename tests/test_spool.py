"""The spool (smtplab.queue.spool) on a real folder: what it stores, what it reads back, and
what it does with files that are no entry. All-or-none puts and updates that keep the old
entry are in test_mailworld.py; a lab restarted on a corrupt spool is in test_relaying.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from smtplab.queue import spool as spool_module
from smtplab.queue.spool import NotAnEntry, QueuedRecipient, QueueEntry, Spool

MESSAGE = b"Subject: x\r\n\r\nline one\r\n.line two\r\n"


def make_entry(qid: str = "000001-1", **changes: object) -> QueueEntry:
    entry = QueueEntry(
        qid,
        "alice@example.com",
        "example.org",
        [QueuedRecipient("bob@example.org", ["SUCCESS", "FAILURE"], "rfc822;bob@example.org")],
        "Mon, 7 Dec 2026 23:00:00 +0000",
        1_000.0,
        message_id="<1@example.com>",
        ret="HDRS",
        envid="env 1",
    )
    return replace(entry, **changes)


def test_what_is_put_is_read_back_by_a_spool_opened_later(tmp_path: Path) -> None:
    entry = make_entry(attempts=2, next_attempt=1_005.0, held_since=1_002.0, held_seconds=1.5)
    Spool(tmp_path).put([entry], MESSAGE)
    reopened = Spool(tmp_path)  # nothing cached: read from disk
    assert reopened.entries() == [entry]
    assert reopened.message(entry.qid) == MESSAGE


def test_the_file_is_one_json_line_then_the_message(tmp_path: Path) -> None:
    Spool(tmp_path).put([make_entry()], MESSAGE)
    head, _, message = (tmp_path / "queue" / "000001-1").read_bytes().partition(b"\n")
    assert QueueEntry.from_json(head) == make_entry()
    assert message == MESSAGE


def test_every_part_of_a_message_shares_its_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    parts = [make_entry("000001-1"), make_entry("000001-2", domain="example.net")]
    spool.put(parts, MESSAGE)
    assert [e.qid for e in Spool(tmp_path).entries()] == ["000001-1", "000001-2"]
    assert {Spool(tmp_path).message(e.qid) for e in parts} == {MESSAGE}


def test_an_update_keeps_the_message_and_replaces_the_envelope(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put([make_entry()], MESSAGE)
    spool.update(make_entry(attempts=1, recipients=[QueuedRecipient("carol@example.org")]))
    (entry,) = Spool(tmp_path).entries()
    assert (entry.attempts, [r.address for r in entry.recipients]) == (1, ["carol@example.org"])
    assert Spool(tmp_path).message(entry.qid) == MESSAGE


def test_a_removed_entry_is_gone_and_removing_it_again_is_harmless(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put([make_entry("000001-1"), make_entry("000001-2")], MESSAGE)
    spool.remove("000001-1")
    spool.remove("000001-1")
    assert [e.qid for e in spool.entries()] == ["000001-2"]
    assert list((tmp_path / "queue").iterdir()) == [tmp_path / "queue" / "000001-2"]


def test_queue_ids_go_on_counting_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert [spool.new_qid(), spool.new_qid()] == ["000001", "000002"]
    spool.put([make_entry("00002A-1")], MESSAGE)
    assert Spool(tmp_path).new_qid() == "00002B"


def test_entries_are_listed_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for qid in ("000003-1", "000001-2", "000002-1", "000001-1"):
        spool.put([make_entry(qid)], MESSAGE)
    assert [e.qid for e in Spool(tmp_path).entries()] == [
        "000001-1",
        "000001-2",
        "000002-1",
        "000003-1",
    ]


def test_a_half_written_file_is_dropped_when_the_spool_opens(tmp_path: Path) -> None:
    """A crash before the rename leaves a file in tmp/: it never got a 250, never delivered."""
    Spool(tmp_path).put([make_entry()], MESSAGE)
    (tmp_path / "tmp" / "000002-1").write_bytes(make_entry("000002-1").to_json())
    spool = Spool(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert [e.qid for e in spool.entries()] == ["000001-1"]


NOT_ENTRIES = [
    ("empty", b""),
    ("cut short", b'{"qid":"000009-1","sen'),
    ("not JSON", b"From: someone\r\n\r\nhello\r\n"),
    ("JSON, not an object", b'["000009-1"]\n'),
    ("a field missing", make_entry("000009-1").to_json().replace(b'"sender":', b'"sendr":')),
    ("an unknown field", make_entry("000009-1").to_json()[:-1] + b',"colour":"red"}\n'),
    ("recipients not objects", make_entry("000009-1").to_json().replace(b'[{"address"', b'[["x"')),
    ("names another entry", make_entry("000008-1").to_json() + b"\n" + MESSAGE),
    ("nested too deep for the parser", b"[" * 100_000),
    ("not UTF-8", b'{"qid":"\xff"}\n'),
]


@pytest.mark.parametrize("content", [c for _, c in NOT_ENTRIES], ids=[n for n, _ in NOT_ENTRIES])
def test_a_file_that_is_no_entry_is_moved_to_corrupt_and_the_rest_is_read(
    tmp_path: Path, content: bytes
) -> None:
    Spool(tmp_path).put([make_entry()], MESSAGE)
    (tmp_path / "queue" / "000009-1").write_bytes(content)
    spool = Spool(tmp_path)
    assert [e.qid for e in spool.entries()] == ["000001-1"]
    assert spool.set_aside == [tmp_path / "corrupt" / "000009-1"]
    assert (tmp_path / "corrupt" / "000009-1").read_bytes() == content  # kept, unread
    assert not (tmp_path / "queue" / "000009-1").exists()


@pytest.mark.parametrize("content", [c for _, c in NOT_ENTRIES], ids=[n for n, _ in NOT_ENTRIES])
def test_reading_a_file_that_is_no_entry_says_so_and_moves_nothing(
    tmp_path: Path, content: bytes
) -> None:
    Spool(tmp_path)
    (tmp_path / "queue" / "000009-1").write_bytes(content)
    with pytest.raises(NotAnEntry, match=r"^000009-1: "):
        Spool.read(tmp_path / "queue" / "000009-1")
    assert (tmp_path / "queue" / "000009-1").read_bytes() == content
    assert not (tmp_path / "corrupt").exists()


def test_a_spool_can_be_listed_and_read_without_opening_it(tmp_path: Path) -> None:
    """`smtplab queue` reads the spool of a running lab: it must not clear tmp/ (a write in
    progress) nor move what it cannot read."""
    spool = Spool(tmp_path)
    spool.put([make_entry("000001-1"), make_entry("000001-2")], MESSAGE)
    (tmp_path / "tmp" / "000002-1").write_bytes(b"being written")
    (tmp_path / "queue" / "notes.txt").write_bytes(b"mine")
    stored = Spool.stored(tmp_path)
    assert [p.name for p in stored] == ["000001-1", "000001-2", "notes.txt"]
    assert Spool.read(stored[0]) == (make_entry("000001-1"), MESSAGE)
    with pytest.raises(NotAnEntry):
        Spool.read(stored[2])
    assert (tmp_path / "tmp" / "000002-1").exists() and (tmp_path / "queue" / "notes.txt").exists()
    spool.remove("000001-2")
    with pytest.raises(FileNotFoundError):  # delivered meanwhile
        Spool.read(stored[1])


def test_a_folder_without_a_queue_lists_nothing_and_stays_as_it_was(tmp_path: Path) -> None:
    assert Spool.stored(tmp_path / "nothing") == []
    assert not (tmp_path / "nothing").exists()


def test_messages_past_the_cache_limit_are_read_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "CACHE_LIMIT", len(MESSAGE))
    spool = Spool(tmp_path)
    spool.put([make_entry("000001-1")], MESSAGE)
    spool.put([make_entry("000002-1")], MESSAGE + b"more\r\n")  # over the limit: not kept
    (tmp_path / "queue" / "000002-1").write_bytes(make_entry("000002-1").to_json() + b"\nnew\r\n")
    assert spool.message("000002-1") == b"new\r\n"
    assert spool.message("000001-1") == MESSAGE  # from memory
    spool.remove("000001-1")  # frees its room: the next message is kept
    spool.put([make_entry("000003-1")], MESSAGE)
    (tmp_path / "queue" / "000003-1").write_bytes(make_entry("000003-1").to_json() + b"\nnew\r\n")
    assert spool.message("000003-1") == MESSAGE


@pytest.mark.parametrize(
    ("created", "held_since", "held_seconds", "age"),
    [
        (100.0, None, 0.0, 50.0),  # never held
        (100.0, None, 20.0, 30.0),  # held 20 s before
        (100.0, 140.0, 0.0, 40.0),  # held since 140: the last 10 s do not count
        (100.0, 140.0, 5.0, 35.0),  # both
    ],
)
def test_age_does_not_count_time_held(
    created: float, held_since: float | None, held_seconds: float, age: float
) -> None:
    entry = make_entry(created=created, held_since=held_since, held_seconds=held_seconds)
    assert entry.age(150.0) == age
