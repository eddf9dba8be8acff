"""``pushwire testserver``: a scripted server that puts a pushwire *client* through edge cases.

Theory of operation
-------------------
This is not the reference server: it is trio plus the protocol codec, and every byte it
sends is scripted. A client under test connects, handshakes as usual (any HELLO is
accepted; WELCOME announces a short heartbeat interval) and subscribes to the topic
``conformance/<scenario>``: the topic picks the script. The script then sends exactly what
the scenario is about (frames split byte by byte, a GAP, a GOAWAY with a reconnect hint,
silence...) and records what the client does on the wire. A scenario can span several
connections (reconnect, resume); all connections that subscribe to its topic belong to it.
Two scenarios start on one connection and end on the *next* one (``bad-version``): the
first connection arms the trick, the client's reconnect receives it.

A pattern scenario (:mod:`pushwire.server.testserver.patterns`) is routed the same way by
its pattern, ``conformance/<scenario>/+``, and pushes several topics that pattern matches,
each in its own epoch; what the application must see is stated per topic. Those scenarios
are n/a for a client that subscribes to names only (``--no-patterns``, or a client command
without ``{pattern}``).

Each scenario ends with a list of checks, each with the SPEC.md requirement IDs it proves
and a level: a failed MUST check fails the scenario, a failed SHOULD check is a warning
(an error with ``--strict``). What a client shows its application (a gap, an epoch change)
cannot be seen on the wire; each scenario states it (``expect_app``, and as data in
``Scenario.app``), and the project's tests check it for the reference client
(``tests/conformance/reference_client.py``). This module imports only the protocol package:
it never knows the client it tests.

Running a client under test: either start ``pushwire testserver --port 7450`` and run your
client once per scenario (``mytool sub conformance/gap --server 127.0.0.1:7450``), or let
the testserver start it: ``--client-command 'mytool sub {topic} --server {address}
{mode_flag}'`` runs the command per scenario and stops it when the scenario is over.
"""

from pushwire.protocol.testing.model import Check
from pushwire.server.testserver.results import ScenarioRun
from pushwire.server.testserver.runner import TestServer, open_testserver
from pushwire.server.testserver.scenarios import SCENARIOS
from pushwire.server.testserver.script import Ctx, Scenario

__all__ = [
    "SCENARIOS",
    "Check",
    "Ctx",
    "Scenario",
    "ScenarioRun",
    "TestServer",
    "open_testserver",
]
