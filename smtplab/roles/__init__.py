"""What each server role does with a message it accepted.

The MX stores it in a mailbox, submission and relays queue it for the next hop: the
layer where an SMTP session meets the queue and the mailstore (aiosmtpd handler hooks).
"""
