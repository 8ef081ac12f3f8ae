"""core/llm.py against litellm's own mock_response: no network."""

import pytest
from selfloop.core.config import LLMSettings
from selfloop.core.llm import (
    LLM,
    LLMError,
    check_model_string,
    litellm_module,
)

litellm = litellm_module()  # through selfloop: its price table stays offline

MESSAGES = [{"role": "user", "content": "hello"}]


def rate_limit():
    return litellm.RateLimitError(message="slow down", llm_provider="openai", model="gpt-4o-mini")


def test_records_tokens_and_cost_of_each_call():
    llm = LLM("openai/gpt-4o-mini", mock_response="hi there")
    assert llm.complete(MESSAGES) == "hi there"
    call = llm.calls[0]
    assert call.model == "openai/gpt-4o-mini" and call.messages == MESSAGES and call.response == "hi there"
    assert call.prompt_tokens > 0 and call.completion_tokens > 0
    assert call.cost_usd is not None and call.cost_usd > 0  # a priced model
    assert llm.tokens == call.prompt_tokens + call.completion_tokens


def test_unpriced_local_model_records_null_cost():
    llm = LLM("hosted_vllm/my-model", api_base="http://localhost:8000/v1", mock_response="ok")
    llm.complete(MESSAGES)
    assert llm.calls[0].cost_usd is None and llm.cost_usd is None


def test_rate_limit_is_retried_with_backoff():
    waits = []
    llm = LLM("openai/gpt-4o-mini", mock_response=[rate_limit(), rate_limit(), "finally"], sleep=waits.append,
              backoff_s=0.5)
    assert llm.complete(MESSAGES) == "finally"
    assert waits == [0.5, 1.0]
    assert len(llm.calls) == 1


def test_rate_limit_gives_up_after_retries():
    llm = LLM("openai/gpt-4o-mini", mock_response=rate_limit(), retries=2, sleep=lambda s: None)
    with pytest.raises(LLMError, match="giving up after 3 attempts"):
        llm.complete(MESSAGES)


def test_api_error_is_one_clear_line_and_not_retried():
    waits = []
    bad = litellm.BadRequestError(message="context too long", llm_provider="openai", model="gpt-4o-mini")
    llm = LLM("openai/gpt-4o-mini", mock_response=[bad, "never"], sleep=waits.append)
    with pytest.raises(LLMError, match="context too long") as info:
        llm.complete(MESSAGES)
    assert "\n" not in str(info.value) and waits == []


@pytest.mark.parametrize("model", ["gpt-4o", "/x", "openai/", "notaprovider/x"])
def test_bad_model_strings_are_rejected(model):
    with pytest.raises(LLMError):
        check_model_string(model)


def test_settings_with_env_fallback(monkeypatch):
    monkeypatch.delenv("SELFLOOP_LLM_MODEL", raising=False)
    assert LLMSettings().model is None
    monkeypatch.setenv("SELFLOOP_LLM_MODEL", "ollama_chat/llama3.1")
    monkeypatch.setenv("SELFLOOP_LLM_API_BASE", "http://localhost:11434")
    settings = LLMSettings()
    assert settings.model == "ollama_chat/llama3.1" and settings.api_base == "http://localhost:11434"
