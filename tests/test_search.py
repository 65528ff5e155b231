"""Head search: the fast engine agrees with direct one-head-at-a-time evaluation; resuming is exact."""

from __future__ import annotations

import pytest
import torch

from act_eval.attention import enable_act
from act_eval.search import Checkpoint, HeadSearch, Settings, is_correct, naive_head_results, score_heads
from act_eval.search_data import Example, expand_tasks
from act_eval.selection import HeadStat, greedy, head_stats, screen
from tiny_models import tiny_model

SETTINGS = Settings(threshold=0.08, beta=0.2)


def examples(n: int = 6, seed: int = 0) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ctx = tuple(torch.randint(3, 100, (int(torch.randint(8, 16, (1,), generator=g)),), generator=g).tolist())
        two = tuple(torch.randint(3, 100, (2,), generator=g).tolist())
        rows = (ctx, ctx + two[:1])
        choices = ((0, (int(torch.randint(3, 100, (1,), generator=g)),)), (0, (int(torch.randint(3, 100, (1,), generator=g)),)), (1, two))
        out.append(Example("synthetic", i, rows, len(ctx), choices, i % 3))
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
def test_fast_search_equals_direct_evaluation(arch: str):
    model = tiny_model(arch)
    enable_act(model, None, check_model=False)
    exs = examples()
    fast = score_heads(model, exs, SETTINGS, progress=False)
    search = HeadSearch(model, SETTINGS)
    for layer in range(3):
        direct = {h: [] for h in range(4)}
        for ex in exs:
            for head, lls in naive_head_results(model, ex, layer, SETTINGS).items():
                direct[head].append(is_correct(lls, ex.gold))
        for head in range(4):
            assert fast[(layer, head)] == direct[head], (layer, head)
    # and the log-likelihoods themselves agree to float32 noise
    ex = exs[0]
    rec = search.record(ex)
    for layer in range(3):
        quick, slow = search.layer_results(rec, layer), naive_head_results(model, ex, layer, SETTINGS)
        for head in range(4):
            assert max(abs(a - b) for a, b in zip(quick[head], slow[head])) < 1e-4
    # calibration made a difference somewhere, so the comparison above is not vacuous
    assert any(fast[(layer, head)] != fast[(-1, -1)] for layer in range(3) for head in range(4)) or any(
        abs(a - b) > 1e-3 for layer in range(3) for h in range(4)
        for a, b in zip(search.layer_results(rec, layer)[h], rec.logliks)
    )


def test_resume_after_interruption_gives_identical_results(tmp_path):
    model = tiny_model("llama")
    enable_act(model, None, check_model=False)
    exs = examples(5, seed=3)
    whole = score_heads(model, exs, SETTINGS, progress=False)
    ckpt = Checkpoint(tmp_path / "ckpt", "digest-1")
    score_heads(model, exs, SETTINGS, ckpt, layers=[0], progress=False)  # "killed" after layer 0
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("layer_*")) == ["layer_000.json"]
    resumed = score_heads(model, exs, SETTINGS, Checkpoint(tmp_path / "ckpt", "digest-1"), progress=False)
    assert resumed == whole
    with pytest.raises(ValueError, match="other inputs"):
        Checkpoint(tmp_path / "ckpt", "digest-2")


def test_keep_rule_and_greedy():
    results = {(-1, -1): [True, False, False, False, True, False, False, False]}
    results[(0, 0)] = [True, True, True, True, True, True, True, False]  # 5 wins, 0 losses
    results[(0, 1)] = [True, True, False, False, True, False, False, False]  # 1 win: noise
    results[(1, 0)] = [False, True, True, True, True, False, False, False]  # 3 wins, 1 loss
    stats = {(s.layer, s.head): s for s in head_stats(results)}
    assert (stats[(0, 0)].wins, stats[(0, 0)].losses) == (5, 0)
    assert stats[(0, 0)].p_value == pytest.approx(1 / 32)  # sign test: 0.5 ** 5
    assert stats[(1, 0)].p_value == pytest.approx(5 / 16)  # P(X >= 3 | n=4) = 5/16
    assert [(s.layer, s.head) for s in screen(list(stats.values()), alpha=0.2)] == [(0, 0)]
    assert [(s.layer, s.head) for s in screen(list(stats.values()), alpha=0.4)] == [(0, 0), (1, 0)]

    kept = [HeadStat(0, 0, 8, 5, 0, 0.6, 0.03), HeadStat(1, 0, 8, 3, 1, 0.25, 0.3), HeadStat(2, 2, 8, 2, 1, 0.1, 0.5)]
    scores = {(): 0.5, ((0, (0,)),): 0.6, ((0, (0,)), (1, (0,))): 0.55, ((0, (0,)), (1, (0,)), (2, (2,))): 0.58}
    chosen, trajectory = greedy(kept, lambda heads: scores[tuple((k, tuple(v)) for k, v in heads.items())], patience=2)
    assert [(s.layer, s.head) for s in chosen] == [(0, 0)]
    assert [row["accuracy"] for row in trajectory] == [0.5, 0.6, 0.55, 0.58]


def test_family_names_expand_to_tasks():
    assert expand_tasks(["classification"])[0] == "act_sst2"
    assert expand_tasks(["act_multiple_choice", "act_sst2"])[-1] == "act_sst2"


def test_compact_rows_drops_prefix_rows_and_keeps_every_choice():
    from act_eval.search import compact_rows

    ctx, a, b = (5, 6, 7, 8), (9, 10), (11, 12, 13)
    ex = Example("synthetic", 0, (ctx, ctx + a[:1], ctx + b[:2]), len(ctx), ((0, (4,)), (1, a), (2, b)), 1)
    small = compact_rows(ex)
    assert small.rows == (ctx + a[:1], ctx + b[:2])  # the context row is a prefix of both
    assert small.choices == ((0, (4,)), (0, a), (1, b))
    model = tiny_model("llama")
    enable_act(model, None, check_model=False)
    for layer in range(3):  # same log-likelihoods from fewer rows, calibrated or not
        full, compact = naive_head_results(model, ex, layer, SETTINGS), naive_head_results(model, small, layer, SETTINGS)
        for head in range(4):
            assert max(abs(x - y) for x, y in zip(full[head], compact[head])) < 1e-5


def test_plan_passes_is_the_cheapest_grouping():
    import itertools

    from act_eval.search import plan_passes

    def cost(groups, starts, width, rows, overhead):
        return sum(overhead * rows + (g.stop - g.start) * rows * (width - starts[g.start]) for g in groups)

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 7, (1,), generator=g))
        starts = sorted(torch.randint(1, 60, (n,), generator=g).tolist())
        plan = plan_passes(starts, 64, 2, overhead=8)
        assert [i for s in plan for i in range(s.start, s.stop)] == list(range(n))  # every head once, in order
        best = min(  # brute force over every set of cut points
            cost([slice(a, b) for a, b in zip((0,) + cuts, cuts + (n,))], starts, 64, 2, 8)
            for k in range(n) for cuts in itertools.combinations(range(1, n), k)
        )
        assert cost(plan, starts, 64, 2, 8) == best
    assert plan_passes([2, 3, 50, 51], 64, 1, overhead=8) == [slice(0, 2), slice(2, 4)]


@pytest.mark.slow
def test_fast_search_equals_direct_evaluation_on_real_smollm2(smollm2_path, monkeypatch):
    """Real sinks come at different positions per head, so heads split into several passes."""
    from lm_eval.models.huggingface import HFLM

    from act_eval.search_data import held_out_examples

    lm = HFLM(pretrained=smollm2_path, device="cpu", batch_size=1, dtype="float32")
    model = lm.model.eval()
    enable_act(model, None, check_model=False)
    exs, _ = held_out_examples(lm, ["act_mr"], 1)
    assert len(exs[0].rows) == 2  # a one-token label beside a two-token one: compacted to one row
    passes = []
    original = HeadSearch._pass
    monkeypatch.setattr(HeadSearch, "_pass", lambda self, rec, layer, active, start: passes.append(start) or original(self, rec, layer, active, start))
    settings = Settings()
    search = HeadSearch(model, settings)
    rec = search.record(exs[0])
    changed = 0
    for layer in (0, 29):
        quick, slow = search.layer_results(rec, layer), naive_head_results(model, exs[0], layer, settings)
        changed += sum(max(abs(a - b) for a, b in zip(quick[h], rec.logliks)) > 1e-3 for h in range(9))
        for head in range(9):
            assert max(abs(a - b) / abs(b) for a, b in zip(quick[head], slow[head])) < 1e-5, (layer, head)
            assert is_correct(quick[head], exs[0].gold) == is_correct(slow[head], exs[0].gold)
    assert len(set(passes)) > 2 and min(passes) > 0
    assert changed > 0  # calibration moved some log-likelihoods: the agreement is not vacuous
