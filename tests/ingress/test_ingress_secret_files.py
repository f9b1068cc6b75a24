"""An unreadable secret file makes the ingress not ready and answers 503 (never 500) per request."""

from __future__ import annotations

from pathlib import Path

import httpx

from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from ledgerflow.ingress.readiness import all_ready, secrets_readiness
from tests.ingress.ingress_signing import RecordingPublisher


def _routing(secrets_file: Path) -> Routing:
    return Routing.model_validate({"tenants": {"acme": {"sources": {"mercoa": {"tokens_file": str(secrets_file)}}}}})


async def test_missing_secret_file_is_not_ready_and_503(tmp_path: Path) -> None:
    secrets = tmp_path / "mercoa-tokens"  # not mounted yet
    routing = _routing(secrets)
    publisher = RecordingPublisher()

    async def broker_ok() -> str | None:
        return None

    app = create_app(Settings(), routing, publisher, readiness=all_ready(secrets_readiness(routing), broker_ok))
    headers = {"content-type": "application/json", "authorization": "Bearer tok-1"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "acme/mercoa" in ready.json()["reason"]
        assert str(secrets) in ready.json()["reason"]

        refused = await client.post(
            "/webhooks/acme/mercoa", content=b'{"eventType": "invoice.created"}', headers=headers
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert refused.json()["type"].endswith("credentials-unavailable")
        assert publisher.records == []

        secrets.write_text("tok-1\n")  # the Secret is mounted
        assert (await client.get("/readyz")).status_code == 200
