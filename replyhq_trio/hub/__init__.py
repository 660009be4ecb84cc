"""Socket.IO for the whole process: namespaces, sockets, rooms, broadcasts, other nodes."""

from ..ports import Backplane as Backplane
from ..ports import Broadcast as Broadcast
from ._backplane import InMemoryBus as InMemoryBus
from ._backplane import LocalBackplane as LocalBackplane
from ._connection import SocketIOConnection as SocketIOConnection
from ._errors import AckTimeout as AckTimeout
from ._errors import ConnectRefused as ConnectRefused
from ._errors import EventRefused as EventRefused
from ._errors import SocketGone as SocketGone
from ._hub import Acks as Acks
from ._hub import Hub as Hub
from ._namespace import AnyEventHandler as AnyEventHandler
from ._namespace import ConnectedHandler as ConnectedHandler
from ._namespace import ConnectHandler as ConnectHandler
from ._namespace import DisconnectHandler as DisconnectHandler
from ._namespace import EventHandler as EventHandler
from ._namespace import Namespace as Namespace
from ._registry import RoomRegistry as RoomRegistry
from ._socket import Socket as Socket
from ._stats import OTHER_EVENT as OTHER_EVENT
from ._stats import HubStats as HubStats

__all__ = [
    "OTHER_EVENT",
    "AckTimeout",
    "Acks",
    "AnyEventHandler",
    "Backplane",
    "Broadcast",
    "ConnectHandler",
    "ConnectRefused",
    "ConnectedHandler",
    "DisconnectHandler",
    "EventHandler",
    "EventRefused",
    "Hub",
    "HubStats",
    "InMemoryBus",
    "LocalBackplane",
    "Namespace",
    "RoomRegistry",
    "Socket",
    "SocketGone",
    "SocketIOConnection",
]
