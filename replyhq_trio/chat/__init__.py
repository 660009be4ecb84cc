"""ReplyHQ on the server: the /client and /admin namespaces and the chat logic."""

from ._admin import AdminNamespace as AdminNamespace
from ._client import ClientNamespace as ClientNamespace
from ._contract import Contract as Contract
from ._contract import Violation as Violation
from ._errors import ChatError as ChatError
from ._errors import Code as Code
from ._limits import ClientAddress as ClientAddress
from ._limits import Limits as Limits
from ._limits import RateLimits as RateLimits
from ._limits import address_of as address_of
from ._service import ChatService as ChatService
from ._service import ChatSettings as ChatSettings
from ._service import conversation_payload as conversation_payload
from ._service import message_payload as message_payload
from ._service import store_call as store_call
from ._sessions import Sessions as Sessions
from ._stats import DELIVERY_BUCKETS as DELIVERY_BUCKETS
from ._stats import ChatStats as ChatStats

__all__ = [
    "DELIVERY_BUCKETS",
    "AdminNamespace",
    "ChatError",
    "ChatService",
    "ChatSettings",
    "ChatStats",
    "ClientAddress",
    "ClientNamespace",
    "Code",
    "Contract",
    "Limits",
    "RateLimits",
    "Sessions",
    "Violation",
    "address_of",
    "conversation_payload",
    "message_payload",
    "store_call",
]
