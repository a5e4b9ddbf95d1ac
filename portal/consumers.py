"""The live-update websocket. A page subscribes to the topics it shows; each topic is checked
against the permission resolver before the socket joins its group."""

import re

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.permissions import can_subscribe

from .live import group_name, user_group

TOPIC_RE = re.compile(r"^[a-z]+(\.[0-9]+)?(\.[a-z]+)?$")
MAX_TOPICS = 1000


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Sends {"topic": ...} whenever something a subscribed topic covers changes."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.topics: set[str] = set()
        # Told to re-check its topics when this user's permissions change.
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
        for topic in getattr(self, "topics", ()):
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)

    async def receive_json(self, content, **kwargs):
        wanted = content.get("subscribe") if isinstance(content, dict) else None
        if not isinstance(wanted, list):
            await self.send_json({"error": 'send {"subscribe": [topics]}'})
            return
        accepted, refused = [], []
        for topic in wanted[:MAX_TOPICS]:
            if not isinstance(topic, str) or not TOPIC_RE.match(topic):
                refused.append(str(topic)[:100])
                continue
            if topic in self.topics:
                accepted.append(topic)
            elif await database_sync_to_async(can_subscribe)(self.scope["user"], topic):
                await self.channel_layer.group_add(group_name(topic), self.channel_name)
                self.topics.add(topic)
                accepted.append(topic)
            else:
                refused.append(topic)
        await self.send_json({"subscribed": accepted, "refused": refused})

    async def live_recheck(self, message):
        """A permission of this user changed: leave every topic they may no longer follow."""
        user = self.scope["user"]
        await database_sync_to_async(user.refresh_from_db)()
        revoked = []
        for topic in sorted(self.topics):
            if not await database_sync_to_async(can_subscribe)(user, topic):
                await self.channel_layer.group_discard(group_name(topic), self.channel_name)
                self.topics.discard(topic)
                revoked.append(topic)
        if revoked:
            await self.send_json({"revoked": revoked})

    async def live_changed(self, message):
        await self.send_json(
            {"topic": message["topic"], **({"gone": True} if message.get("gone") else {})}
        )
