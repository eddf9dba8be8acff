"""The exit codes of every ``pushwire`` command, in one table.

Cheap to import (the dispatcher appends :data:`EXIT_CODES_HELP` to every command's
``--help``). The server's commands cannot import the client package, so ``serve`` and
``testserver`` use the same numbers as literals; ``tests/integration/test_cli_conventions.py``
holds every command to this table.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the command's own kind of failure (said in its --help), or anything else
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well), found before connecting
EXIT_CONNECT = 3  # the server could not be reached
EXIT_REJECTED = 4  # the server refused the handshake (code name + reason printed)
EXIT_REQUEST = 5  # the server refused a subscription or publish
EXIT_LOST = 6  # the connection ended for good while working
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EXIT_CODES_HELP = """\
exit codes (the same for every pushwire command):
    0  success
    1  failure: what the command checks failed (see above), or anything else
    2  bad arguments, found before connecting
    3  server unreachable ('connection refused': no server at that address)
    4  handshake rejected (e.g. UNAUTHENTICATED)
    5  request refused (e.g. FORBIDDEN)
    6  connection lost for good
  130  interrupted (Ctrl-C)"""
