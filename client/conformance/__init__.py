"""Server conformance kit: cases that talk to a pushwire server over the wire only.

``pushwire conformance HOST:PORT`` runs them (``cmd.py``); ``runner.run_cases`` is the
library entry point used by the tests; ``report`` renders the table, JSON and JUnit XML.
"""
