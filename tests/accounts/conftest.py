"""Fixtures shared by the test modules of this folder."""

import uuid

import pytest
from accounts_views_support import build_world


@pytest.fixture
def world(db):
    return build_world()


@pytest.fixture
def own_channel_prefix(settings):
    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"accviews-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers
