"""The peers tests talk to: real clients and real servers, never mocks.

* :mod:`peers.smtp`: a raw SMTP client for what no library would send, sessions
  ready on each role of the default world, the world's test users, ``wait_until``,
  and a lab in a process of its own for the crash tests.
* :mod:`peers.cli`: the ``smtplab`` command, run as a subprocess.
* :mod:`peers.jupyter`: the Jupyter server ``make lab`` starts, and the browser's waits on it.
* :mod:`peers.memory`: this process's resident memory, for the load tests.
* :mod:`peers.postfix`: a private Postfix instance and Postfix's ``smtp-sink``, on
  127.0.0.1 (the interop tests, and ``bench/relay.py``, which imports it from here).

Tests import them as ``from peers.smtp import ...`` (pytest puts ``tests/`` on the path).
"""
