"""The compose widget (smtplab/view/widgets/compose.py) refuses header injection
before anything is sent. docs/hardening.md lists the case with its test id.
"""

from __future__ import annotations

import pytest
from peers.smtp import FAST, nothing_kept

pytestmark = [pytest.mark.lab(retry=FAST), pytest.mark.hardening]


# -- widget input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["to", "cc", "bcc", "subject"])
def test_a_line_break_typed_into_a_compose_field_is_refused_before_anything_is_sent(lab, field):
    """RFC 5322 §2.2 and §3.6 (header injection): CR or LF in a field never reaches the wire."""
    from smtplab.view.widgets import compose

    view = compose(lab)
    for breaker in ("\r\n", "\n", "\r"):
        values = {"to": "bob@example.org", "subject": "Hi", "via": "mx1.example.org"}
        injected = "Hi" if field == "subject" else "carol@example.org"
        values[field] = f"{injected}{breaker}Bcc: eve@example.net"
        for name, value in values.items():
            getattr(view, name).value = value
        before = len(lab.journal.logs())
        view.send_button.click()
        assert view.model.wait(15) is None
        assert "header injection" in view.model.errors.get(field, ""), (field, breaker)
        assert len(lab.journal.logs()) == before  # no connection was even opened
    assert nothing_kept(lab)
