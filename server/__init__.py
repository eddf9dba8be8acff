"""pushwire's reference server on trio, with an embedded in-memory broker.

``from pushwire.server import Server, ServerConfig, open_server, MemoryBroker``
(``server_tls_context`` builds the ``ServerConfig.tls`` context from PEM files)
"""

from pushwire.server.broker import Broker, MemoryBroker
from pushwire.server.serve import (
    Permissions,
    Server,
    ServerConfig,
    ServerStats,
    open_server,
    server_tls_context,
)

__all__ = [
    "Broker",
    "MemoryBroker",
    "Permissions",
    "Server",
    "ServerConfig",
    "ServerStats",
    "open_server",
    "server_tls_context",
]
