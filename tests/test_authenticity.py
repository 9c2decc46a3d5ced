"""SPF, DKIM, DMARC and the spam filter, over real sockets and the real lab DNS.

Every test runs a lab with ``authenticity=True``: the submission servers send
from their own loopback addresses and sign with DKIM, and every MX checks what
it receives against the records in the lab DNS. A guard around each test
records every DNS query and name lookup the process makes, and fails the test
if any of them was meant for anything but the lab's own DNS server.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dns.query
import dns.resolver
import pytest
import spf
from peers.smtp import FAST

from smtplab import Lab
from smtplab.senderauth import lookups
from smtplab.senderauth import wiring as labauth
from smtplab.senderauth.checks import check_spf, remove_results_claiming
from smtplab.senderauth.signatures import DKIMKey, dkim_sign
from smtplab.senderauth.spam import SpamFilter
from smtplab.senderauth.wiring import LAB_DKIM_KEY

pytestmark = pytest.mark.lab(retry=FAST, authenticity=True)
KEEP_FAILURES = '"v=DMARC1; p=none"'  # report DMARC, store everything: to look at SPF or DKIM


@pytest.fixture(autouse=True)
def dns_asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Record where every DNS query and name lookup goes: only the lab DNS may be asked."""
    asked: list[tuple[str, int]] = []
    looked_up: list[str] = []

    def spy(original: Any) -> Any:
        def query(q: Any, where: str, *args: Any, port: int = 53, **kwargs: Any) -> Any:
            asked.append((where, port))
            return original(q, where, *args, port=port, **kwargs)

        return query

    def no_system_resolver(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the system's resolver was asked")

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not str(host).startswith("127."):
            looked_up.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(dns.query, "udp", spy(dns.query.udp))
    monkeypatch.setattr(dns.query, "tcp", spy(dns.query.tcp))
    monkeypatch.setattr(dns.resolver, "get_default_resolver", no_system_resolver)
    monkeypatch.setattr(dns.resolver, "default_resolver", None)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    assert looked_up == []
    assert all(where == "127.0.0.1" for where, _ in asked), asked


@pytest.fixture
def lab(lab: Lab, dns_asked: list[tuple[str, int]]) -> Iterator[Lab]:
    """The shared lab; after the test, every DNS query it made went to its own server."""
    yield lab
    assert {port for _, port in dns_asked} <= {lab.dns_server.port}


# -- helpers -----------------------------------------------------------------------


def deliver(lab: Lab, *args: Any, **kwargs: Any) -> Any:
    result = lab.send(*args, **kwargs)
    result.journey.wait(10)
    return result


def results(stored: Any) -> dict[str, str]:
    """The Authentication-Results field of a stored message, by method: {"spf": "spf=..."}."""
    value = str(stored.message["Authentication-Results"])
    authserv_id, *parts = [part.strip() for part in value.split(";")]
    assert authserv_id in ("mx1.example.org", "mx2.example.org", "mx.example.com")
    return {part.split("=", 1)[0]: part for part in parts}


def forged(sender: str, to: str, subject: str, body: str = "Trust me.") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(body)
    return message


# -- the world: addresses and records ------------------------------------------------------


def test_each_sending_host_has_its_own_address_and_records(lab):
    assert lab.auth.addresses == {"smtp.example.com": "127.0.0.2", "smtps.example.com": "127.0.0.3"}
    txt = {(r.name, r.value) for r in lab.dns.records() if r.rdtype == "TXT"}
    assert ("example.com.", '"v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"') in txt
    assert ("_dmarc.example.com.", '"v=DMARC1; p=reject"') in txt
    assert ("example.org.", '"v=spf1 -all"') in txt  # receives only, and says so
    assert ("smtp.example.com.", '"v=spf1 a -all"') in txt  # for its HELO name
    key = next(v for n, v in txt if n == "lab._domainkey.example.com.")
    assert key.startswith('"v=DKIM1; k=rsa; p=MIIBIjAN')
    assert [r.value for r in lab.dns.records("smtp.example.com") if r.rdtype == "A"] == [
        "127.0.0.2"
    ]


def test_the_mx_sees_the_real_source_address_of_each_host(lab):
    deliver(lab, "alice@example.com", "bob@example.org", "via 587", "x")
    deliver(lab, "alice@example.com", "bob@example.org", "via 465", "x", via="smtps.example.com")
    first, second = lab.mailbox("bob@example.org")
    assert "from smtp.example.com ([127.0.0.2])" in first.message.get_all("Received")[0]
    assert "from smtps.example.com ([127.0.0.3])" in second.message.get_all("Received")[0]


def test_without_127_0_0_n_every_host_sends_from_127_0_0_1_and_the_lab_says_so(monkeypatch):
    monkeypatch.setattr(labauth, "_usable", lambda address: address == "127.0.0.1")
    with Lab(name="auth-macos", authenticity=True) as lab:
        assert set(lab.auth.addresses.values()) == {"127.0.0.1"}
        assert "cannot send from 127.0.0.N" in lab.auth.note
        assert lab.auth.note in lab.auth.table()
        (spf_record,) = [r.value for r in lab.dns.records("example.com") if r.rdtype == "TXT"]
        assert spf_record == '"v=spf1 ip4:127.0.0.1 -all"'


def test_a_lab_without_authenticity_adds_nothing():
    with Lab(name="auth-off") as lab:
        assert lab.auth is None
        assert not [r for r in lab.dns.records() if r.rdtype == "TXT"]
        deliver(lab, "alice@example.com", "bob@example.org", "plain", "x")
        (stored,) = lab.mailbox("bob@example.org")
        assert b"Authentication-Results" not in stored.raw and b"DKIM-Signature" not in stored.raw
        assert "([127.0.0.1])" in stored.message.get_all("Received")[0]


# -- SPF (RFC 7208) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "via", "expected"),
    [
        ("v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all", "smtp.example.com", "pass"),
        ("v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all", "mx1.example.org", "fail"),  # you, 127.0.0.1
        ("v=spf1 ip4:127.0.0.2 ~all", "smtps.example.com", "softfail"),
        ("v=spf1 ip4:127.0.0.2 ?all", "smtps.example.com", "neutral"),
        (None, "smtp.example.com", "none"),
    ],
)
def test_spf_verdicts_follow_the_txt_record(lab, record, via, expected):
    lab.dns.replace("_dmarc.example.com", "TXT", [KEEP_FAILURES])
    lab.auth.spam.quarantine_at = lab.auth.spam.reject_at = 100
    lab.dns.replace("example.com", "TXT", [f'"{record}"'] if record else [])
    result = deliver(lab, "alice@example.com", "bob@example.org", f"SPF {expected}", "x", via=via)
    assert result.ok
    (stored,) = lab.mailbox("bob@example.org")
    ip = {"smtp.example.com": "127.0.0.2", "smtps.example.com": "127.0.0.3"}.get(via, "127.0.0.1")
    comment = {
        "pass": f"example.com allows {ip}",
        "fail": f"example.com does not allow {ip}",
        "softfail": f"example.com probably does not allow {ip}",
        "neutral": f"example.com says nothing about {ip}",
        "none": "example.com publishes no SPF record",
    }[expected]
    assert results(stored)["spf"] == f"spf={expected} ({comment}) smtp.mailfrom=example.com"
    assert lab.auth.verdict(result.message_id).auth.spf.result == expected


def test_a_bounce_from_the_null_sender_is_checked_by_its_helo_name(lab):
    deliver(lab, "alice@example.com", "nobody@example.org", "to nobody", "x")
    lab.settle(10)
    (bounce,) = lab.mailbox("alice@example.com")
    checks = results(bounce)
    assert (
        checks["spf"] == "spf=pass (smtp.example.com allows 127.0.0.2) smtp.helo=smtp.example.com"
    )
    assert checks["dkim"].startswith("dkim=pass header.d=example.com")
    assert checks["dmarc"] == "dmarc=pass (p=reject dis=none) header.from=example.com"


# -- DKIM (RFC 6376) ------------------------------------------------------------------------


def test_dkim_pass_signed_by_the_submission_server(lab):
    deliver(lab, "alice@example.com", "bob@example.org", "Signed", "Hello")
    (stored,) = lab.mailbox("bob@example.org")
    assert results(stored)["dkim"] == "dkim=pass header.d=example.com header.s=lab"
    signature = str(stored.message["DKIM-Signature"])
    assert "d=example.com;" in signature and "s=lab;" in signature
    assert "a=rsa-sha256;" in signature and "c=relaxed/relaxed;" in signature
    signed = re.search(r"h=([^;]+);", signature)[1].replace(" ", "").split(":")
    assert {"from", "to", "subject", "date", "message-id"} <= set(signed)
    assert signed.count("from") == 2  # From is signed twice: no second From can be added
    (verdict,) = list(lab.auth.verdicts)
    assert verdict.auth.dkim[0].signed_headers == tuple(signed)


def test_dkim_fails_when_a_signed_header_is_edited_in_transit(lab):
    def tag_subject(raw: bytes) -> bytes:
        return raw.replace(b"\r\nSubject: ", b"\r\nSubject: [EXTERNAL] ", 1)

    lab.auth.edit_in_transit("smtp.example.com", tag_subject)
    deliver(lab, "alice@example.com", "bob@example.org", "Tagged", "x")
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.subject == "[EXTERNAL] Tagged"
    checks = results(stored)
    assert checks["dkim"] == (
        'dkim=fail reason="signature did not verify" header.d=example.com header.s=lab'
    )
    assert checks["spf"].startswith("spf=pass")
    assert checks["dmarc"].startswith("dmarc=pass")  # SPF passed, aligned: one is enough
    lab.auth.edit_in_transit("smtp.example.com", None)
    deliver(lab, "alice@example.com", "bob@example.org", "Untouched", "x")
    assert results(lab.mailbox("bob@example.org")[-1])["dkim"].startswith("dkim=pass")


def test_dkim_fails_when_the_body_is_edited_in_transit(lab):
    lab.auth.edit_in_transit("smtp.example.com", lambda raw: raw + b"-- \r\nA footer\r\n")
    deliver(lab, "alice@example.com", "bob@example.org", "Footer", "x")
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.body.endswith("A footer\n")
    assert results(stored)["dkim"].startswith('dkim=fail reason="body hash did not verify"')


def test_dkim_none_when_the_message_is_not_signed(lab):
    lab.auth.signing = False
    deliver(lab, "alice@example.com", "bob@example.org", "Unsigned", "x")
    (stored,) = lab.mailbox("bob@example.org")
    assert b"DKIM-Signature" not in stored.raw
    assert results(stored)["dkim"] == "dkim=none (message not signed)"
    assert results(stored)["dmarc"].startswith("dmarc=pass")  # SPF alone is aligned


def test_dkim_permerror_when_the_key_is_not_in_dns(lab):
    lab.dns.replace("lab._domainkey.example.com", "TXT", [])
    deliver(lab, "alice@example.com", "bob@example.org", "No key", "x")
    (stored,) = lab.mailbox("bob@example.org")
    assert results(stored)["dkim"] == (
        'dkim=permerror reason="no key for signature" header.d=example.com header.s=lab'
    )


def test_signatures_are_the_same_on_every_run():
    key = DKIMKey("example.com", "lab", LAB_DKIM_KEY)
    message = b"From: alice@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"
    first, second = dkim_sign(message, key, 1793610000), dkim_sign(message, key, 1793610000)
    assert first == second and b" t=1793610000;" in first
    assert first.endswith(message)


# -- DMARC (RFC 7489) ------------------------------------------------------------------------


def test_dmarc_pass_with_spf_and_dkim_both_aligned(lab):
    result = deliver(lab, "alice@example.com", "bob@example.org", "Aligned", "x")
    dmarc = lab.auth.verdict(result.message_id).auth.dmarc
    assert (dmarc.result, dmarc.spf_aligned, dmarc.dkim_aligned) == ("pass", True, True)
    (stored,) = lab.mailbox("bob@example.org")
    assert results(stored)["dmarc"] == "dmarc=pass (p=reject dis=none) header.from=example.com"


def test_a_forged_from_fails_dmarc_although_spf_and_dkim_pass(lab):
    message = forged("Bob <bob@example.org>", "carol@example.org", "Lunch?")
    result = lab.send("alice@example.com", "carol@example.org", message=message)
    assert result.ok  # the submission server took it: it checks the envelope, not From:
    result.journey.wait(10)
    lab.settle(10)
    verdict = lab.auth.verdict(result.message_id)
    assert verdict.auth.summary() == "spf=pass dkim=pass dmarc=fail"
    assert not (verdict.auth.dmarc.spf_aligned or verdict.auth.dmarc.dkim_aligned)
    assert verdict.reply == (
        "550 5.7.1 Email rejected per DMARC policy for example.org "
        "(p=reject: no aligned SPF or DKIM pass)"
    )
    assert len(lab.mailbox("carol@example.org")) == 0
    (bounce,) = lab.mailbox("alice@example.com")
    assert "550 5.7.1 Email rejected per DMARC policy" in " ".join(bounce.body.split())


def test_dmarc_passes_on_dkim_alone_when_the_host_is_not_listed(lab):
    lab.dns.replace("example.com", "TXT", ['"v=spf1 ip4:127.0.0.2 -all"'])  # no smtps
    result = deliver(
        lab, "alice@example.com", "bob@example.org", "465", "x", via="smtps.example.com"
    )
    dmarc = lab.auth.verdict(result.message_id).auth.dmarc
    assert (dmarc.result, dmarc.spf_aligned, dmarc.dkim_aligned) == ("pass", False, True)
    checks = results(lab.mailbox("bob@example.org")[0])
    assert checks["spf"].startswith("spf=fail (example.com does not allow 127.0.0.3)")


@pytest.mark.parametrize(
    ("policy", "code", "inbox", "junk"),
    [("reject", 550, 0, 0), ("quarantine", 250, 0, 1), ("none", 250, 1, 0)],
)
def test_the_policy_decides_what_happens_to_a_spoofed_message(lab, policy, code, inbox, junk):
    lab.dns.replace("_dmarc.example.com", "TXT", [f'"v=DMARC1; p={policy}"'])
    lab.auth.spam.quarantine_at = lab.auth.spam.reject_at = 100  # DMARC alone decides here
    result = lab.send("alice@example.com", "bob@example.org", "Spoof", "x", via="mx1.example.org")
    (outcome,) = result.outcomes
    assert (outcome.code, outcome.stage) == (code, "DATA")
    assert len(lab.mailbox("bob@example.org")) == inbox
    assert len(lab.mailbox("bob@example.org", folder="Junk")) == junk
    verdict = lab.auth.verdict(result.message_id)
    assert verdict.auth.summary() == "spf=fail dkim=none dmarc=fail"
    assert verdict.auth.dmarc.disposition == policy
    if junk:
        (stored,) = lab.mailbox("bob@example.org", folder="Junk")
        assert stored.message["X-Spam-Flag"] == "YES"
        assert results(stored)["dmarc"] == (
            "dmarc=fail (p=quarantine dis=quarantine) header.from=example.com"
        )


def test_dmarc_none_without_a_record(lab):
    lab.dns.replace("_dmarc.example.com", "TXT", [])
    deliver(lab, "alice@example.com", "bob@example.org", "No policy", "x")
    (stored,) = lab.mailbox("bob@example.org")
    assert results(stored)["dmarc"] == "dmarc=none (no DMARC record) header.from=example.com"


def test_relaxed_and_strict_alignment_and_the_organizational_domain(lab):
    message = dkim_sign(
        b"From: news@news.example.com\r\nSubject: Weekly\r\n\r\nNews\r\n",
        lab.auth.keys["example.com"],
        1793610000,
    )
    check = lab.auth.check
    relaxed = check(message, peer="127.0.0.2", helo="smtp.example.com", mail_from="a@example.com")
    assert relaxed.summary() == "spf=pass dkim=pass dmarc=pass"  # news.example.com ~ example.com
    lab.dns.replace("_dmarc.example.com", "TXT", ['"v=DMARC1; p=none; sp=reject; adkim=s; aspf=s"'])
    strict = check(message, peer="127.0.0.2", helo="smtp.example.com", mail_from="a@example.com")
    assert strict.summary() == "spf=pass dkim=pass dmarc=fail"
    assert (strict.dmarc.policy, strict.dmarc.disposition) == ("reject", "reject")  # sp= applies


# -- the Authentication-Results header field (RFC 8601) -----------------------------------


def test_the_authentication_results_field_in_full(lab):
    deliver(lab, "alice@example.com", "bob@example.org", "Full", "x")
    (stored,) = lab.mailbox("bob@example.org")
    head = stored.raw.split(b"\n\n")[0].decode()
    assert head.startswith("Return-Path: <alice@example.com>\nReceived: from smtp.example.com")
    expected = (
        "\tfor <bob@example.org>; Mon, 02 Nov 2026 09:00:04 +0000\n"
        "Authentication-Results: mx1.example.org;\n"
        "\tspf=pass (example.com allows 127.0.0.2) smtp.mailfrom=example.com;\n"
        "\tdkim=pass header.d=example.com header.s=lab;\n"
        "\tdmarc=pass (p=reject dis=none) header.from=example.com\n"
        "X-Spam-Status: No, score=0.0 required=5.0 tests=none\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\n"
    )
    assert expected in head


def test_a_forged_result_naming_the_mx_is_removed_and_others_are_kept(lab):
    lab.dns.replace("_dmarc.example.com", "TXT", [KEEP_FAILURES])
    message = forged("alice@example.com", "bob@example.org", "Believe me")
    message["Authentication-Results"] = "mx1.example.org; dkim=pass header.d=example.com"
    message["Authentication-Results"] = "elsewhere.example; spf=pass"
    deliver(lab, "alice@example.com", "bob@example.org", message=message, via="mx1.example.org")
    (stored,) = lab.mailbox("bob@example.org")
    claims = [str(v) for v in stored.message.get_all("Authentication-Results")]
    assert len(claims) == 2 and claims[1] == "elsewhere.example; spf=pass"
    assert "dkim=none" in claims[0]


def test_remove_results_claiming_handles_folded_fields_and_case():
    raw = (
        b"Authentication-Results: (comment) MX1.example.org;\r\n\tdkim=pass\r\n"
        b"Subject: x\r\n\r\nAuthentication-Results: mx1.example.org; in the body\r\n"
    )
    cleaned, removed = remove_results_claiming(raw, "mx1.example.org")
    assert removed == 1
    assert cleaned == b"Subject: x\r\n\r\nAuthentication-Results: mx1.example.org; in the body\r\n"


# -- the spam filter -------------------------------------------------------------------------


def test_spam_score_rules_and_thresholds():
    spam = SpamFilter()
    clean = spam.score("Lunch on Friday?", "Shall we?", {"spf": "pass", "dkim": "pass"})
    assert (clean.points, clean.action, clean.hits) == (0.0, "accept", ())
    score = spam.score("YOU ARE A WINNER!!!", "Claim your prize", {"spf": "softfail"})
    assert [h.rule for h in score.hits] == [
        "SPF_SOFTFAIL",
        "SPAM_PRIZE",
        "SPAM_WINNER",
        "SUBJ_ALL_CAPS",
        "SUBJ_EXCLAMATIONS",
    ]
    assert (score.points, score.action) == (8.0, "quarantine")
    assert score.status_header() == (
        "X-Spam-Status: Yes, score=8.0 required=5.0 "
        "tests=SPF_SOFTFAIL,SPAM_PRIZE,SPAM_WINNER,SUBJ_ALL_CAPS,SUBJ_EXCLAMATIONS\r\n"
    )
    spam.reject_at = 8.0
    assert spam.score("YOU ARE A WINNER!!!", "Claim your prize", {"spf": "softfail"}).is_spam
    assert spam.score("Free prizes", "not a whole word").points == 0  # "prize" ≠ "prizes"


def test_quarantine_answers_250_and_files_the_message_as_junk(lab):
    result = deliver(lab, "alice@example.com", "bob@example.org", "WINNER!!!", "Claim your prize")
    assert [s.kind for s in result.journey.steps][-1] == "delivered"  # as far as anyone knows
    assert len(lab.mailbox("bob@example.org")) == 0
    (junk,) = lab.mailbox("bob@example.org", folder="Junk")
    assert junk.message["X-Spam-Flag"] == "YES"
    assert str(junk.message["X-Spam-Status"]).startswith("Yes, score=7.0 required=5.0")


def test_reject_answers_550_at_data_and_the_sender_gets_a_bounce(lab):
    lab.auth.spam.reject_at = 7.0
    result = deliver(lab, "alice@example.com", "bob@example.org", "WINNER!!!", "Claim your prize")
    assert [s.kind for s in result.journey.steps][-2:] == ["bounced", "dsn"]  # then its notice
    lab.settle(10)
    assert len(lab.mailbox("bob@example.org")) == len(lab.mailbox("bob@example.org", "Junk")) == 0
    (bounce,) = lab.mailbox("alice@example.com")
    assert "550 5.7.1 Message rejected as spam (score 7, limit 7)" in " ".join(bounce.body.split())


# -- nothing leaves the lab -------------------------------------------------------------------


def test_every_check_resolves_through_the_lab_dns_only(lab):
    lab.dns_server.clear_log()
    deliver(lab, "alice@example.com", "bob@example.org", "Where from?", "x")
    asked = {(q.name, q.rdtype) for q in lab.dns_server.queries}
    # On the Internet example.com publishes "v=spf1 -all" and no DKIM key "lab":
    # a pass for 127.0.0.2 is the lab DNS's answer and nobody else's.
    assert {
        ("example.com.", "TXT"),
        ("lab._domainkey.example.com.", "TXT"),
        ("_dmarc.example.com.", "TXT"),
    } <= asked
    assert lab.auth.verdicts[-1].auth.summary() == "spf=pass dkim=pass dmarc=pass"


def test_pyspf_cannot_ask_any_dns_but_the_labs():
    assert spf.DNSLookup is lookups._spf_lookup
    with pytest.raises(spf.TempError, match="lab DNS only"):
        spf.DNSLookup("example.com", "TXT")
    verdict = spf.check2(i="127.0.0.2", s="alice@example.com", h="smtp.example.com")
    assert verdict[0] == "temperror"  # without a lab resolver: an error, never the Internet


def test_check_spf_uses_the_resolver_it_is_given(lab):
    verdict = check_spf(lab.resolver, "127.0.0.2", "alice@example.com", "smtp.example.com")
    assert (verdict.result, verdict.domain, verdict.identity) == ("pass", "example.com", "mailfrom")
