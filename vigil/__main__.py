"""``python -m vigil``: the same as the ``vigil`` command."""

from vigil.cli import main

raise SystemExit(main())
