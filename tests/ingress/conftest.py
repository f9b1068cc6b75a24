"""Fixtures of the ingress tests: routing with every source, a recording publisher, an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from tests.ingress.ingress_signing import TENANT, RecordingPublisher, routing_dict


@pytest.fixture
def routing() -> Routing:
    return Routing.model_validate(routing_dict(TENANT))


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(routing: Routing, publisher: RecordingPublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(ingress_max_body_bytes=64 * 1024), routing, publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as c:
        yield c
