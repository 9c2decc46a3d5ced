"""The shared fixtures of tests/conftest.py: ``make_lab`` takes its options from the ``lab``
mark, a call's own options win, each lab it starts has a name of its own, and every one
is stopped once the test is over."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from smtplab import Lab


@pytest.fixture(autouse=True)
def seen() -> Iterator[list[Lab]]:
    """The labs a test started; checked after ``make_lab`` (set up after this) is torn down."""
    labs: list[Lab] = []
    yield labs
    assert [repr(lab) for lab in labs] == [f"<Lab {lab.name!r}: stopped>" for lab in labs]


@pytest.mark.lab(authenticity=True)
def test_the_mark_gives_its_options_and_a_call_overrides_them(
    make_lab: Callable[..., Lab], seen: list[Lab]
):
    marked, plain = make_lab(), make_lab(authenticity=False)
    seen += [marked, plain]
    assert marked.auth is not None and plain.auth is None
    name = "test-test_the_mark_gives_its_options_and_a_call_overrides_them"
    assert (marked.name, plain.name) == (name, f"{name}-2")  # the second did not stop the first
    assert repr(marked) != f"<Lab {name!r}: stopped>"


def test_without_a_mark_the_lab_fixture_is_a_default_lab(lab: Lab, seen: list[Lab]):
    seen.append(lab)
    assert lab.auth is None
    assert lab.name == "test-test_without_a_mark_the_lab_fixture_is_a_default_lab"
