"""What a wiretap can read in TLS: each record's content type, and the handshake in the clear.

A TLS connection is a sequence of records, each with a five-byte header in the
clear: content type, version, length (RFC 8446 §5.1; RFC 5246 §6.2.1 for TLS
1.2). The first handshake messages travel in plain records too: the client's
ClientHello names the server it wants (the SNI extension, RFC 6066 §3), and
the ServerHello answers it. Only what follows, protected with the keys the
handshake agreed, is ciphertext. :func:`describe_tls` turns the bytes of one
direction into one line per run of like records, so that the eavesdropper of
chapter 08 labels what it saw by what it is, not all of it as "ciphertext".
"""

from __future__ import annotations

from dataclasses import dataclass

#: Record content types (RFC 8446 §5.1).
CONTENT_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
#: Handshake message types a wiretap can meet in the clear (RFC 8446 §4; RFC 5246 §7.4).
HANDSHAKE_TYPES = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
}
HEADER = 5
SNI_EXTENSION = 0  # server_name (RFC 6066 §3)


@dataclass(frozen=True)
class Run:
    """Consecutive records with the same label: what one line of the view shows."""

    label: str
    records: int
    size: int

    def __str__(self) -> str:
        count = f"{self.records} records, " if self.records > 1 else ""
        return f"[TLS {self.label}] {count}{self.size} bytes"


def is_tls(data: bytes) -> bool:
    """Whether ``data`` starts with a TLS record header (a known type, version 3.x)."""
    return len(data) >= 3 and data[0] in CONTENT_TYPES and data[1] == 3


def describe_tls(data: bytes, *, encrypted: bool = False) -> tuple[list[Run], bool]:
    """The records in ``data`` (one direction), like records grouped into runs.

    ``encrypted`` says this direction already sent a change_cipher_spec, after
    which its handshake records are ciphertext (TLS 1.2's Finished). Returns the
    runs and whether the direction is encrypted at the end, for the next call.
    Bytes that are not a whole record end the list with a ``truncated`` run.
    """
    runs: list[Run] = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + HEADER]
        length = int.from_bytes(header[3:5], "big") if len(header) == HEADER else 0
        body = data[offset + HEADER : offset + HEADER + length]
        if not is_tls(header) or len(header) < HEADER or len(body) < length:
            runs.append(Run("record, truncated or not TLS", 1, len(data) - offset))
            break
        label = _label(header[0], body, encrypted)
        encrypted = encrypted or header[0] == 20
        size = HEADER + length
        if runs and runs[-1].label == label:
            runs[-1] = Run(label, runs[-1].records + 1, runs[-1].size + size)
        else:
            runs.append(Run(label, 1, size))
        offset += size
    return runs, encrypted


def _label(content_type: int, body: bytes, encrypted: bool) -> str:
    name = f"{CONTENT_TYPES[content_type]} 0x{content_type:02x}"
    if content_type == 23 or (encrypted and content_type in (21, 22)):
        return f"{name}, encrypted"
    if content_type != 22:
        return name
    messages = [_handshake_message(message) for message in _handshake_messages(body)]
    return f"{name}, in the clear: {', '.join(messages)}"


def _handshake_messages(body: bytes) -> list[bytes]:
    """The handshake messages in one record: type (1 byte), length (3 bytes), body."""
    messages = []
    offset = 0
    while offset + 4 <= len(body):
        end = offset + 4 + int.from_bytes(body[offset + 1 : offset + 4], "big")
        messages.append(body[offset:end])
        offset = end
    return messages


def _handshake_message(message: bytes) -> str:
    name = HANDSHAKE_TYPES.get(message[0], f"handshake type {message[0]}")
    if message[0] == 1 and (server_name := client_hello_server_name(message[4:])) is not None:
        return f"{name}, server name (SNI) {server_name}"
    return name


def client_hello_server_name(hello: bytes) -> str | None:
    """The host name in a ClientHello's server_name extension (RFC 8446 §4.1.2, RFC 6066
    §3), or None when it has none or is cut short."""
    try:
        reader = _Reader(hello)
        reader.take(2 + 32)  # legacy_version, random
        reader.take(reader.number(1))  # legacy_session_id
        reader.take(reader.number(2))  # cipher_suites
        reader.take(reader.number(1))  # legacy_compression_methods
        extensions = _Reader(reader.take(reader.number(2)))
        while extensions.left():
            kind, data = extensions.number(2), extensions.take(extensions.number(2))
            if kind == SNI_EXTENSION:
                names = _Reader(data)
                names = _Reader(names.take(names.number(2)))
                while names.left():
                    name_type, name = names.number(1), names.take(names.number(2))
                    if name_type == 0 and name.isascii():  # host_name
                        return name.decode("ascii")
    except _CutShort:
        pass
    return None


class _CutShort(Exception):
    """A length field promised more bytes than there are."""


class _Reader:
    """Bytes read front to back, each read checked against what is left."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def left(self) -> bool:
        return self.at < len(self.data)

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise _CutShort
        self.at += count
        return self.data[self.at - count : self.at]

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")
