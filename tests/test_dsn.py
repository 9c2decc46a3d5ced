"""DSN parameters (RFC 3461) and the report they ask for (RFC 3464, RFC 6522)."""

import email
import email.policy
import string
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtplab.protocol.dsn import RecipientStatus, Report, build_dsn, must_not_notify, summarize
from smtplab.protocol.dsn_params import (
    DSNParamError,
    MailDSN,
    RcptDSN,
    mail_params,
    rcpt_params,
    split_mail_params,
    split_rcpt_params,
    wants,
    xtext_decode,
    xtext_encode,
)

ORIGINAL = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Hi\r\n"
    b"Message-ID: <000001@example.com>\r\n"
    b"\r\n"
    b"Hello Bob\r\n"
    b".a line that starts with a dot\r\n"
)
BOB_UNKNOWN = RecipientStatus(
    "bob@example.org",
    "failed",
    diagnostic="550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",
    remote_mta="mx1.example.org",
    orcpt="rfc822;Bob@Example.org",
    last_attempt="Mon, 02 Nov 2026 09:00:05 +0000",
)
CAROL_DELAYED = RecipientStatus(
    "carol@example.org",
    "delayed",
    status="4.4.1",
    diagnostic="connect to mx1.example.org[127.0.0.1]:2525: Connection refused",
    last_attempt="Mon, 02 Nov 2026 09:00:07 +0000",
    will_retry_until="Fri, 06 Nov 2026 09:00:00 +0000",
)
DAVE_DELIVERED = RecipientStatus(
    "dave@example.org",
    "delivered",
    diagnostic="250 2.0.0 Ok: queued as 000042",
    remote_mta="mx1.example.org",
)
BOUNCE = Report(
    reporting_mta="smtp.example.com",
    mailer_daemon="MAILER-DAEMON@example.com",
    original_sender="alice@example.com",
    arrival_date="Mon, 02 Nov 2026 09:00:00 +0000",
    recipients=(BOB_UNKNOWN,),
    original_message=ORIGINAL,
    date="Mon, 02 Nov 2026 09:00:06 +0000",
    message_id="<dsn.000001@smtp.example.com>",
    envid="QQ314159",
)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- the parameters ---------------------------------------------------------------------


def test_mail_params_keep_the_others_in_order_and_ignore_case():
    rest, dsn = split_mail_params(["SIZE=300", "ret=hdrs", "BODY=8BITMIME", "EnvId=abc+2Bdef"])
    assert rest == ["SIZE=300", "BODY=8BITMIME"]
    assert dsn == MailDSN(ret="HDRS", envid="abc+def")
    assert split_mail_params(["SMTPUTF8"]) == (["SMTPUTF8"], MailDSN())


def test_rcpt_params_parse_notify_and_orcpt():
    rest, dsn = split_rcpt_params(["notify=success,Failure", "ORCPT=rfc822;bob+2Bx@example.org"])
    assert rest == []
    assert dsn == RcptDSN(frozenset({"SUCCESS", "FAILURE"}), "rfc822;bob+x@example.org")
    assert split_rcpt_params(["NOTIFY=NEVER"])[1].notify == frozenset({"NEVER"})
    assert split_rcpt_params([]) == ([], RcptDSN())


def test_dsn_parameters_on_the_wrong_command_are_left_alone():
    assert split_mail_params(["NOTIFY=NEVER"])[0] == ["NOTIFY=NEVER"]
    assert split_rcpt_params(["RET=FULL"])[0] == ["RET=FULL"]


@pytest.mark.parametrize(
    ("split", "params", "fragment"),
    [
        (split_rcpt_params, ["NOTIFY=NEVER,SUCCESS"], "NEVER cannot be combined"),
        (split_rcpt_params, ["NOTIFY=SUCCESS,SOMETIMES"], "Bad NOTIFY"),
        (split_rcpt_params, ["NOTIFY=SUCCESS,"], "Bad NOTIFY"),
        (split_rcpt_params, ["NOTIFY"], "a value is required"),
        (split_rcpt_params, ["ORCPT=bob@example.org"], "Bad ORCPT"),
        (split_rcpt_params, ["ORCPT=rfc822;bob+zz@example.org"], "Bad ORCPT"),
        (split_rcpt_params, ["NOTIFY=DELAY", "NOTIFY=DELAY"], "Bad NOTIFY parameter: given twice"),
        (split_mail_params, ["RET=BODY"], "Bad RET"),
        (split_mail_params, ["ENVID=a=b"], "Bad ENVID"),
        (split_mail_params, ["ENVID=+C3"], "not UTF-8"),
        (split_mail_params, ["ENVID=" + "x" * 101], "longer than 100"),
    ],
)
def test_bad_parameters_are_a_501_5_5_4(split, params, fragment):
    with pytest.raises(DSNParamError) as caught:
        split(params)
    assert caught.value.reply.startswith("501 5.5.4 ")
    assert fragment in caught.value.reply
    assert str(caught.value) == caught.value.reply


def test_xtext_escapes_only_what_it_must():
    assert xtext_encode("abc+def=1 2") == "abc+2Bdef+3D1+202"
    assert xtext_encode("café") == "caf+C3+A9"
    assert xtext_decode("abc+2bdef") == "abc+def"


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_xtext_round_trips(text):
    encoded = xtext_encode(text)
    assert encoded.isascii()
    assert " " not in encoded
    assert "=" not in encoded
    assert xtext_decode(encoded) == text


@given(
    ret=st.sampled_from([None, "FULL", "HDRS"]),
    # at most 8 characters of at most 4 octets each: never over ENVID's 100 octets of xtext
    envid=st.none() | st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
    notify=st.sampled_from(
        [frozenset(), frozenset({"NEVER"}), frozenset({"DELAY"}), frozenset({"SUCCESS", "FAILURE"})]
    ),
    # st.emails() reads the IANA TLD list when first drawn, which can trip Hypothesis's
    # too_slow health check; these mailboxes carry the characters xtext must escape.
    orcpt=st.none()
    | st.builds(
        "rfc822;{}@{}.example".format,
        st.text(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-", min_size=1),
        st.text(string.ascii_lowercase, min_size=1, max_size=12),
    ),
)
def test_parameters_survive_the_next_hop(ret, envid, notify, orcpt):
    mail, rcpt = MailDSN(ret, envid), RcptDSN(notify, orcpt)
    assert split_mail_params(["SIZE=1", *mail_params(mail)]) == (["SIZE=1"], mail)
    assert split_rcpt_params(rcpt_params(rcpt)) == ([], rcpt)


def test_rendered_parameters_look_like_the_rfc():
    assert mail_params(MailDSN("HDRS", "QQ 1")) == ["RET=HDRS", "ENVID=QQ+201"]
    dsn = RcptDSN(frozenset({"DELAY", "FAILURE", "SUCCESS"}), "rfc822;bob@example.org")
    assert rcpt_params(dsn) == ["NOTIFY=SUCCESS,FAILURE,DELAY", "ORCPT=rfc822;bob@example.org"]
    assert mail_params(MailDSN()) == rcpt_params(RcptDSN()) == []


def test_without_notify_only_failures_are_reported():
    assert wants(frozenset(), "failed")
    assert not wants(frozenset(), "delayed")
    assert not wants(frozenset(), "delivered")


def test_notify_never_means_nothing_and_success_covers_relayed():
    for action in ("failed", "delayed", "delivered", "relayed"):
        assert not wants(frozenset({"NEVER"}), action)
    assert wants(frozenset({"SUCCESS"}), "relayed")
    assert not wants(frozenset({"SUCCESS"}), "failed")
    assert wants(frozenset({"DELAY", "FAILURE"}), "delayed")


def test_the_null_sender_never_gets_a_report():
    assert must_not_notify("")
    assert must_not_notify("<>")
    assert not must_not_notify("alice@example.com")
    with pytest.raises(ValueError, match="DSN about a DSN"):
        build_dsn(replace(BOUNCE, original_sender=""))


# --- the report -------------------------------------------------------------------------


def test_a_bounce_is_a_three_part_multipart_report():
    message = parse(build_dsn(BOUNCE))
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    types = [part.get_content_type() for part in message.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert not message.defects
    assert all(not part.defects for part in message.walk())


def test_the_bounce_headers():
    message = parse(build_dsn(BOUNCE))
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@example.com>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"] == BOUNCE.date
    assert message["Message-ID"] == BOUNCE.message_id
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"


def test_the_note_for_people_explains_the_failure():
    note = parse(build_dsn(BOUNCE)).get_body(("plain",)).get_content()
    assert "mail system at host smtp.example.com" in note
    assert "could not be delivered" in note
    assert "host mx1.example.org said: 550 5.1.1" in note
    assert "postmaster@example.com" in note


def test_the_machine_readable_fields():
    status = next(p for p in parse(build_dsn(BOUNCE)).iter_parts() if "status" in p["Content-Type"])
    per_message = status.get_payload()[0]
    assert per_message["Reporting-MTA"] == "dns; smtp.example.com"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_message["Arrival-Date"] == BOUNCE.arrival_date
    [bob] = summarize(build_dsn(BOUNCE))
    assert bob == {
        "Original-Recipient": "rfc822;Bob@Example.org",
        "Final-Recipient": "rfc822; bob@example.org",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.org",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: "
        "User unknown",
        "Last-Attempt-Date": "Mon, 02 Nov 2026 09:00:05 +0000",
    }


def test_status_comes_from_the_reply_then_the_caller_then_the_reply_class():
    assert BOB_UNKNOWN.status_code == "5.1.1"
    assert replace(BOB_UNKNOWN, status="5.0.0").status_code == "5.1.1"
    expired = RecipientStatus("bob@example.org", "failed", status="5.4.7")
    assert expired.status_code == "5.4.7"
    assert replace(BOB_UNKNOWN, diagnostic="550 no such user").status_code == "5.0.0"
    assert RecipientStatus("bob@example.org", "delayed").status_code == "4.0.0"


def test_headers_only_unless_ret_full():
    headers = list(parse(build_dsn(BOUNCE)).iter_parts())[2]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Hi" in headers.get_content()
    assert "Hello Bob" not in headers.get_content()

    full = list(parse(build_dsn(replace(BOUNCE, ret="FULL"))).iter_parts())[2]
    assert full.get_content_type() == "message/rfc822"
    returned = full.get_content()
    assert returned["Subject"] == "Hi"
    assert returned.get_content().splitlines() == ["Hello Bob", ".a line that starts with a dot"]


def test_the_same_report_gives_the_same_bytes():
    assert build_dsn(BOUNCE) == build_dsn(replace(BOUNCE, recipients=(BOB_UNKNOWN,)))
    other = build_dsn(replace(BOUNCE, message_id="<dsn.000002@smtp.example.com>"))
    boundary = parse(build_dsn(BOUNCE)).get_boundary()
    assert boundary != parse(other).get_boundary()
    assert boundary.encode() not in ORIGINAL


def test_every_line_ends_with_crlf_and_fits_998_octets():
    long_reply = "550 5.7.1 " + " ".join(["rejected"] * 200) + " " + "x" * 1500
    bob = replace(BOB_UNKNOWN, diagnostic=long_reply + "\r\nsmuggled: header")
    raw = build_dsn(replace(BOUNCE, recipients=(bob, CAROL_DELAYED), original_message=b"A: b\nc"))
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    [first, _] = summarize(raw)
    assert first["Status"] == "5.7.1"
    assert "smuggled" not in first


def test_a_delay_warning():
    raw = build_dsn(replace(BOUNCE, recipients=(CAROL_DELAYED,), ret="FULL"))
    message = parse(raw)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    assert "keeps trying" in message.get_body(("plain",)).get_content()
    # RET=FULL is about failures (RFC 3461 §4.3): a warning carries the headers only.
    assert list(message.iter_parts())[2].get_content_type() == "text/rfc822-headers"
    [carol] = summarize(raw)
    assert carol["Action"] == "delayed"
    assert carol["Status"] == "4.4.1"
    assert carol["Diagnostic-Code"].startswith("X-smtplab; connect to")
    assert carol["Will-Retry-Until"] == "Fri, 06 Nov 2026 09:00:00 +0000"
    assert "Remote-MTA" not in carol


def test_a_success_report():
    raw = build_dsn(replace(BOUNCE, recipients=(DAVE_DELIVERED,), envid=None))
    message = parse(raw)
    assert message["Subject"] == "Successful Mail Delivery Report"
    assert "was delivered" in message.get_body(("plain",)).get_content()
    assert "Original-Envelope-Id" not in raw.decode()
    [dave] = summarize(raw)
    assert (dave["Action"], dave["Status"]) == ("delivered", "2.0.0")
    assert "Will-Retry-Until" not in dave


def test_any_failure_makes_the_report_a_bounce():
    raw = build_dsn(replace(BOUNCE, recipients=(DAVE_DELIVERED, CAROL_DELAYED, BOB_UNKNOWN)))
    assert parse(raw)["Subject"] == "Undelivered Mail Returned to Sender"
    assert [r["Action"] for r in summarize(raw)] == ["delivered", "delayed", "failed"]


def test_non_ascii_is_declared_8bit():
    message = parse(build_dsn(replace(BOUNCE, original_message="Subject: café\r\n\r\n".encode())))
    assert message["Content-Transfer-Encoding"] == "8bit"
    assert list(message.iter_parts())[2]["Content-Transfer-Encoding"] == "8bit"
    assert parse(build_dsn(BOUNCE))["Content-Transfer-Encoding"] is None


def test_summarize_refuses_what_is_not_a_dsn():
    with pytest.raises(ValueError, match="not a delivery status notification"):
        summarize(ORIGINAL)
