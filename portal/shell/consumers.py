"""The live-update websocket. A page subscribes to the topics it shows; the topics of a frame are
checked together against the permission resolver before the socket joins their groups.

A socket lives only as long as its session: logout, a password change or a disabled account
ends it (`portal.kernel.live.close_user_sockets`, `portal.kernel.live.sessions_recheck`), and each socket
re-checks its session every VIREO_LIVE_SESSION_CHECK_SECONDS on its own."""

import asyncio
import json
import logging
import re
import time
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts.permissions import subscribable
from portal.kernel.live import OWN_TOPICS, group_name, user_group

log = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"[a-z]+(\.[0-9]{1,18})?(\.[a-z]+)?")  # fullmatch: "$" lets a final \n by
MAX_TOPICS = 2000  # per socket: a page shows far fewer; it unsubscribes what it no longer shows
MAX_FRAME_CHARS = 200_000  # about MAX_TOPICS topics of the longest form, quoted
FRAME_BURST = 20  # frames a socket may send at once ...
FRAME_RATE = 5.0  # ... and then per second
USAGE = 'send {"subscribe": [topics]} or {"unsubscribe": [topics]}'
SESSION_ENDED = 4401  # close code: the session is over (logged out, password changed, disabled)


def session_still_valid(session_key: str | None, user_id: int) -> bool:
    """Whether the session a socket was opened with still logs `user_id` in: it exists and has
    not expired, its password hash still matches and the account is active (the same checks
    Django makes on every HTTP request)."""
    from django.contrib.auth import get_user
    from django.contrib.auth.models import User

    if session_key is None:  # a socket opened without a session (tests): the account only
        return User.objects.filter(pk=user_id, is_active=True).exists()
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))
    return user.is_authenticated and user.pk == user_id and user.is_active


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Sends {"topic": ...} whenever something a subscribed topic covers changes."""

    ended = False

    async def __call__(self, scope, receive, send):
        # However the consumer ends (a disconnect, a crash, a lost Redis connection), it
        # leaves its groups: a dead channel must not stay in them to be fanned out to.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._leave())

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None) if session is not None else None
        self.topics: set[str] = set()  # topics followed through their groups
        self.own: set[str] = set()  # the user's own topics, told through the user group
        self.tokens, self.refilled = float(FRAME_BURST), time.monotonic()
        user._vireo_grants = {}  # the user's grants, read once and kept until they change
        # Told to re-check its topics when this user's permissions change, and to end when
        # the session does.
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        self.joined_user_group = True
        await self.accept()
        self.session_task = asyncio.ensure_future(self._check_session_periodically())

    async def _leave(self):
        """Leave every group (once) and stop the periodic session check."""
        task = getattr(self, "session_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self.channel_layer is None:
            return
        groups = [group_name(t) for t in getattr(self, "topics", ())]
        if getattr(self, "joined_user_group", False):
            groups.append(user_group(self.user_id))
        self.topics, self.joined_user_group = set(), False
        for group in groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as exc:  # Redis gone: the group's expiry will drop the channel
                log.warning("could not leave %s: %s", group, exc)

    async def _end(self):
        """The session is over: stop following anything and close the socket."""
        if self.ended:
            return
        self.ended = True
        await self._leave()
        await self.close(code=SESSION_ENDED)

    async def disconnect(self, code):
        await self._leave()

    # -- frames from the page -----------------------------------------------------------------

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(FRAME_BURST, self.tokens + (now - self.refilled) * FRAME_RATE)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if self.ended:
            return
        if not self._take_token():
            await self.send_json({"error": f"too many requests: at most {FRAME_RATE:g} a second"})
            return
        if text_data is None or len(text_data) > MAX_FRAME_CHARS:
            await self.send_json({"error": USAGE})
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_json({"error": USAGE})
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        wanted = content.get("subscribe", []) if isinstance(content, dict) else None
        unwanted = content.get("unsubscribe", []) if isinstance(content, dict) else None
        if (
            not isinstance(wanted, list)
            or not isinstance(unwanted, list)
            or not ({"subscribe", "unsubscribe"} & content.keys())
        ):
            await self.send_json({"error": USAGE})
            return
        reply = {}
        if unwanted:
            reply["unsubscribed"] = await self._unsubscribe(unwanted)
        if "subscribe" in content:
            reply.update(await self._subscribe(wanted))
        await self.send_json(reply)

    async def _unsubscribe(self, unwanted: list) -> list[str]:
        """Stop following topics the page no longer shows; answers those that were followed."""
        left = []
        for topic in dict.fromkeys(t for t in unwanted[:MAX_TOPICS] if isinstance(t, str)):
            if topic in self.topics:
                await self.channel_layer.group_discard(group_name(topic), self.channel_name)
                self.topics.discard(topic)
                left.append(topic)
            elif topic in self.own:
                self.own.discard(topic)
                left.append(topic)
        return left

    async def _subscribe(self, wanted: list) -> dict:
        wanted = wanted[:MAX_TOPICS]
        well_formed = [t for t in wanted if isinstance(t, str) and TOPIC_RE.fullmatch(t)]
        self.own.update(t for t in well_formed if t in OWN_TOPICS)
        fresh = [
            t for t in dict.fromkeys(well_formed) if t not in self.topics and t not in OWN_TOPICS
        ]
        room = MAX_TOPICS - len(self.topics)
        over = set(fresh[room:]) if room < len(fresh) else set()
        fresh = fresh[: max(room, 0)]
        allowed = (
            await database_sync_to_async(subscribable)(self.scope["user"], fresh)
            if fresh
            else set()
        )
        for topic in fresh:
            if topic in allowed:
                await self.channel_layer.group_add(group_name(topic), self.channel_name)
                self.topics.add(topic)
        accepted, refused = [], []
        for topic in wanted:
            if isinstance(topic, str) and (topic in self.topics or topic in self.own):
                accepted.append(topic)
            else:
                refused.append(str(topic)[:100])
        reply = {"subscribed": accepted, "refused": refused}
        if over:
            reply["error"] = f"at most {MAX_TOPICS} topics per connection"
        return reply

    # -- messages from the portal -------------------------------------------------------------

    async def live_recheck(self, message):
        """A permission of this user changed: leave every topic they may no longer follow, and
        tell the page its lists may hold more (a grant) or fewer objects."""
        if self.ended:
            return
        user = self.scope["user"]
        await database_sync_to_async(user.refresh_from_db)()
        user._vireo_grants = {}
        still = await database_sync_to_async(subscribable)(user, sorted(self.topics))
        revoked = sorted(self.topics - still)
        for topic in revoked:
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)
            self.topics.discard(topic)
        if revoked:
            await self.send_json({"revoked": revoked})
        if "grants" in self.own:
            await self.send_json({"topic": "grants"})

    async def live_close(self, message):
        """Logout: end the sockets of that session (all of the user's when none is named)."""
        key = message.get("session_key")
        if key is None or key == self.session_key:
            await self._end()

    async def live_session_check(self, message):
        """The user's password or account changed: end this socket unless its session is still
        valid."""
        await self._check_session()

    async def _check_session(self):
        if self.ended:
            return
        valid = await database_sync_to_async(session_still_valid)(self.session_key, self.user_id)
        if not valid:
            await self._end()

    async def _check_session_periodically(self):
        while not self.ended:
            await asyncio.sleep(settings.VIREO_LIVE_SESSION_CHECK_SECONDS)
            try:
                self.scope["user"]._vireo_grants = {}  # re-read the grants now and then too
                await self._check_session()
            except Exception:
                log.exception("session check of a live socket failed")

    async def live_changed(self, message):
        if not self.ended:
            await self.send_json(
                {"topic": message["topic"], **({"gone": True} if message.get("gone") else {})}
            )
