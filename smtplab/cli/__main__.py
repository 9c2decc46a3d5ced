"""``python -m smtplab.cli``: the same as the ``smtplab`` command."""

from smtplab.cli import main

raise SystemExit(main())
