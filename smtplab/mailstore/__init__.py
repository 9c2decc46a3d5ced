"""Where delivered mail lives and how it is read.

Maildir, a private Dovecot, recorded POP3/IMAP clients.
"""
