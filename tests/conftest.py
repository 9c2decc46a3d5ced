"""Shared fixtures: labs a test starts, always stopped, with options from a marker.

``make_lab`` is a factory: ``make_lab(**options)`` starts a :class:`~smtplab.Lab`
with the options of the closest ``@pytest.mark.lab(...)`` marker (on the test, its
class or its module's ``pytestmark``), overridden by those of the call, as
aiosmtpd's tests take a controller's options from ``@pytest.mark.controller_data``.
Every lab it started is stopped when the test ends, after the raw clients the test
left open are closed (a lab that stops first would wait on their TLS sessions).
``lab`` is the one lab most tests need: ``make_lab()``.

    @pytest.mark.lab(retry=FAST, authenticity=True)
    def test_something(lab): ...
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from peers.smtp import close_all

from smtplab import Lab


@pytest.fixture
def make_lab(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    marker = request.node.get_closest_marker("lab")
    marked: dict[str, Any] = dict(marker.kwargs) if marker else {}
    numbers = itertools.count(1)

    with contextlib.ExitStack() as labs:  # stops them all, even when one stop fails

        def make(**options: Any) -> Lab:
            number = next(numbers)
            name = f"test-{request.node.name}" + (f"-{number}" if number > 1 else "")
            return labs.enter_context(Lab(**{"name": name, **marked, **options}))

        try:
            yield make
        finally:
            close_all()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab()


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    """Close every raw client (:class:`peers.smtp.Raw`) a test opened, whatever happened."""
    yield
    close_all()
