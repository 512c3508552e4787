"""A client for OpenAI-compatible servers (vLLM, Ollama, llama.cpp server, hosted APIs).

Standard library only (urllib): timeouts, retries with backoff on connection errors and 5xx/429,
and one clear ``LLMUnavailable`` when the server cannot be reached. Candidate scoring uses the
completions endpoint with ``echo`` and ``logprobs`` (vLLM and llama.cpp support it).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Sequence

from embodied.llm.base import LLMUnavailable, Messages


class OpenAICompatibleLLM:
    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model, self.api_key, self.timeout, self.retries, self.backoff = model, api_key, timeout, retries, backoff

    def _post(self, path: str, payload: dict) -> dict:
        data = json.dumps({"model": self.model, **payload}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                if err.code not in (429, 500, 502, 503, 504):
                    raise LLMUnavailable(f"{self.base_url}{path} answered HTTP {err.code}: {err.read()[:200]!r}") from err
                last = err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = err
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise LLMUnavailable(f"LLM server {self.base_url} unreachable after {self.retries + 1} tries: {last}")

    def generate(self, messages: Messages, max_tokens: int = 64) -> str:
        reply = self._post("/chat/completions", {"messages": list(messages), "max_tokens": max_tokens, "temperature": 0})
        try:
            return reply["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError) as err:
            raise LLMUnavailable(f"unexpected reply from {self.base_url}: {str(reply)[:200]}") from err

    def score(self, messages: Messages, candidates: Sequence[str]) -> list[float]:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        scores = []
        for candidate in candidates:
            reply = self._post("/completions", {"prompt": prompt + candidate, "max_tokens": 0, "echo": True,
                                                "logprobs": 1, "temperature": 0})
            try:
                lp = reply["choices"][0]["logprobs"]
                offsets, token_logprobs = lp["text_offset"], lp["token_logprobs"]
            except (KeyError, IndexError, TypeError) as err:
                raise LLMUnavailable(f"{self.base_url} does not return prompt logprobs (echo); cannot score") from err
            scores.append(float(sum(l for o, l in zip(offsets, token_logprobs) if o >= len(prompt) and l is not None)))
        return scores
