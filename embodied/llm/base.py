"""The interface every LLM backend implements."""

from __future__ import annotations

from typing import Protocol, Sequence

from embodied.errors import EmbodiedError

Messages = Sequence[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]


class LLMUnavailable(EmbodiedError, RuntimeError):
    """The backend cannot be reached or loaded; the message says which and what to do (the CLI prints it as one
    ``error:`` line: a server that is down is bad input, not a bug)."""


class LLM(Protocol):
    def generate(self, messages: Messages, max_tokens: int = 64) -> str:
        """Greedy completion of the assistant's reply."""

    def score(self, messages: Messages, candidates: Sequence[str]) -> list[float]:
        """Total log-probability of each candidate as the assistant's reply."""


def choose(llm: LLM, messages: Messages, candidates: Sequence[str]) -> tuple[int, list[float]]:
    """Index of the most likely candidate (length-normalised by characters, so long ones are not
    penalised merely for length), and the raw scores."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    scores = llm.score(messages, candidates)
    normalised = [s / max(len(c), 1) for s, c in zip(scores, candidates)]
    return max(range(len(candidates)), key=normalised.__getitem__), scores
