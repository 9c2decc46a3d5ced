"""The lab's SMTP servers and clients.

The recording aiosmtpd session, role handlers, faults, the recording client.
"""
