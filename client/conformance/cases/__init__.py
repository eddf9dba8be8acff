"""The server conformance cases, one module per category.

Importing this package registers every case in ``model.REGISTRY``. Case IDs are stable:
once published, an ID keeps its meaning (a changed check gets a new ID).
"""

from pushwire.client.conformance.cases import (  # noqa: F401  (imported to register)
    acks,
    errors,
    extensibility,
    flow,
    framing,
    handshake,
    heartbeats,
    patterns,
    resume,
    shutdown,
    subscribe,
)
