"""Rendering: swaks-style text, HTML with meanings on hover, masking of AUTH."""

from smtplab.record.transcript import Command, Data, Opened, Reply, TLSStarted, Transcript

EXCHANGE = Transcript(
    "client.example.com",
    "mx.example.org",
    (
        Opened(0.0, "client.example.com", "mx.example.org"),
        Reply(0.001, 220, ("mx.example.org ESMTP",)),
        Command(0.002, "EHLO client.example.com"),
        Reply(0.003, 250, ("mx.example.org", "AUTH PLAIN")),
        Command(0.004, "AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        Reply(0.005, 235, ("2.7.0 Authentication successful",)),
        Command(0.006, "DATA"),
        Reply(0.007, 354, ("End data with <CR><LF>.<CR><LF>",)),
        Data(0.008, b"Subject: <hi>\r\n\r\nbody\r\n.\r\n"),
        Reply(0.009, 250, ("2.0.0 Ok",)),
        TLSStarted(0.01, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ),
)


def test_text_uses_swaks_prefixes():
    text = EXCHANGE.to_text().splitlines()
    assert text[0] == "=== client.example.com connected to mx.example.org"
    assert text[1] == "<-  220 mx.example.org ESMTP"
    assert text[2] == " -> EHLO client.example.com"
    assert text[3:5] == ["<-  250-mx.example.org", "<-  250 AUTH PLAIN"]
    assert str(EXCHANGE) == EXCHANGE.to_text()


def test_data_is_collapsed_unless_asked():
    assert " -> [message data: 3 lines, 23 bytes]" in EXCHANGE.to_text()  # RFC 1870 §5: no dot
    full = EXCHANGE.to_text(full_data=True)
    assert " -> Subject: <hi>\n -> \n -> body\n -> ." in full


def test_auth_is_masked_until_revealed():
    assert "AUTH PLAIN ********" in EXCHANGE.to_text()
    assert "AGFsaWNlAHNlY3JldA==" not in EXCHANGE._repr_html_()
    assert "AUTH PLAIN AGFsaWNlAHNlY3JldA==" in EXCHANGE.reveal().to_text()


def test_times_are_shown_only_on_request():
    assert "[  0.002s]  -> EHLO" in EXCHANGE.to_text(times=True)
    assert "0.002" not in EXCHANGE.to_text()


def test_html_shows_meaning_on_hover_escapes_and_collapses_data():
    page = EXCHANGE._repr_html_()
    assert 'title="354: Start mail input; end with &lt;CRLF&gt;.&lt;CRLF&gt;"' in page
    assert "Subject: &lt;hi&gt;" in page
    assert "<details" in page
    assert "TLS started: TLSv1.3" in page


def test_queries():
    assert EXCHANGE.reply_to("data").code == 354
    assert EXCHANGE.reply_to("QUIT") is None
    assert EXCHANGE.replies[-1].enhanced == "2.0.0"
    assert EXCHANGE.tls.version == "TLSv1.3"
    assert EXCHANGE.data.lines[-1] == "body"
