"""The admin dashboard (``/dashboard/``) in a real browser against a real server.

Headless Chromium signs in with an app's id and admin token; a device connects with
python-socketio's client, talks and leaves; the page must show each step, and what the
agent types and sends on the page must reach the device. A screenshot of the page in use
is kept in ``.artifacts/dashboard.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ..chat._site import Site, connect_device, open_site
from ..interop._peers import WEBSOCKET, open_peer
from ._browser import ARTIFACTS, Browser, open_browser, require_chromium

SCREENSHOT = ARTIFACTS / "dashboard.png"

# The page marks what it shows with data attributes; these scripts read them.
DEVICE_ROW = "#devices li[data-device-id='{device}']"
SHOWN = (
    "const e = document.querySelector(arguments[0]); return e !== null && !e.closest('[hidden]')"
)
TEXT_OF = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null"


async def _sign_in(browser: Browser, site: Site) -> None:
    await browser.get(f"{site.url}/dashboard")  # redirected to /dashboard/
    await browser.wait_for("the sign-in form", SHOWN, "#login-form")
    await browser.type("#login-app-id", site.app_id)
    await browser.type("#login-token", site.app.admin_token)
    await browser.click("#login-submit")
    await browser.wait_for("the dashboard", SHOWN, "#app-view")
    await browser.wait_for(
        "a live connection", SHOWN, "#conn-status[data-state='connected']", timeout=20
    )


async def _device_is(browser: Browser, device: str, *, online: bool, connections: int) -> None:
    row = DEVICE_ROW.format(device=device)
    selector = f"{row}[data-online='{str(online).lower()}'][data-connections='{connections}']"
    state = "online" if online else "offline"
    await browser.wait_for(f"{device} {state} with {connections} connection(s)", SHOWN, selector)


@pytest.fixture
def chromium() -> None:
    """Skip (fail under CI=true) without chromium; a sync fixture, so that pytest reports
    the reason itself rather than an exception group from the test's nursery."""
    require_chromium()


@pytest.mark.usefixtures("chromium")
async def test_an_agent_watches_and_answers_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(120):
        async with (
            open_site(f"sqlite:///{tmp_path / 'replyhq.db'}") as site,
            open_browser(tmp_path / "chromium-profile") as browser,
            open_peer("python") as peer,
        ):
            cid = (await site.new_conversation("phone"))["id"]
            conversation = f"#conversations li[data-conversation-id='{cid}']"
            # Another device's conversation, written to over REST, that nobody opens.
            other = (await site.new_conversation("ana-laptop"))["id"]
            status, _ = await site.rest(
                "POST",
                f"/v1/conversations/{other}/messages",
                {"body": "Where is my order #1234?", "local_id": "ana-1"},
                headers=site.device_headers("ana-laptop"),
            )
            assert status == 201

            # Signed in, the page lists the conversation; its device has never connected.
            await _sign_in(browser, site)
            await browser.wait_for("the conversation", SHOWN, conversation)
            await browser.wait_for(
                "the other conversation",
                SHOWN,
                f"#conversations li[data-conversation-id='{other}']",
            )
            await _device_is(browser, "phone", online=False, connections=0)
            await _device_is(browser, "ana-laptop", online=False, connections=0)
            await browser.click(f"{conversation} button")
            await browser.wait_for(
                "the empty conversation",
                "return document.getElementById('thread-empty-text').textContent"
                " === 'No messages yet. Say hello!'",
            )

            # A device connects: its session and its presence appear.
            connected = await connect_device(peer, "device", site, "phone", WEBSOCKET)
            connection_id = connected.args[0]["connection_id"]
            joined = await peer.next_event("device", "conversation:joined")
            assert joined.args[0]["conversation_id"] == cid
            session = f"#sessions li[data-connection-id='{connection_id}']"
            await browser.wait_for("the device's session", SHOWN, session)
            assert "phone" in await browser.js(TEXT_OF, session)
            await _device_is(browser, "phone", online=True, connections=1)
            # session:connect does not name the node; the page learns it from sessions:list.
            await browser.wait_for("the session's node", SHOWN, f"{session} dd.session-node")

            # The device writes (markup in it must stay text) and types.
            body = "Hello! <b>Is anyone there?</b> & more"
            send = {"conversation_id": cid, "body": body, "local_id": "device-1"}
            (ack,) = await peer.emit_with_ack("device", "message:send", send)
            assert ack["success"] is True, ack
            assert (await peer.next_event("device", "message:new")).args[0]["sender"] == "user"
            bubble = f"#messages li[data-message-id='{ack['message']['id']}'] .bubble"
            await browser.wait_for("the device's message", SHOWN, bubble)
            assert await browser.js(TEXT_OF, bubble) == body
            assert (
                await browser.js("return document.querySelector(arguments[0] + ' b')", bubble)
                is None
            )
            await peer.emit("device", "typing:start", {"conversation_id": cid})
            await browser.wait_for(
                "the device typing",
                "const e = document.getElementById('typing');"
                " return !e.hidden && e.textContent.includes('phone is typing')",
            )
            # The server ends typing by itself (the test site's timeout is short).
            await browser.wait_for(
                "the typing indicator gone", "return document.getElementById('typing').hidden"
            )

            # The agent types (the device is told) and sends with Enter.
            answer = "Hi! This is Sam from support. How can I help?"
            await browser.type("#composer-input", answer)
            typing = await peer.next_event("device", "agent:typing")
            assert typing.args == [{"conversation_id": cid, "is_typing": True}]
            await browser.press_enter("#composer-input")
            delivered = (await peer.next_event("device", "message:new")).args[0]
            assert (delivered["sender"], delivered["body"]) == ("agent", answer)
            await browser.wait_for(
                "the agent's message as sent",
                SHOWN,
                f"#messages li[data-message-id='{delivered['id']}'][data-sender='agent']",
            )
            assert (
                await browser.js("return document.querySelectorAll('#messages .pending').length")
                == 0
            )
            assert await browser.js("return document.getElementById('composer-input').value") == ""

            # The device reads it: the receipt reaches the page.
            read = {"conversation_id": cid, "message_id": delivered["id"]}
            assert await peer.emit_with_ack("device", "message:read", read) == [{"success": True}]
            await browser.wait_for(
                "the agent's message as read",
                SHOWN,
                f"#messages li[data-message-id='{delivered['id']}'] .status-read",
            )

            await browser.screenshot(SCREENSHOT)
            with capsys.disabled():
                print(f"\ndashboard screenshot: {SCREENSHOT}")

            # The device leaves: its session goes, it shows offline.
            await peer.disconnect("device")
            await browser.wait_for(
                "no live session", "return document.querySelectorAll('#sessions li').length === 0"
            )
            await _device_is(browser, "phone", online=False, connections=0)

            # A reload keeps the tab signed in (sessionStorage) and shows the history again.
            await browser.refresh()
            await browser.wait_for(
                "a live connection after reload", SHOWN, "#conn-status[data-state='connected']"
            )
            assert await browser.js("return document.getElementById('login-view').hidden")

            assert await browser.console_errors() == []
