"""``python -m signaling`` runs the ``endolink`` command."""

from .cli import main

raise SystemExit(main())
