"""Shared fixtures: a running default lab, stopped after each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtplab import Lab


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with Lab(name=f"test-{request.node.name}") as running:
        yield running
