"""Attention capture, ``act-eval inspect`` and ``act-eval sinks``: tiny random models for the plumbing,
the real SmolLM2-135M for what the figures and statistics must show."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from act_eval import cli
from act_eval.core.calibration import redistribute, sink_scores, sink_set
from act_eval.core.enable import disable_act, enable_act
from act_eval.core.switch import UnsupportedArchitectureError
from act_eval.sinks.capture import capture_attention
from act_eval.sinks.figures import MAX_TOKENS, crop_note, shown_positions, token_label
from act_eval.sinks.prompts import Prompt
from act_eval.sinks.stats import SinkStats
from tiny_models import tiny_model

HEADS = [[0, 1], [2, 0], [2, 3]]
WORDS = (
    "the a of . , : ' to and is it sentence sentiment classify user message into one following categories "
    "positive negative or journey charming often affecting s"
).split()


def ids(n: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 100, (1, n), generator=torch.Generator().manual_seed(seed))


def causal_visible(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


# --------------------------------------------------------------------------------------------
# capture on tiny random models


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gemma2", "gpt2"])
def test_capture_records_the_rule_for_every_layer_and_head(arch: str):
    model = tiny_model(arch)
    x = ids()
    with torch.no_grad():
        plain = model(x).logits[:, -1]
    before = model.config._attn_implementation
    capture = capture_attention(model, x, threshold=0.08)
    assert model.config._attn_implementation == before  # restored
    assert all(not hasattr(m, "act_capture") for m in model.modules())
    torch.testing.assert_close(capture.next_token_logits, plain, atol=1e-5, rtol=0)  # eager == the model's kernel
    assert [r.layer for r in capture.layers] == [0, 1, 2]
    for record in capture.layers:
        probs = record.probs[0]
        assert probs.shape == (4, 14, 14) and record.calibrated is None and record.calibrated_heads == ()
        torch.testing.assert_close(probs.sum(-1), torch.ones(4, 14))
        visible = probs > 0  # masked entries are exactly 0 (causal, and sliding windows in gemma)
        assert not (visible & ~causal_visible(14)).any()
        assert torch.equal(record.sinks[0], sink_set(probs, visible, 0.08))
        assert torch.equal(record.scores[0], sink_scores(probs, visible))
        assert not record.sinks[0, :, 0].any()  # the first token is never in the sink set


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_calibrated_capture_is_what_act_computes(arch: str):
    model = tiny_model(arch)
    x = ids()
    with torch.no_grad():
        plain = model(x).logits[:, -1]
    enable_act(model, HEADS, threshold=0.08, beta=0.3, check_model=False)
    with torch.no_grad():
        act = model(x).logits[:, -1]
    after = capture_attention(model, x)
    unchanged = capture_attention(model, x, calibrate=False)
    disable_act(model)
    torch.testing.assert_close(after.next_token_logits, act, atol=1e-5, rtol=0)
    torch.testing.assert_close(unchanged.next_token_logits, plain, atol=1e-5, rtol=0)
    assert (act - plain).abs().max() > 1e-3
    assert [r.calibrated_heads for r in after.layers] == [(1,), (), (0, 3)]
    for record in after.layers:
        for head in range(4):
            expected = record.probs[0, head]
            if head in record.calibrated_heads:
                expected = redistribute(expected, record.sinks[0, head], 0.3)
            torch.testing.assert_close(record.after[0, head], expected)


def test_left_padding_changes_no_sink_set():
    model = tiny_model("llama")
    rows = [ids(12, seed=3)[0], ids(7, seed=4)[0]]
    batch = torch.zeros(2, 12, dtype=torch.long)
    mask = torch.zeros(2, 12, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, 12 - len(row):] = row
        mask[i, 12 - len(row):] = 1
    together = capture_attention(model, batch, mask, threshold=0.08, keep_probs=False)
    for i, row in enumerate(rows):
        alone = capture_attention(model, row[None], threshold=0.08, keep_probs=False)
        for a, t in zip(alone.layers, together.layers):
            assert torch.equal(t.sinks[i, :, 12 - len(row):], a.sinks[0])
            assert not t.sinks[i, :, : 12 - len(row)].any()  # a pad key is never a sink


def test_architectures_outside_the_interface_are_refused():
    with pytest.raises(UnsupportedArchitectureError, match="AttentionInterface"):
        capture_attention(tiny_model("bloom"), ids())


def test_statistics_count_the_captured_sink_sets():
    model = tiny_model("llama")
    stats = SinkStats("tiny", 3, 4, 0.08, ["t"], None)
    captures = []
    for doc, tokens in enumerate([["a", ".", "b", ".", ","], ["a", "b", ".", "c"]]):
        x = ids(len(tokens), seed=doc)
        capture = capture_attention(model, x, threshold=0.08, keep_probs=False)
        stats.add(Prompt("t", doc, ""), tokens, capture.layers)
        captures.append((tokens, capture))
    summary = stats.summary()
    events: dict[str, int] = {}
    for (tokens, capture), document in zip(captures, summary["documents"]):
        triples = [[r.layer, h, p] for r in capture.layers for h, ps in enumerate(r.sink_positions()) for p in ps]
        assert document["sinks"] == triples
        for _, _, pos in triples:
            events[tokens[pos]] = events.get(tokens[pos], 0) + 1
    assert {t["token"]: t["sink_events"] for t in summary["tokens"]} == events
    dot = next(t for t in summary["tokens"] if t["token"] == ".")
    assert dot["occurrences"] == 3 and dot["sink_rate"] == pytest.approx(dot["sink_events"] / (3 * 12))
    assert sum(np.sum(t["per_layer_head"]) for t in summary["tokens"]) == sum(events.values())
    first = [[r.top_columns() for r in c.layers] for _, c in captures]
    assert np.allclose(summary["per_layer_head"]["first_token_top"], np.mean(np.array(first) == 0, axis=0))


def test_long_inputs_are_cropped_with_a_note():
    assert shown_positions(40) == list(range(40))
    shown = shown_positions(500)
    assert len(shown) == MAX_TOKENS and shown[0] == 0 and shown[-1] == 499
    assert "404 in between hidden" in crop_note(500, shown)
    assert crop_note(40, shown_positions(40)) is None
    assert token_label("\n\n") == "⏎⏎" and token_label("  ") == "␣␣" and token_label(" the") == " the"


# --------------------------------------------------------------------------------------------
# the commands on tiny random models saved with a small word-level tokenizer


def save_tiny(arch: str, path: Path) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "<s>", "</s>", "[UNK]", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="[UNK]", pad_token="[PAD]"
    )
    tokenizer.save_pretrained(path)
    tiny_model(arch).save_pretrained(path)
    return str(path)


def run_cli(*argv: str) -> None:
    assert cli.main([str(a) for a in argv]) == 0


def png_shape(path: Path) -> tuple[int, int]:
    """Decode a PNG (so it must open) and return its height and width in pixels."""
    import matplotlib.image

    return matplotlib.image.imread(path).shape[:2]


def check_outputs_open(out: Path) -> dict:
    """Every PNG decodes, the page embeds every one of them, the manifest parses."""
    pngs = sorted(out.glob("*.png"))
    assert pngs
    page = (out / "inspect.html").read_text()
    for png in pngs:
        height, width = png_shape(png)
        assert 100 < height < 2500 and 100 < width < 3000, png.name  # never a giant image
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(pngs)
    return json.loads((out / "inspect.json").read_text())


def manifest_triples(manifest: dict, name: str = "before") -> list[list[int]]:
    layers = manifest["passes"][name]["layers"]
    return [[r["layer"], h, p] for r in layers for h, ps in enumerate(r["sinks"]) for p in ps]


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_inspect_and_sinks_commands_agree_on_a_tiny_model(arch: str, tmp_path: Path, data_dir: Path):
    model = save_tiny(arch, tmp_path / "model")
    common = ["--model", model, "--no-builtin-tasks", "--threshold", "0.08"]
    run_cli("sinks", *common, "--tasks", "act_sst2", "--limit", "2", "--out", tmp_path / "sinks")
    run_cli(
        "inspect", *common, "--task", "act_sst2", "--doc", "1", "--head-map", json.dumps(HEADS),
        "--layers", "0", "2", "--heads", "3", "--out", tmp_path / "inspect",
    )  # fmt: skip
    manifest = check_outputs_open(tmp_path / "inspect")
    names = {p.name for p in (tmp_path / "inspect").glob("*.png")}
    assert names == {"overview.png", "layer00_before.png", "layer00_after.png", "layer02_before.png",
                     "layer02_after.png", "layer00_head03.png", "layer02_head03.png"}  # fmt: skip
    assert manifest["head_map"]["calibrated_heads"] == 3 and manifest["threshold"] == 0.08
    assert [r["calibrated_heads"] for r in manifest["passes"]["after"]["layers"]] == [[1], [], [0, 3]]

    stats = json.loads((tmp_path / "sinks" / "sinks.json").read_text())
    doc = stats["documents"][1]
    assert (doc["task"], doc["doc_id"]) == ("act_sst2", 1)
    assert doc["num_tokens"] == len(manifest["tokens"])
    assert doc["sinks"] and doc["sinks"] == manifest_triples(manifest)  # the statistics count what the heatmaps mark
    assert stats["num_documents"] == 2 and stats["threshold"] == 0.08
    assert min(png_shape(tmp_path / "sinks" / "sinks.png")) > 100


def test_inspect_reports_a_first_token_maps_rule_and_factor(tmp_path: Path, capsys):
    """A first-token map has no beta: inspect reports its rule and factor, and --beta is refused for it."""
    from act_eval.core.head_map import HeadMap
    from act_eval.core.switch import model_shape

    model = save_tiny("llama", tmp_path / "model")
    shape = model_shape(tiny_model("llama"))
    hm = HeadMap(model=model, heads={0: (1,), 2: (0, 3)}, name="tiny.ft", rule="first_token", factor=0.5, **shape)
    path = hm.save(tmp_path / "tiny.ft.json")
    common = ["inspect", "--model", model, "--text", "the sentence is charming", "--head-map", path, "--layers", "0"]
    run_cli(*common, "--threshold", "0.08", "--out", tmp_path / "map")
    manifest = check_outputs_open(tmp_path / "map")
    assert manifest["head_map"] == {
        "name": "tiny.ft", "content_hash": hm.content_hash, "calibrated_heads": 3, "rule": "first_token",
        "factor": 0.5, "heads": {"0": [1], "2": [0, 3]},
    }  # fmt: skip
    assert manifest["threshold"] == 0.08  # marks the sinks drawn; the map has no threshold
    assert "3 heads, first-token scaling, factor 0.5" in (tmp_path / "map" / "inspect.html").read_text()
    run_cli(*common, "--factor", "2", "--out", tmp_path / "factor")
    assert check_outputs_open(tmp_path / "factor")["head_map"]["factor"] == 2.0
    assert cli.main([str(a) for a in (*common, "--beta", "0.3")]) == 2
    assert "act_beta applies to ACT maps" in capsys.readouterr().err
    # an ACT map (inline heads) still reports ACT's beta
    run_cli("inspect", "--model", model, "--text", "a b", "--head-map", "[[0, 1]]", "--layers", "0", "--out", tmp_path / "act")
    act = check_outputs_open(tmp_path / "act")["head_map"]
    assert (act["rule"], act["beta"]) == ("act", 0.4) and "factor" not in act


def test_text_input_and_bad_options(tmp_path: Path, capsys):
    model = save_tiny("llama", tmp_path / "model")
    run_cli("inspect", "--model", model, "--text", "the sentence . " * 60, "--layers", "1", "--out", tmp_path / "long")
    manifest = check_outputs_open(tmp_path / "long")
    assert len(manifest["tokens"]) == 181 and len(manifest["shown_positions"]) == MAX_TOKENS
    assert "hidden" in (tmp_path / "long" / "inspect.html").read_text()
    assert cli.main(["inspect", "--model", model, "--text", "a", "--layers", "7"]) == 2
    assert "--layers 7: out of range" in capsys.readouterr().err
    assert cli.main(["inspect", "--model", model, "--text", "a", "--beta", "0.3"]) == 2
    assert "--beta needs --head-map" in capsys.readouterr().err
    assert cli.main(["inspect", "--model", model, "--text", "a", "--factor", "2"]) == 2
    assert "--factor needs --head-map" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct


@pytest.fixture(scope="module")
def smollm2_runs(smollm2_path: str, data_dir: Path, tmp_path_factory) -> tuple[dict, dict, Path]:
    """``sinks`` over three SST-2 documents and ``inspect`` of the second one, calibrating two heads."""
    out = tmp_path_factory.mktemp("smollm2")
    common = ["--model", smollm2_path, "--no-builtin-tasks"]
    run_cli("sinks", *common, "--tasks", "act_sst2", "--limit", "3", "--out", out / "sinks")
    run_cli(
        "inspect", *common, "--task", "act_sst2", "--doc", "1", "--head-map", "[[12, 2], [14, 5]]",
        "--layers", "12", "14", "--heads", "2", "--out", out / "inspect",
    )  # fmt: skip
    stats = json.loads((out / "sinks" / "sinks.json").read_text())
    manifest = json.loads((out / "inspect" / "inspect.json").read_text())
    return stats, manifest, out


@pytest.mark.slow
def test_smollm2_first_token_is_the_top_column_in_most_middle_heads(smollm2_runs):
    stats, manifest, _ = smollm2_runs
    num_layers = stats["num_layers"]
    middle = range(num_layers // 3, 2 * num_layers // 3)
    shares = [stats["per_layer"][layer]["first_token_top"] for layer in middle]
    assert np.mean(shares) > 0.6, shares
    tops = [r["top_column"] for r in manifest["passes"]["before"]["layers"][middle.start : middle.stop]]
    assert np.mean(np.array(tops) == 0) > 0.6  # the same in the inspected document
    # and sinks do form beyond the first token: the rule finds some in most heads
    assert stats["share_of_heads_with_sink_beyond_first"] > 0.3


@pytest.mark.slow
def test_smollm2_statistics_match_the_heatmaps_of_the_same_document(smollm2_runs):
    stats, manifest, _ = smollm2_runs
    doc = stats["documents"][1]
    assert (doc["task"], doc["doc_id"]) == ("act_sst2", 1)
    assert doc["sinks"] == manifest_triples(manifest)
    tokens = manifest["tokens"]
    counted = sum(t["sink_events"] for t in stats["tokens"])
    assert counted == sum(len(d["sinks"]) for d in stats["documents"])
    for token in {tokens[p] for _, _, p in doc["sinks"]}:
        assert any(t["token"] == token for t in stats["tokens"])


@pytest.mark.slow
def test_smollm2_calibration_changes_the_calibrated_heads_and_outputs_open(smollm2_runs):
    _, manifest, out = smollm2_runs
    check_outputs_open(out / "inspect")
    assert {p.name for p in (out / "inspect").glob("layer*_head*.png")} == {"layer12_head02.png", "layer14_head02.png"}
    after = manifest["passes"]["after"]["layers"]
    assert after[12]["calibrated_heads"] == [2] and after[14]["calibrated_heads"] == [5]
    # layers before the first calibrated one see the same inputs: identical sink sets
    assert manifest["passes"]["before"]["layers"][:13] == [dict(r, calibrated_heads=[]) for r in after[:13]]
    before_p = dict(manifest["passes"]["before"]["next_token"])
    after_p = dict(manifest["passes"]["after"]["next_token"])
    assert before_p != after_p
    assert min(png_shape(out / "sinks" / "sinks.png")) > 100
