"""Sockets and HTTP: ordered non-blocking writes, the long-polling queue, h11, CORS."""

from ._cors import CorsPolicy as CorsPolicy
from ._http import BadRequest as BadRequest
from ._http import HttpConnection as HttpConnection
from ._http import Request as Request
from ._http import RequestTooLarge as RequestTooLarge
from ._http import Response as Response
from ._http import RouteHandler as RouteHandler
from ._http import error_response as error_response
from ._http import json_response as json_response
from ._http import text_response as text_response
from ._memory import give_back_memory as give_back_memory
from ._outlet import Outlet as Outlet
from ._polling import PollingQueue as PollingQueue

__all__ = [
    "BadRequest",
    "CorsPolicy",
    "HttpConnection",
    "Outlet",
    "PollingQueue",
    "Request",
    "RequestTooLarge",
    "Response",
    "RouteHandler",
    "error_response",
    "give_back_memory",
    "json_response",
    "text_response",
]
