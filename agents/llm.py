"""One interface for "an LLM that answers prompts", and its OpenAI-compatible backend.

The backend speaks the OpenAI chat-completions API with JSON-schema-constrained output, so
the vLLM CPU server started by ``intentstream llm`` and a GPU vLLM deployment are
interchangeable.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx


class LLMError(RuntimeError):
    """The LLM service failed to answer (transport error, HTTP error, malformed reply)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer with its cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str
    cached_prompt_tokens: int = 0  # served from the prefix cache (0 when the server does not say)


Message = dict[str, str]


class LLM(Protocol):
    """An LLM that answers chat prompts under a JSON schema."""

    model: str

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any], max_tokens: int, temperature: float
    ) -> Completion: ...


class OpenAICompatibleLLM:
    """Chat completions against an OpenAI-compatible server (vLLM), bounded in flight."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 180.0,
        concurrency: int = 4,
    ) -> None:
        self.model = model
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )
        self._in_flight = asyncio.Semaphore(concurrency)

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any], max_tokens: int, temperature: float
    ) -> Completion:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
        }
        async with self._in_flight:
            started = time.perf_counter()
            try:
                response = await self._client.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                raise LLMError(f"LLM request failed: {exc!r}") from exc
            latency = time.perf_counter() - started
        if response.status_code != 200:
            raise LLMError(f"LLM answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            payload = response.json()
            choice = payload["choices"][0]
            usage = payload.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            return Completion(
                text=choice["message"]["content"] or "",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=latency,
                finish_reason=str(choice.get("finish_reason")),
                cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"malformed LLM reply: {response.text[:300]}") from exc

    async def answers(self) -> bool:
        """Whether the server lists its models now (a readiness check)."""
        try:
            return (await self._client.get("/models", timeout=3.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()


async def wait_until_ready(base_url: str, timeout_s: float) -> list[str]:
    """Poll ``/models`` until the server answers; returns the served model names."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get("/models")
                if response.status_code == 200:
                    return [m["id"] for m in response.json()["data"]]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            await asyncio.sleep(1.0)
    raise LLMError(f"LLM server at {base_url} not ready after {timeout_s:.0f}s (last error: {last!r})")
