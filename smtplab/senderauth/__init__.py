"""Is the sender who they say?

SPF, DKIM, DMARC and a spam score, and their wiring into a running lab.
"""
