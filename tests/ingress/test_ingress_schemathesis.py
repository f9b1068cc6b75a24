"""Property-based checks of the ingress against its own OpenAPI document (schemathesis, in process).

Every documented operation gets generated requests (valid and invalid per the schema) for the
configured tenant: the ingress must never answer a 5xx (the publisher here is healthy, so not even
503), must answer refusals as problem+json, and must never accept a request whose credentials are
made up by the generator.
"""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, settings

from ledgerflow.core.settings import Routing, Settings
from ledgerflow.ingress.app import create_app
from tests.ingress.ingress_signing import TENANT, RecordingPublisher, routing_dict

PUBLISHER = RecordingPublisher()
APP = create_app(Settings(ingress_max_body_bytes=64 * 1024), Routing.model_validate(routing_dict(TENANT)), PUBLISHER)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_forged_acceptance(case: Any) -> None:
    if "tenant" in (case.path_parameters or {}):
        case.path_parameters["tenant"] = TENANT
    before = len(PUBLISHER.records)
    response = case.call()
    assert response.status_code < 500, response.text
    if case.path.startswith("/webhooks/"):
        assert response.status_code != 202, f"generated credentials were accepted: {case.headers} {case.query}"
        assert len(PUBLISHER.records) == before
        assert response.headers["content-type"][0] == "application/problem+json"
        problem = orjson.loads(response.content)
        assert problem["status"] == response.status_code
