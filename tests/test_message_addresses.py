"""protocol/message.py: what a reader may type as an address, as a table of decisions."""

import pytest

from smtplab.protocol.message import InvalidInput, check_address
from smtplab.protocol.rules import parse_path

TYPED = [
    ("alice@example.com", "alice@example.com"),
    ("  alice@example.com ", "alice@example.com"),  # stripped
    ("a..b@example.org", "a..b@example.org"),  # dots anywhere: the server judges the path
    (".alice@example.org", ".alice@example.org"),
    ("all!#$%&'*+-/=?^_`{|}~@example.org", "all!#$%&'*+-/=?^_`{|}~@example.org"),  # every atext
    ("jösé@bücher.example", "jösé@bücher.example"),  # RFC 6531
    ("bob@localhost", "bob@localhost"),
    ("bob@\U0001f4ec.example", "bob@\U0001f4ec.example"),  # any UTF-8 letter, as in a path
]
NOT_TYPED = [
    "bob@@example.org",
    "bob",
    "bob@",
    "@example.org",
    "bob smith@example.org",
    "bob\u00a0smith@example.org",  # no white space of any kind, in either part
    "bob@exa\u00a0mple.org",
    '"bob"@example.org',  # no quoting
    "bob@[127.0.0.1]",  # no address literal
    "<bob@example.org>",
    "bob@example..org",
    "bob@.example.org",
    "bob@example.org.",
    "bob@-example.org",
    "bob@example-.org",  # RFC 5321 §4.1.2: a sub-domain ends with a letter or digit
    "bob@under_score.example",
    "a,b@example.org",
]


@pytest.mark.parametrize(("typed", "checked"), TYPED)
def test_an_address_a_reader_types_is_kept(typed, checked):
    assert check_address("to", typed) == checked


@pytest.mark.parametrize("typed", NOT_TYPED)
def test_an_address_that_is_no_mailbox_is_refused_with_one_message(typed):
    with pytest.raises(InvalidInput) as refused:
        check_address("to", typed)
    assert str(refused.value) == f"to: {typed.strip()!r} is not an address like name@example.org"


@pytest.mark.parametrize("typed", [t for t, _ in TYPED if ".." not in t and not t.startswith(".")])
def test_a_typed_address_with_a_dot_string_is_a_path_the_server_accepts(typed):
    address = typed.strip()
    assert parse_path(f"<{address}>") == (address, address.rpartition("@")[0], "")


def test_an_empty_address_is_named_as_missing():
    with pytest.raises(InvalidInput, match=r"^from: an address is required$"):
        check_address("from", "  ")
