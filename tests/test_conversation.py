"""Talking SMTP by hand: replies come from the recorded wire, raw bytes go out as given."""

from __future__ import annotations


def test_greeting_helo_and_ehlo(lab):
    with lab.talk("mx1.example.org") as talk:
        assert talk.greeting.code == 220 and talk.greeting.text.startswith("mx1.example.org ")
        assert talk.say("HELO client.example.com").lines == ["250 mx1.example.org"]
        ehlo = talk.say("EHLO client.example.com")
        assert ehlo.lines[0] == "250-mx1.example.org" and "250-PIPELINING" in ehlo.lines
    assert talk.transcript.commands[-1].line == "QUIT"


def test_starttls_then_auth_on_submission(lab):
    with lab.talk("smtp.example.com") as talk:
        talk.say("EHLO client.example.com")
        assert talk.say("AUTH PLAIN AGFsaWNl").code == 538
        assert talk.starttls().code == 220
        assert "250-AUTH LOGIN PLAIN" in talk.say("EHLO client.example.com").lines
        assert talk.login("alice@example.com", "alice-lab-pw").code == 235
        assert talk.login("alice@example.com", "again").code == 503  # already authenticated
    verbs = [c.verb for c in talk.transcript.commands]
    assert verbs.count("EHLO") == 2, "no hidden EHLO from smtplib"
    assert talk.transcript.tls is not None


def test_raw_bytes_are_sent_exactly_and_replies_read_in_order(lab):
    with lab.talk("mx1.example.org") as talk:
        talk.say("EHLO client.example.com")
        pipelined = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<nobody@example.org>\r\n"
        replies = talk.send(pipelined, replies=2)
        assert [r.code for r in replies] == [250, 550]


def test_commands_injected_behind_starttls_are_sent_and_discarded(lab):
    with lab.talk("mx1.example.org") as talk:
        talk.say("EHLO client.example.com")
        talk.starttls(inject=b"MAIL FROM:<evil@example.net>\r\n")
        talk.say("EHLO client.example.com")
        assert talk.say("RCPT TO:<bob@example.org>").code == 503  # the MAIL was never obeyed
    (server_view,) = lab.transcripts("mx1.example.org", at_least=1)
    assert "bytes sent before TLS were discarded" in server_view.to_text()
