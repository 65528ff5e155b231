"""``hf-fast`` gives ``hf``'s log-likelihoods on the real models while computing fewer logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from act_eval.lm.rows import scored_tail


def test_scored_tail_reaches_the_earliest_scored_position():
    # contexts of 5 and 8 tokens in rows padded to 12: logits from position 4 on, the last 8
    assert scored_tail(12, [5, 8]) == 8
    assert scored_tail(12, [12]) == 1
    # a row that is no request, or a one-token context, needs every position
    assert scored_tail(12, [5, None]) is None
    assert scored_tail(12, [1, 8]) is None


def test_lm_eval_finds_the_model_type():
    from lm_eval.api.registry import get_model

    from act_eval.lm.hf_fast import HFFastLM

    assert get_model("hf-fast") is HFFastLM


def requests(data_dir: Path, split: str, template: str, field: str, words: list[str], n: int) -> list:
    """Real documents with one-token and several-token continuations, of unequal lengths."""
    from lm_eval.api.instance import Instance

    rows = [json.loads(line) for line in (data_dir / split).open()][:n]
    return [
        Instance("loglikelihood", {}, (template.format(row[field]), word), i)
        for i, row in enumerate(rows)
        for word in words
    ]


def logits_lengths(model: torch.nn.Module) -> tuple[list[tuple[int, int]], object]:
    """Record (input length, logits length) of every forward pass."""
    seen: list[tuple[int, int]] = []

    def hook(module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append((ids.shape[1], output.logits.shape[1]))

    return seen, model.register_forward_hook(hook, with_kwargs=True)


def compare(path: str, reqs: list, batch_size: int, **kw) -> tuple[list, list, list[tuple[int, int]]]:
    from lm_eval.models.huggingface import HFLM

    from act_eval.lm.hf_fast import HFFastLM

    plain = HFLM(pretrained=path, device="cpu", batch_size=batch_size, dtype="float32", **kw)
    expected = plain.loglikelihood(reqs, disable_tqdm=True)
    fast = HFFastLM(pretrained=plain.model, tokenizer=plain.tokenizer, device="cpu", batch_size=batch_size, **kw)
    seen, handle = logits_lengths(fast.model)
    got = fast.loglikelihood(reqs, disable_tqdm=True)
    handle.remove()
    return expected, got, seen


def assert_same(expected: list, got: list) -> None:
    for (ll_e, greedy_e), (ll_g, greedy_g) in zip(expected, got, strict=True):
        # same batch composition and padding: only the output projection's row blocking differs
        assert abs(ll_g - ll_e) <= 1e-5 * max(1.0, abs(ll_e))
        assert greedy_g == greedy_e


@pytest.mark.slow
@pytest.mark.parametrize(("batch_size", "logits_cache"), [(1, True), (8, True), (8, False)])
def test_smollm2_equals_hf(smollm2_path, data_dir, batch_size, logits_cache):
    reqs = requests(
        data_dir, "sst2/validation.jsonl", "Review: {}\nSentiment:", "sentence",
        [" negative", " positive", " rather positive, I think"], 12,
    )
    expected, got, seen = compare(smollm2_path, reqs, batch_size, logits_cache=logits_cache)
    assert_same(expected, got)
    assert all(kept < length for length, kept in seen)
    # the saving is real: most positions of a classification prompt are context
    assert sum(kept for _, kept in seen) < 0.5 * sum(length for length, _ in seen)


@pytest.mark.slow
def test_gemma3_equals_hf(gemma3_path, data_dir):
    reqs = requests(data_dir, "agnews/test.jsonl", "Article: {}\nTopic:", "text", [" World", " Sports", " Science and technology"], 4)
    expected, got, seen = compare(gemma3_path, reqs, 4)
    assert_same(expected, got)
    assert all(kept < length for length, kept in seen)
