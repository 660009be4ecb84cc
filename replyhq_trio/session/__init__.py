"""One connection on the server: its Engine.IO session, transport and tasks."""

from ._session import CoreConnection as CoreConnection
from ._session import EngineSession as EngineSession
from ._session import HandshakeInfo as HandshakeInfo
from ._session import SessionHandler as SessionHandler

__all__ = ["CoreConnection", "EngineSession", "HandshakeInfo", "SessionHandler"]
