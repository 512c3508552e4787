import json
import socket
import time

import pytest

from embodied.llm import LLMUnavailable, choose, make_llm
from embodied.llm.http import OpenAICompatibleLLM
from loopback import QuietHandler


class FakeServer(QuietHandler):
    """An OpenAI-compatible server on loopback: candidates starting with 'good' are likelier."""

    failures_left = 0
    delay = 0.0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if FakeServer.delay:
            time.sleep(FakeServer.delay)
        if FakeServer.failures_left > 0:
            FakeServer.failures_left -= 1
            self.send_body(b"", 503)
            return
        if self.path == "/v1/chat/completions":
            reply = {
                "choices": [{"message": {"role": "assistant", "content": f" echo: {body['messages'][-1]['content']} "}}]
            }
        elif self.path == "/v1/completions":
            text = body["prompt"]
            start = text.rfind("assistant: ") + len("assistant: ")
            cost = -1.0 if text[start:].startswith("good") else -3.0
            reply = {
                "choices": [
                    {
                        "text": text,
                        "logprobs": {
                            "text_offset": list(range(len(text))),
                            "token_logprobs": [None] + [cost] * (len(text) - 1),
                        },
                    }
                ]
            }
        else:
            self.send_body(b"", 404)
            return
        self.send_body(json.dumps(reply).encode(), content_type="application/json")


@pytest.fixture
def server(loopback):
    FakeServer.failures_left, FakeServer.delay = 0, 0.0
    return loopback.start(FakeServer)


MESSAGES = [{"role": "user", "content": "pick one"}]


def test_http_backend_generates_and_scores(server):
    llm = make_llm(server, timeout=5)
    assert llm.generate(MESSAGES) == "echo: pick one"
    index, scores = choose(llm, MESSAGES, ["bad move", "good move"])
    assert index == 1 and scores[1] > scores[0]


def test_http_backend_retries_transient_errors(server):
    FakeServer.failures_left = 2
    llm = OpenAICompatibleLLM(server, retries=3, backoff=0.01)
    assert llm.generate(MESSAGES) == "echo: pick one"
    assert FakeServer.failures_left == 0


def test_http_backend_times_out_with_a_clear_error(server):
    FakeServer.delay = 1.0
    llm = OpenAICompatibleLLM(server, timeout=0.2, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="no answer within the 0.2 s deadline of the call"):
        llm.generate(MESSAGES)  # the retry gets no fresh deadline: one deadline per call
    assert time.monotonic() - start < 0.8


def unused_port() -> int:
    """A loopback port that nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_gives_a_clear_error():
    port = unused_port()
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}", timeout=1, retries=1, backoff=0.01)
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}"):
        llm.generate(MESSAGES)


def test_walle_checks_its_server_before_the_run_directory(server, tmp_path, capsys):
    """A server that was not there failed at the first decision, after the run directory was made."""
    from embodied.cli import main as cli_main

    port = unused_port()
    runs = tmp_path / "runs"
    argv = ["train", "walle", "--tasks", "stow", "--iterations", "0", "--episodes-per-task", "1"]
    argv += ["--max-decisions", "2", "--no-video", "--run-dir", str(runs)]
    assert cli_main([*argv, "--llm", f"http://127.0.0.1:{port}"]) == 2
    assert f"error: LLM server http://127.0.0.1:{port}/v1 unreachable" in capsys.readouterr().err
    assert not runs.exists()
    assert cli_main([*argv, "--llm", server]) == 0  # a server that answers: the run goes on as before
    assert len(list(runs.iterdir())) == 1


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown LLM backend"):
        make_llm("telepathy")


@pytest.fixture(scope="module")
def smollm():
    pytest.importorskip("transformers")
    return make_llm("embedded", device="cpu")


def test_embedded_model_scores_deterministically_and_sensibly(smollm):
    messages = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
    candidates = ["Paris", "Banana", "Seventeen"]
    index, scores = choose(smollm, messages, candidates)
    assert candidates[index] == "Paris", scores
    assert smollm.score(messages, candidates) == scores, "scoring is deterministic"
    assert isinstance(smollm.generate(messages, max_tokens=8), str)


def test_embedded_cached_scores_equal_full_sequence_scores(smollm):
    import torch

    messages = [{"role": "user", "content": "Pick a skill."}]
    candidates = ["grasp(block)", "release()"]
    prompt = smollm._prompt_ids(messages)
    reference = []
    for candidate in candidates:
        ids = smollm.tokenizer(candidate, add_special_tokens=False, return_tensors="pt").input_ids
        full = torch.cat([prompt, ids], 1)
        with torch.no_grad():
            logp = torch.log_softmax(smollm.model(full).logits[0, :-1].float(), -1)
        reference.append(float(logp[prompt.shape[1] - 1 :].gather(1, full[0, prompt.shape[1] :, None]).sum()))
    assert smollm.score(messages, candidates) == pytest.approx(reference, abs=1e-3)


def test_the_cache_goes_under_the_name_the_forward_takes():
    """transformers 5.17's forward takes past_key_values and **kwargs: cache= was ignored there silently."""
    from embodied.llm.embedded import cache_keyword

    class Older:
        def forward(self, input_ids, past_key_values=None, attention_mask=None, **kwargs): ...

    class Newer:
        def forward(self, input_ids, cache=None, attention_mask=None, **kwargs): ...

    assert cache_keyword(Older()) == "past_key_values"
    assert cache_keyword(Newer()) == "cache"


# --- hostile servers -------------------------------------------------------------------------


class Hostile(QuietHandler):
    """Loopback server whose behaviour is chosen per test: ``Hostile.mode``."""

    mode = "drip"
    seen_auth: list = []
    other_port = 0

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Hostile.seen_auth.append((self.path, self.headers.get("Authorization")))
        mode = Hostile.mode
        if mode == "redirect-away" and self.path.startswith("/v1"):
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{Hostile.other_port}/steal/chat/completions")
            self.end_headers()
            return
        bodies = {
            "html": b"<html><body>502 Bad Gateway</body></html>",
            "empty": b"",
            "wrong-type": json.dumps({"choices": [{"message": {"content": 42}}]}).encode(),
            "list": b"[1, 2, 3]",
            "nan": b'{"choices": [{"logprobs": {"text_offset": [0, 1000], "token_logprobs": [null, NaN]}}]}',
            "huge": b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}',
        }
        if mode == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.25)
            return
        self.send_body(bodies.get(mode, b"{}"))


@pytest.fixture
def hostile(loopback):
    Hostile.seen_auth = []
    url = loopback.start(Hostile)
    Hostile.other_port = int(loopback.start(Hostile).rsplit(":", 1)[1])
    return url


def test_a_dripping_server_cannot_extend_the_deadline(hostile):
    Hostile.mode = "drip"
    llm = OpenAICompatibleLLM(hostile, timeout=1.0, retries=0)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="within 1.0 s"):
        llm.generate(MESSAGES)
    assert time.monotonic() - start < 2.5


def test_credentials_do_not_follow_a_redirect_to_another_host(hostile):
    Hostile.mode = "redirect-away"
    llm = OpenAICompatibleLLM(hostile, api_key="sekrit", retries=0)
    with pytest.raises(LLMUnavailable, match="another host"):
        llm.generate(MESSAGES)
    assert all(path.startswith("/v1") for path, _ in Hostile.seen_auth), Hostile.seen_auth


@pytest.mark.parametrize("mode", ["html", "empty", "wrong-type", "list", "huge"])
def test_malformed_answers_give_one_clear_error(hostile, mode):
    Hostile.mode = mode
    llm = OpenAICompatibleLLM(hostile, retries=0, max_response_bytes=1024 * 1024)
    with pytest.raises(LLMUnavailable):
        llm.generate(MESSAGES)


def test_nan_logprobs_are_refused_not_used(hostile):
    Hostile.mode = "nan"
    with pytest.raises(LLMUnavailable):
        OpenAICompatibleLLM(hostile, retries=0).score(MESSAGES, ["good"])
