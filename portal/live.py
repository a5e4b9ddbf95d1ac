"""Live updates: tell every open page that shows an object that it changed.

Topics are short strings ("vm.12", "vms", "job.7", "events", "hosts", "storage"). Browsers
subscribe to topics over the websocket and, on a message, re-fetch the row or panel through a
normal view, so every permission check stays in views.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def group_name(topic: str) -> str:
    return f"live.{topic}"


def send_now(*topics: str, gone: bool = False) -> None:
    """Send "changed" for the topics at once (callers outside a transaction); `gone`: the
    object behind them was deleted, so pages take it off rather than re-fetch it."""
    layer = get_channel_layer()
    if layer is None or not topics:
        return
    extra = {"gone": True} if gone else {}

    async def _send():
        for topic in dict.fromkeys(topics):
            message = {"type": "live.changed", "topic": topic, **extra}
            await layer.group_send(group_name(topic), message)

    try:
        async_to_sync(_send)()
    except Exception as exc:  # a live update is best effort: the data is already committed
        log.warning("live update for %s not sent: %s", topics, exc)


def broadcast(*topics: str) -> None:
    """Send "changed" for the topics once the current transaction commits."""
    transaction.on_commit(lambda: send_now(*topics))


def broadcast_gone(*topics: str) -> None:
    """Once the current transaction commits, tell pages that the objects behind these topics
    (a removed VM's "vm.12") are deleted: they take the row or pane off and stop asking."""
    transaction.on_commit(lambda: send_now(*topics, gone=True))


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def recheck_users(user_ids) -> None:
    """After commit, tell these users' open websockets to re-check every topic they follow
    (a permission was taken away or changed)."""
    user_ids = list(dict.fromkeys(user_ids))

    def send():
        layer = get_channel_layer()
        if layer is None or not user_ids:
            return

        async def _send():
            for pk in user_ids:
                await layer.group_send(user_group(pk), {"type": "live.recheck"})

        try:
            async_to_sync(_send)()
        except Exception as exc:
            log.warning("permission recheck for users %s not sent: %s", user_ids, exc)

    transaction.on_commit(send)
