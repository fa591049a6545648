"""``python -m lunglib ...`` runs the command line (see :mod:`lunglib.cli`)."""

from lunglib.cli import main

raise SystemExit(main())
