"""pushwire's reference server on trio, with an embedded in-memory broker.

``from pushwire.server import Server, ServerConfig, open_server, MemoryBroker``
"""

from pushwire.server.broker import Broker, MemoryBroker
from pushwire.server.serve import Permissions, Server, ServerConfig, ServerStats, open_server

__all__ = [
    "Broker",
    "MemoryBroker",
    "Permissions",
    "Server",
    "ServerConfig",
    "ServerStats",
    "open_server",
]
