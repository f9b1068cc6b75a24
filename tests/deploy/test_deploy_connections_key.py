"""The connections key (Secret ``ledgerflow-connections-key``) reaches exactly the pods that decrypt with it.

The Fernet key encrypts the credentials of connections kept in the state store, their OAuth tokens
and pending consents (``ledgerflow.core.cipher``). It is read from ``LEDGERFLOW_CONNECTIONS_KEY_FILE``:
each workload that needs it mounts the Secret as a file and points the setting at it, rendered
from the overlays as the cluster would get them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr

from ledgerflow.core.cipher import ConnectionCipher
from ledgerflow.core.settings import Settings
from tests.deploy.conftest import Resource, of_kind

SECRET = "ledgerflow-connections-key"
READS_CONNECTIONS = {
    # connect (OAuth consent) and credential writes over /v1/stored-connections
    "audit",
    # each fleet decrypts its kind's stored connections' credentials and OAuth tokens
    "connector",
    # sync-reference --all reads with every connection's credentials and tokens
    "sync-reference",
}
"""Services that decrypt. The ingress, transformer, pollers and source writer merge stored connections
without credentials (``stored_routing(decrypt=())``) and must not hold the key."""


def _service(d: Resource) -> str:
    return str(d["spec"]["template"]["spec"]["containers"][0]["args"][0])


def _key_file(d: Resource) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The pod's key volume, the mount path of that volume in the main container, and the setting's value."""
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = [v for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == SECRET]
    assert len(volumes) <= 1, d["metadata"]["name"]
    volume = volumes[0] if volumes else None
    mount = next((m for m in container.get("volumeMounts", []) if volume and m["name"] == volume["name"]), None)
    env = next((e for e in container.get("env", []) if e["name"] == "LEDGERFLOW_CONNECTIONS_KEY_FILE"), None)
    if mount is not None:
        assert mount.get("readOnly") is True, d["metadata"]["name"]
        assert "subPath" not in mount, "a subPath mount never sees a rotated key"
    return volume, mount["mountPath"] if mount else None, env["value"] if env else None


def test_every_workload_that_decrypts_connections_mounts_the_key(resources: list[Resource], tmp_path: Path) -> None:
    deployments = of_kind(resources, "Deployment")
    assert {_service(d) for d in deployments} >= READS_CONNECTIONS
    key = Fernet.generate_key().decode()
    for d in deployments:
        name = d["metadata"]["name"]
        volume, mount_path, setting = _key_file(d)
        if _service(d) not in READS_CONNECTIONS:
            assert (volume, setting) == (None, None), f"{name} must not hold the connections key"
            continue
        assert volume is not None, f"{name} does not mount Secret {SECRET}"
        # Required: a pod without the key would start and fail on the first stored credential.
        assert volume["secret"].get("optional") is not True, name
        assert volume["secret"].get("defaultMode") == 0o440, name
        items = volume["secret"].get("items")
        assert items is None or any(i["key"] == "key" for i in items), name
        assert mount_path is not None, f"{name} has the key volume but does not mount it"
        assert setting == f"{mount_path}/key", f"{name}: LEDGERFLOW_CONNECTIONS_KEY_FILE is not the mounted file"
        # The setting, read as the pod reads it, decrypts with the key the Secret holds.
        mounted = tmp_path / name / Path(setting).relative_to("/")
        mounted.parent.mkdir(parents=True)
        mounted.write_text(key + "\n", encoding="utf-8")
        cipher = ConnectionCipher.from_settings(Settings(connections_key_file=mounted))
        sealed = ConnectionCipher.from_settings(Settings(connections_key=SecretStr(key))).seal("c", "v")
        assert cipher.unseal("c", sealed) == "v"
