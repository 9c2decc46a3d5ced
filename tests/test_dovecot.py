"""The private Dovecot (smtplab/mailstore/dovecot.py) logs in lab users whose names and
passwords hold characters Dovecot treats specially. docs/hardening.md lists the case.
"""

from __future__ import annotations

import pytest
from peers.smtp import SENDER

from smtplab import Lab
from smtplab.world import Domain, User, World, default_world

pytestmark = pytest.mark.hardening


# -- POP3 and IMAP (Dovecot) -----------------------------------------------------------------------
needs_dovecot = pytest.mark.skipif(
    __import__("smtplab.mailstore.dovecot").mailstore.dovecot.find_dovecot() is None,
    reason="needs Dovecot (apt-get install dovecot-imapd dovecot-pop3d)",
)


#: Local parts with characters Dovecot treats specially: %-variables (%u, %h, %d),
#: characters outside its default auth_username_chars, IMAP list wildcards and braces.
ODD_USERS = {
    "a%u@example.org": "pct-u-pw",
    "h%h@example.org": "pct-h-pw",
    "b+tag@example.org": "plus-pw",
    "q*{x}~@example.org": "brace-pw",
    "o'brien@example.org": "apostrophe-pw",  # Dovecot escapes ' before its passwd-file lookup
    "all!#$&*+-=?^_`{|}~@example.org": "atext-pw",  # every atext but "/" (see check_user_address)
    "quote@example.org": 'pa"ss\\word',  # quoted-specials in the password (RFC 9051 §4.3)
}


@needs_dovecot
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_lab_user_with_percent_or_other_atext_reads_mail_over_imap_and_pop3(protocol):
    """RFC 5321 §4.1.2 atext ('%', '+', '*', '{', '~') in a lab user's local part, and
    quoted-specials in a password: Dovecot logs them in (no %-expansion, no username
    filter) and the lab's IMAP client sends LOGIN's userid as a quoted string where an
    atom cannot carry it (RFC 9051 §6.2.3, §9 astring)."""
    base = default_world()
    users = (User("bob@example.org", "bob-lab-pw"), *(User(a, p) for a, p in ODD_USERS.items()))
    world = World((base.domains[0], Domain("example.org", users, base.domains[1].mx)), base.servers)
    with Lab(world, name=f"odd-users-{protocol}", retrieval=True) as lab:
        result = lab.send(SENDER, list(ODD_USERS), "for odd names", "x", via="mx1.example.org")
        assert result.ok, result.summary()
        for address in ODD_USERS:
            fetched = lab.fetch(address, protocol)
            assert fetched.ok, (address, fetched.error)
            assert [m.subject for m in fetched] == ["for odd names"], address
