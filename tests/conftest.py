"""Fixtures that start the real services on free loopback ports: the Tansu broker,
redis-server and the vLLM CPU server. Each is stopped when its scope ends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from intentstream.deploy import stack
from intentstream.deploy.model import ensure_model
from intentstream.settings import Settings
from intentstream.store import RedisClient, connect
from tests.helpers import isolated_settings

# The Triton kernels run on the CPU under the interpreter in the tests (set before anything
# imports triton; nothing above does). kernels/compile_check.py compiles them for Hopper in a
# clean process.
os.environ.setdefault("TRITON_INTERPRET", "1")

# The converted model is built once by `make setup` under the repo's own home and reused.
MODEL_HOME = Path(__file__).resolve().parent.parent / ".intentstream"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_broker(tmp_path_factory.mktemp("broker"))
    yield service
    stack.stop(service)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_redis(tmp_path_factory.mktemp("redis"))
    yield service
    stack.stop(service)


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    """The real vLLM OpenAI server on CPU with the default model (about a minute to start)."""
    if os.environ.get("LLM_BASE_URL"):
        pytest.fail("unset LLM_BASE_URL: the tests start their own vLLM server")
    model = ensure_model(Settings(home=MODEL_HOME))
    home = tmp_path_factory.mktemp("llm")
    service = stack.start_llm(Settings(home=home), model, progress=lambda _: None)
    yield service
    stack.stop(service)


@pytest.fixture
async def redis_client(redis_server: stack.Service) -> AsyncIterator[RedisClient]:
    client = connect(redis_server.address)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def app_settings(tmp_path: Path, broker: stack.Service, redis_server: stack.Service) -> Settings:
    """Settings for one test: its own app id and topic names on the shared broker."""
    return isolated_settings(tmp_path / "home", broker.address, redis_url=redis_server.address)
