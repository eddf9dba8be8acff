"""pushwire's client: ``async with pushwire.client.connect("host:port") as conn``, under
asyncio or trio (it is written with anyio).

See :func:`connect`, :class:`Connection` and :class:`Subscription` for the API, and the
module docstring of ``pushwire.client.connection`` for how reconnects, credit and
acknowledgements work.
"""

from pushwire.client.connection import (
    Backoff,
    Connection,
    EpochChange,
    Gap,
    Item,
    Message,
    SinceSpec,
    Subscription,
    TopicPosition,
    connect,
    parse_address,
    parse_since,
    tls_context,
)
from pushwire.client.errors import (
    ConnectError,
    ConnectionLost,
    DeliveryInterrupted,
    EpochChanged,
    GapDetected,
    HandshakeRejected,
    PushwireError,
    RequestError,
)

__all__ = [
    "Backoff",
    "ConnectError",
    "Connection",
    "ConnectionLost",
    "DeliveryInterrupted",
    "EpochChange",
    "EpochChanged",
    "Gap",
    "GapDetected",
    "HandshakeRejected",
    "Item",
    "Message",
    "PushwireError",
    "RequestError",
    "SinceSpec",
    "Subscription",
    "TopicPosition",
    "connect",
    "parse_address",
    "parse_since",
    "tls_context",
]
