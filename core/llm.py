"""The one module that talks to language models, through litellm.

Model strings are litellm's ``provider/name``: ``openai/gpt-4o-mini``, ``anthropic/claude-3-5-haiku-latest``,
``hosted_vllm/Qwen/Qwen2.5-7B-Instruct`` with ``api_base="http://localhost:8000/v1"``,
``ollama_chat/llama3.1`` with ``api_base="http://localhost:11434"``. Every call is recorded as an
``LLMCall``: messages, response, token counts, seconds, and the cost in US dollars from litellm's
price table (``None`` when the model has no known price, as for local servers). Rate limits and
transient server errors are retried with exponential backoff; anything else becomes an ``LLMError``
with one clear line.

Running against a real provider: set the provider's key the way litellm reads it (e.g.
``OPENAI_API_KEY``), then ``selfloop evolve --model openai/gpt-4o-mini`` or
``SELFLOOP_LLM_MODEL=hosted_vllm/NAME SELFLOOP_LLM_API_BASE=http://localhost:8000/v1 selfloop evolve``.
Offline tests pass ``mock_response`` (litellm's own): a string, an exception, or a list of them
consumed one per call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SelfloopError
from .types import LLMCall

# litellm fetches its price table from the network at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class LLMError(SelfloopError):
    """A language-model call failed for a reason retrying cannot fix (or retries ran out)."""


def litellm_module():
    """litellm, imported on first use (after the offline price-table setting above)."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def check_model_string(model: str) -> str:
    """``provider/name`` or a clear error; the provider must be one litellm knows."""
    if not model or "/" not in model or model.startswith("/") or model.endswith("/"):
        raise LLMError(
            f"model {model!r} is not in litellm's provider/name form "
            "(e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, hosted_vllm/NAME, ollama_chat/NAME)"
        )
    provider = model.split("/", 1)[0]
    known = {p.value if hasattr(p, "value") else str(p) for p in litellm_module().provider_list}
    if provider not in known:
        raise LLMError(f"model {model!r}: unknown provider {provider!r} (litellm knows: {', '.join(sorted(known)[:12])}, ...)")
    return model


@dataclass
class LLM:
    """A configured model: call it with messages, get text back, every call recorded in ``calls``."""

    model: str
    api_base: str | None = None
    temperature: float = 0.7
    max_tokens: int = 2048
    timeout_s: float = 120
    retries: int = 4
    backoff_s: float = 2.0  # first wait; doubles on each retry
    mock_response: Any = None  # litellm's mock_response: str, exception, or a list used one per call
    calls: list[LLMCall] = field(default_factory=list)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self):
        check_model_string(self.model)
        if isinstance(self.mock_response, list) and not self.mock_response:
            raise LLMError("mock_response is an empty list")

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float | None:
        costs = [c.cost_usd for c in self.calls]
        return None if costs and all(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def complete(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's reply to ``messages`` (retried on rate limits and transient errors)."""
        litellm = litellm_module()
        transient = (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
                     litellm.APIConnectionError, litellm.Timeout)
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            start = time.perf_counter()
            try:
                response = litellm.completion(**self._request(messages))
            except transient as exc:
                if attempt == self.retries:
                    raise LLMError(f"{self.model}: giving up after {attempt + 1} attempts: {_one_line(exc)}") from None
                self.sleep(wait)
                wait *= 2
                continue
            except litellm.AuthenticationError as exc:
                raise LLMError(f"{self.model}: authentication failed (is the provider's API key set?): {_one_line(exc)}") from None
            except Exception as exc:  # bad request, unknown model, provider bug: retrying will not help
                raise LLMError(f"{self.model}: {type(exc).__name__}: {_one_line(exc)}") from None
            text = response.choices[0].message.content or ""
            usage = getattr(response, "usage", None)
            self.calls.append(LLMCall(
                model=self.model, messages=[dict(m) for m in messages], response=text,
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                cost_usd=_cost(litellm, response), seconds=time.perf_counter() - start,
            ))
            return text
        raise AssertionError("unreachable")

    def _request(self, messages) -> dict[str, Any]:
        request = {
            "model": self.model, "messages": list(messages), "temperature": self.temperature,
            "max_tokens": self.max_tokens, "timeout": self.timeout_s, "num_retries": 0,
        }
        if self.api_base:
            request["api_base"] = self.api_base
        if self.mock_response is not None:
            mock = self.mock_response
            if isinstance(mock, list):  # one per call; the last one repeats
                mock = mock.pop(0) if len(mock) > 1 else mock[0]
            request["mock_response"] = mock
        return request


def _cost(litellm, response) -> float | None:
    """litellm's price for this response; None when the model has no known price."""
    try:
        cost = litellm.completion_cost(completion_response=response)
    except Exception:  # unmapped model (local servers, custom names)
        return None
    return float(cost) if cost is not None else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")

