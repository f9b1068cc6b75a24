"""Fixtures of the fault tests: one pipeline of real processes shared by the module's tests.

Starting six Python processes costs ~20 s on a 2-core machine, so the module shares one
pipeline; each test uses its own invoice ids and checks only its own records. A test that
leaves a process dead does not break the next one: :func:`faults_pipeline` restarts it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.databases import fresh_database, postgres_up
from tests.faults.pipeline import Pipeline, PipelineConfig


@pytest.fixture(scope="module")
async def faults_state_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for the module (the processes write the state store concurrently).

    Module-scoped twin of the suite's ``postgres_url`` (which is per test); skips without PostgreSQL.
    """
    if not postgres_up():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (several processes share the state store)")
    async with fresh_database("ledgerflow_faults") as url:
        yield url


@pytest.fixture(scope="module")
async def running_pipeline(
    kafka_bootstrap: str, kafka_is_embedded: bool, faults_state_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    """Two QuickBooks sandboxes, ingress, transformer and two connectors, each its own OS process."""
    tag = uuid.uuid4().hex[:8]
    config = PipelineConfig(
        bootstrap_servers=kafka_bootstrap,
        embedded=kafka_is_embedded,
        state_url=faults_state_url,
        workdir=Path(tmp_path_factory.mktemp("faults")),
        prefix=f"faults{tag}",
        # Connection names are in consumer group ids: unique, so no other test's group is shared.
        connections=(f"qbo-a-{tag}", f"qbo-b-{tag}"),
    )
    async with Pipeline.start(config) as pipe:
        print(f"\npipeline ready: {', '.join(f'{k} {v:.1f}s' for k, v in pipe.ready_seconds.items())}")
        yield pipe


@pytest.fixture
async def faults_pipeline(running_pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    """The shared pipeline, with every process alive and no fault armed when the test starts."""
    for name, service in running_pipeline.services.items():
        if not service.running:
            await running_pipeline.restart(name)
    for connection in running_pipeline.config.connections:
        await running_pipeline.clear_faults(connection)
    yield running_pipeline
    for connection in running_pipeline.config.connections:
        await running_pipeline.clear_faults(connection)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault scenarios' report (accepted / booked / dead-lettered / lost / duplicated)."""
    from tests.faults.report import table

    text = table()
    if text:
        terminalreporter.section("fault scenarios")
        terminalreporter.write_line(text)
