"""Reaching a lab host by its name: the socket goes to 127.0.0.1, TLS checks the name.

Every lab server listens on 127.0.0.1, but certificates name hosts
(``mx1.example.org``), never addresses. A client therefore connects to the
address and verifies the *name*: that is what RFC 7817 / RFC 6125 ask of a mail
client, and what a reader sees fail when the name is wrong. Every lab client
(SMTP, POP3, IMAP) opens its connection with :func:`connect`, as if each lab
name had a line in ``/etc/hosts``, and starts implicit TLS with :func:`start_tls`.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

from smtplab.world import LOOPBACK

if TYPE_CHECKING:  # where a socket is bound: typeshed's name for what socket and smtplib take
    from _socket import _Address as SourceAddress


def connect(
    port: int, timeout: float | None, source_address: SourceAddress | None = None
) -> socket.socket:
    """A TCP connection to the lab listener on ``port``: every lab host name is 127.0.0.1."""
    return socket.create_connection((LOOPBACK, port), timeout, source_address)


def start_tls(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """TLS over ``sock`` that names ``host`` (SNI) and accepts only a certificate for it
    (the lab's contexts check host names); ``sock`` is closed if the handshake fails."""
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
