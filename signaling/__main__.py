"""``python -m signaling`` runs the ``endolink`` command."""

from signaling.cli import main

raise SystemExit(main())
