"""The lab's SMTP, both ends.

The recording aiosmtpd session and its pure policy, the controller, faults and the
simulated network; the recording client. `_aiosmtpd.py` is the one door to aiosmtpd's
private names. What a role does with an accepted message is one layer up, in roles/.
"""
