"""SMTP and message rules as data and pure functions, with no I/O.

Paths, replies, DSNs, building and reading messages.
"""
