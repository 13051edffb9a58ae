"""``python -m realjudge`` runs the command line."""

from realjudge.cli import main

raise SystemExit(main())
