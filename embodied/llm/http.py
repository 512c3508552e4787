"""A client for OpenAI-compatible servers (vLLM, Ollama, llama.cpp server, hosted APIs).

Standard library only (http.client). What a server cannot do to the caller:
- keep one call (``generate``, or ``score`` of all its candidates) longer than ``timeout`` seconds:
  the call has one deadline that covers every retry, backoff and redirect, and a watchdog shuts the
  socket when it passes, so a server dripping one byte at a time cannot extend it (the bound is
  ``timeout`` plus the time to close a socket);
- send more than ``max_response_bytes``;
- receive the API key anywhere else: redirects are followed only to the same scheme, host and
  port (at most 3); any other redirect is an error, so the ``Authorization`` header never leaves;
- slip malformed data in: HTML, empty or non-JSON bodies, wrong JSON types, NaN/Infinity and
  non-finite log-probabilities all become one ``LLMUnavailable`` error.
Connection errors, 5xx and 429 are retried with backoff. Candidate scoring uses the completions
endpoint with ``echo`` and ``logprobs`` (vLLM and llama.cpp support it).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Sequence

from embodied.llm.base import LLMUnavailable, Messages

RETRYABLE = (429, 500, 502, 503, 504)


class _Retryable(Exception):
    pass


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def server_url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s)://host[:port][/path] server URL, or None. ``urlsplit`` checks the port only
    when asked, so it is asked here: a port out of range would otherwise fail at the first request."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018
    except ValueError as err:
        return f"{url!r} is not a URL: {err}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s)://host[:port][/path] URL"
    return None


class OpenAICompatibleLLM:
    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_response_bytes: int = 4 * 1024 * 1024,
    ):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        if server_url_problem(self.base_url):
            raise LLMUnavailable(f"LLM server URL must be http(s)://host[:port][/path], got {base_url!r}")
        self.model, self.api_key, self.timeout, self.retries, self.backoff = model, api_key, timeout, retries, backoff
        self.max_response_bytes = max_response_bytes

    def _deadline(self) -> float:
        """The monotonic time by which one public call must be done."""
        return time.monotonic() + self.timeout

    def _post(self, path: str, payload: dict, deadline: float) -> dict:
        data = json.dumps({"model": self.model, **payload}).encode()
        last: Exception | None = None
        tries = 0
        for attempt in range(self.retries + 1):
            if time.monotonic() >= deadline:
                break
            tries += 1
            try:
                return self._request(self.base_url + path, data, deadline)
            except _Retryable as err:
                last = err
            if attempt < self.retries:
                time.sleep(max(0.0, min(self.backoff * 2**attempt, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            raise LLMUnavailable(
                f"LLM server {self.base_url}: no answer within the {self.timeout} s deadline of the "
                f"call ({tries} tries{f'; last: {last}' if last else ''})"
            )
        raise LLMUnavailable(f"LLM server {self.base_url} unreachable after {tries} tries: {last}")

    def _request(self, url: str, data: bytes, deadline: float) -> dict:
        origin = urllib.parse.urlsplit(url)
        for _ in range(4):  # the request and at most 3 same-origin redirects
            status, headers, body = self._exchange(url, data, deadline)
            if status in (301, 302, 303, 307, 308):
                target = urllib.parse.urlsplit(urllib.parse.urljoin(url, headers.get("location", "")))
                if (target.scheme, target.hostname, target.port) != (origin.scheme, origin.hostname, origin.port):
                    raise LLMUnavailable(
                        f"{url} redirected to another host ({target.scheme}://{target.netloc}); "
                        "not following it (credentials stay with the configured server)"
                    )
                url = urllib.parse.urlunsplit(target)
                continue
            if status in RETRYABLE:
                raise _Retryable(f"HTTP {status}")
            if status != 200:
                raise LLMUnavailable(f"{url} answered HTTP {status}: {body[:200]!r}")
            try:
                reply = json.loads(body, parse_constant=_reject_constant)
            except (ValueError, UnicodeDecodeError):
                raise LLMUnavailable(f"{url} did not answer JSON: {body[:120]!r}") from None
            if not isinstance(reply, dict):
                raise LLMUnavailable(f"{url} answered JSON that is not an object: {body[:120]!r}")
            return reply
        raise LLMUnavailable(f"{url}: too many redirects")

    def _exchange(self, url: str, data: bytes, deadline: float) -> tuple[int, dict, bytes]:
        """One POST within what is left of the call's deadline; (status, lower-cased headers, body)."""
        parts = urllib.parse.urlsplit(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Retryable(f"no complete answer within {self.timeout} s")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        kwargs = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
        conn = cls(parts.hostname, parts.port, timeout=left, **kwargs)
        expired = threading.Event()

        def shut() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(left, shut)
        watchdog.daemon = True
        watchdog.start()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request(
                "POST",
                urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")),
                body=data,
                headers=headers,
            )
            response = conn.getresponse()
            body = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError()
                chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
                if not chunk:
                    break
                body += chunk
                if len(body) > self.max_response_bytes:
                    raise LLMUnavailable(f"{url} sent more than {self.max_response_bytes} bytes; refusing the answer")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, bytes(body)
        except LLMUnavailable:
            raise
        except (TimeoutError, socket.timeout) as err:
            raise _Retryable(f"no complete answer within {self.timeout} s") from err
        except (OSError, http.client.HTTPException) as err:
            if expired.is_set():
                raise _Retryable(f"no complete answer within {self.timeout} s") from err
            raise _Retryable(f"{type(err).__name__}: {err}") from err
        finally:
            watchdog.cancel()
            conn.close()

    def generate(self, messages: Messages, max_tokens: int = 64) -> str:
        reply = self._post(
            "/chat/completions",
            {"messages": list(messages), "max_tokens": max_tokens, "temperature": 0},
            self._deadline(),
        )
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMUnavailable(f"unexpected reply from {self.base_url}: {str(reply)[:200]}") from None
        if not isinstance(content, str):
            raise LLMUnavailable(f"{self.base_url} answered content of type {type(content).__name__}, not text")
        return content.strip()

    def score(self, messages: Messages, candidates: Sequence[str]) -> list[float]:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        scores = []
        deadline = self._deadline()  # one deadline for all the candidates
        for candidate in candidates:
            reply = self._post(
                "/completions",
                {"prompt": prompt + candidate, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0},
                deadline,
            )
            try:
                lp = reply["choices"][0]["logprobs"]
                offsets, token_logprobs = lp["text_offset"], lp["token_logprobs"]
                pairs = list(zip(offsets, token_logprobs, strict=True))
            except (KeyError, IndexError, TypeError, ValueError):
                raise LLMUnavailable(f"{self.base_url} does not return prompt logprobs (echo); cannot score") from None
            total = 0.0
            for offset, logprob in pairs:
                if not isinstance(offset, int) or not (logprob is None or isinstance(logprob, (int, float))):
                    raise LLMUnavailable(f"{self.base_url} returned malformed logprobs ({offset!r}, {logprob!r})")
                if offset >= len(prompt) and logprob is not None:
                    if not math.isfinite(logprob) or logprob > 0:
                        raise LLMUnavailable(f"{self.base_url} returned an invalid log-probability {logprob!r}")
                    total += float(logprob)
            scores.append(total)
        return scores
