"""The REST API on the server's port (CONTRACT.md "REST").

Devices authenticate with ``X-App-Id``, ``X-Device-Id`` and ``X-Api-Key``; agents with
``Authorization: Bearer <admin token>`` and ``X-App-Id``. Bodies and queries are checked
with the schemas of ``protocol/schemas/rest/``; errors are
``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import attrs
import orjson

from ..chat import (
    ChatError,
    ChatService,
    Code,
    Violation,
    conversation_payload,
    message_payload,
    store_call,
)
from ..ports import Conversation, InvalidCursor, Sender
from ..transport import HttpConnection, Request, RequestTooLarge, Response, json_response

__all__ = ["RestApi"]

log = logging.getLogger("replyhq_trio.rest")

_STATUS = {
    Code.INVALID_PAYLOAD: 400,
    Code.INVALID_CURSOR: 400,
    Code.MISSING_PARAMS: 401,
    Code.INVALID_CREDENTIALS: 401,
    Code.FORBIDDEN: 403,
    Code.CONVERSATION_NOT_FOUND: 404,
    Code.RATE_LIMITED: 429,
    Code.STORE_UNAVAILABLE: 503,
}

CONVERSATIONS = "/v1/conversations"
#: The most recently updated conversations a list shows (``has_more`` says if others exist).
_MAX_CONVERSATIONS = 200


def _json(status: int, body: Any) -> Response:
    return json_response(status, orjson.dumps(body))


def error_response(error: ChatError) -> Response:
    body = {"code": error.code.value, "message": error.message, **error.details()}
    response = _json(_STATUS.get(error.code, 400), {"error": body})
    if error.retry_after_ms is not None:
        seconds = str(-(-error.retry_after_ms // 1000))  # rounded up: never too early
        response = attrs.evolve(response, headers=(*response.headers, ("Retry-After", seconds)))
    return response


@attrs.frozen
class Caller:
    """Who made a request: a device of an app, or an agent of an app."""

    app_id: str
    device_id: str | None  # None for an agent

    @property
    def sender(self) -> Sender:
        return Sender.USER if self.device_id is not None else Sender.AGENT


class RestApi:
    """The REST handlers, bound to the chat service.

    Args:
        chat: The chat logic (store, contract, broadcasts).
        max_body: The largest request body, in bytes (413 beyond).
    """

    def __init__(self, chat: ChatService, *, max_body: int) -> None:
        self._chat = chat
        self._max_body = max_body

    # --- plumbing ----------------------------------------------------------------------

    async def conversations(self, request: Request, http: HttpConnection) -> Response:
        """``/v1/conversations``: POST creates, GET lists."""
        return await _answered(self._conversations(request, http))

    async def messages(self, request: Request, http: HttpConnection) -> Response:
        """``/v1/conversations/{id}/messages``: POST sends, GET pages."""
        rest = request.path[len(CONVERSATIONS) + 1 :]
        conversation_id, _, tail = rest.partition("/")
        if tail != "messages" or not conversation_id:
            return _json(404, {"error": {"code": "NOT_FOUND", "message": "no such resource"}})
        return await _answered(self._messages(conversation_id, request, http))

    async def _conversations(self, request: Request, http: HttpConnection) -> Response:
        caller = await self._caller(request)
        if request.method == "POST":
            return await self._create_conversation(caller, request, http)
        return await self._list_conversations(caller)

    async def _messages(
        self, conversation_id: str, request: Request, http: HttpConnection
    ) -> Response:
        caller = await self._caller(request)
        conversation = await self._conversation(caller, conversation_id)
        if request.method == "POST":
            return await self._post_message(caller, conversation, request, http)
        return await self._list_messages(conversation, request)

    async def _caller(self, request: Request) -> Caller:
        try:
            return await self._authenticate(request)
        except ChatError as error:
            if error.code in (Code.MISSING_PARAMS, Code.INVALID_CREDENTIALS):
                log.info(
                    "refused a request: %s",
                    error.code.value,
                    extra={
                        "app_id": (_header(request, "X-App-Id") or "")[:128] or None,
                        "device_id": (_header(request, "X-Device-Id") or "")[:128] or None,
                        "address": request.remote,
                        "code": error.code.value,
                    },
                )
            raise

    async def _authenticate(self, request: Request) -> Caller:
        app_id = _header(request, "X-App-Id")
        authorization = _header(request, "Authorization") or ""
        store = self._chat.store
        if authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
            if not app_id or not token:
                raise ChatError(Code.MISSING_PARAMS, "X-App-Id and a bearer token are required")
            if not await store_call(store.verify_admin_token(app_id, token)):
                raise ChatError(Code.INVALID_CREDENTIALS)
            return Caller(app_id, None)
        device_id = _header(request, "X-Device-Id")
        api_key = _header(request, "X-Api-Key")
        if not app_id or not device_id or not api_key:
            raise ChatError(Code.MISSING_PARAMS, "X-App-Id, X-Device-Id and X-Api-Key are required")
        if not self._chat.contract.definition("device_id").is_valid(device_id):
            raise ChatError(
                Code.INVALID_PAYLOAD,
                "X-Device-Id must be 1 to 128 characters without control characters",
                field="X-Device-Id",
            )
        if not await store_call(store.verify_api_key(app_id, api_key)):
            raise ChatError(Code.INVALID_CREDENTIALS)
        return Caller(app_id, device_id)

    async def _conversation(self, caller: Caller, conversation_id: str) -> Conversation:
        conversation = await store_call(
            self._chat.store.get_conversation(caller.app_id, conversation_id)
        )
        if conversation is None or (
            caller.device_id is not None and conversation.device_id != caller.device_id
        ):
            raise ChatError(Code.CONVERSATION_NOT_FOUND)
        return conversation

    async def _body(self, request: Request, http: HttpConnection, schema: str) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = http.content_length(request)
        if length is not None and length > self._max_body:
            raise _TooLarge
        try:
            raw = await http.read_body(self._max_body)
        except RequestTooLarge:
            raise _TooLarge from None
        if not raw:
            body: Any = {}
        elif content_type != "application/json":
            raise _NotJson
        else:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ChatError(Code.INVALID_PAYLOAD, "the request body is not JSON") from None
        self._check(schema, body)
        return body

    def _check(self, schema: str, instance: Any) -> None:
        try:
            self._chat.contract.check(schema, instance)
        except Violation as violation:
            raise ChatError(
                Code.INVALID_PAYLOAD, violation.message, field=violation.field
            ) from None

    # --- the calls ---------------------------------------------------------------------

    async def _create_conversation(
        self, caller: Caller, request: Request, http: HttpConnection
    ) -> Response:
        await self._body(request, http, "rest/conversation.create.request.schema.json")
        if caller.device_id is None:
            raise ChatError(Code.INVALID_PAYLOAD, "only a device creates its conversations")
        conversation = await store_call(
            self._chat.store.create_conversation(caller.app_id, caller.device_id)
        )
        return _json(201, conversation_payload(conversation))

    async def _list_conversations(self, caller: Caller) -> Response:
        conversations = await store_call(
            self._chat.store.list_conversations(
                caller.app_id, caller.device_id, limit=_MAX_CONVERSATIONS + 1
            )
        )
        listed = conversations[:_MAX_CONVERSATIONS]
        return _json(
            200,
            {
                "conversations": [conversation_payload(c) for c in listed],
                "has_more": len(conversations) > _MAX_CONVERSATIONS,
            },
        )

    async def _post_message(
        self, caller: Caller, conversation: Conversation, request: Request, http: HttpConnection
    ) -> Response:
        body = await self._body(request, http, "rest/message.create.request.schema.json")
        if caller.device_id is not None:  # a device's messages count however they come
            await self._chat.limits.message(caller.app_id, caller.device_id)
        payload, created = await self._chat.post_message(
            caller.app_id,
            conversation.id,
            local_id=body["local_id"],
            body=body["body"],
            sender=caller.sender,
        )
        return _json(201 if created else 200, payload)

    async def _list_messages(self, conversation: Conversation, request: Request) -> Response:
        query = dict(request.query)
        try:
            self._chat.contract.check("rest/messages.list.query.schema.json", query)
        except Violation as violation:
            if violation.field == "after":
                raise ChatError(Code.INVALID_CURSOR) from None
            raise ChatError(
                Code.INVALID_PAYLOAD, violation.message, field=violation.field
            ) from None
        limit = int(query.get("limit", "50"))
        try:
            messages, has_more = await store_call(
                self._chat.store.list_messages(
                    conversation.id, after=query.get("after"), limit=limit
                )
            )
        except InvalidCursor:
            raise ChatError(Code.INVALID_CURSOR) from None
        return _json(
            200, {"messages": [message_payload(m) for m in messages], "has_more": has_more}
        )


class _TooLarge(Exception):
    pass


class _NotJson(Exception):
    pass


def _header(request: Request, name: str) -> str | None:
    """A header's value as UTF-8 text (HTTP carries bytes; the transport hands them over
    as Latin-1, which maps each byte to one character, so this is lossless)."""
    value = request.headers.get(name.lower())
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ChatError(
            Code.INVALID_PAYLOAD, f"the {name} header is not UTF-8", field=name
        ) from None


async def _answered(call: Awaitable[Response]) -> Response:
    """The handler's response, or the contract's error body for what it raised."""
    try:
        return await call
    except ChatError as error:
        return error_response(error)
    except _TooLarge:
        return _json(413, {"error": {"code": "INVALID_PAYLOAD", "message": "body too large"}})
    except _NotJson:
        message = "the body must be application/json"
        return _json(415, {"error": {"code": "INVALID_PAYLOAD", "message": message}})
