"""The only code that talks to Redis."""

from .calls import Call, command, run_script, text
from .connection import ClientOptions, configured_url
from .gateway import Broker
from .server import ServerInfo

__all__ = [
    "Broker",
    "Call",
    "ClientOptions",
    "ServerInfo",
    "command",
    "configured_url",
    "run_script",
    "text",
]
