"""The HTTP front door: the Engine.IO endpoint and application routes on one port."""

from ._engineio import Admission as Admission
from ._engineio import EngineIOEndpoint as EngineIOEndpoint
from ._engineio import SessionFactory as SessionFactory
from ._engineio import SessionTable as SessionTable
from ._engineio import new_sid as new_sid
from ._frontdoor import FrontDoor as FrontDoor
from ._router import Router as Router

__all__ = [
    "Admission",
    "EngineIOEndpoint",
    "FrontDoor",
    "Router",
    "SessionFactory",
    "SessionTable",
    "new_sid",
]
