"""Every overlay renders with ``kubectl kustomize`` and every resource validates.

Built-in kinds validate against the Kubernetes OpenAPI schemas shipped by ``kubernetes-validate``
(strict: unknown fields fail), custom resources against ``crd_schemas``. A kind neither knows fails.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest

from tests.deploy.conftest import DEPLOY, Resource, render
from tests.deploy.crd_schemas import CRD_SCHEMAS, SCALED_OBJECT

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (dev extra) ships the Kubernetes schemas"
)

# Oldest Kubernetes minor we support (HPA autoscaling/v2, PDB policy/v1 GA, seccompProfile
# fields) and the newest the package ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def _validate(resource: Resource) -> None:
    key = (resource["apiVersion"], resource["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).validate(resource)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def test_every_resource_validates(resources: list[Resource]) -> None:
    errors = []
    for r in resources:
        try:
            _validate(r)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            errors.append(f"{r['kind']}/{r['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{r['kind']}/{r['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_base_renders_on_its_own() -> None:
    kinds = {r["kind"] for r in render(DEPLOY / "base")}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject", "KafkaTopic"} <= kinds


def test_validation_rejects_a_misspelt_field(prod: list[Resource]) -> None:
    # Guards the guard: strict schemas must catch a typo the API server would silently drop.
    deployment = copy.deepcopy(next(r for r in prod if r["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    scaled = copy.deepcopy(next(r for r in prod if r["kind"] == "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["consumerGroupName"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCALED_OBJECT).validate(scaled)
    topic = copy.deepcopy(next(r for r in prod if r["kind"] == "KafkaTopic"))
    del topic["metadata"]["labels"]["strimzi.io/cluster"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(topic)


def test_crd_schemas_are_valid_json_schemas() -> None:
    for schema in CRD_SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
