"""``python -m pushwire.client``: the ``pushwire`` command, for where the script is not on PATH."""

from pushwire.client.commands.cli import main

raise SystemExit(main())
