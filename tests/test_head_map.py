"""Head-map format: reading, validation with clear errors, hashing, and the converted reference maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from act_eval.cli import main as cli
from act_eval.core.head_map import HeadMap, HeadMapError, check_fits, check_overrides, load_head_map, published_head_maps
from act_eval.core.reference_maps import convert_reference_map

SHAPE = dict(architecture="llama", num_layers=30, num_heads=9, num_kv_heads=3)


def small_map(**kw) -> HeadMap:
    args = dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", heads={2: (0, 5), 7: (8,)}, name="t", **SHAPE)
    args.update(kw)
    return HeadMap(**args)


def test_round_trip_keeps_content_and_hash(tmp_path: Path):
    hm = small_map(provenance={"keep_rule": "x"})
    path = hm.save(tmp_path / "m.json")
    back = load_head_map(str(path))
    assert back.heads == {2: (0, 5), 7: (8,)}
    assert back.content_hash == hm.content_hash
    assert json.loads(path.read_text())["content_hash"] == hm.content_hash
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_hash_changes_with_content_and_edited_files_are_refused(tmp_path: Path):
    hm = small_map()
    assert small_map(beta=0.5).content_hash != hm.content_hash
    assert small_map(heads={2: (0,)}).content_hash != hm.content_hash
    data = json.loads(hm.to_json())
    data["heads"]["2"] = [0, 4]
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.raises(HeadMapError, match="does not match the content"):
        load_head_map(str(tmp_path / "edited.json"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(heads={30: (0,)}), "layer 30 is out of range"),
        (dict(heads={3: (9,)}), "head 9 of layer 3 is out of range"),
        (dict(heads={3: (1, 1)}), "lists a head twice"),
        (dict(threshold=1.5), r"act_threshold must lie in \(0, 1\), got 1.5"),
        (dict(threshold=0.0), r"act_threshold must lie in \(0, 1\), got 0.0"),
        (dict(beta=-0.1), r"act_beta must lie in \[0, 1\], got -0.1"),
        (dict(num_kv_heads=2), "not a multiple"),
    ],
)
def test_invalid_maps_name_the_bad_entry(change, message):
    with pytest.raises(HeadMapError, match=message):
        small_map(**change)


def test_maps_for_another_model_are_refused():
    hm = small_map()
    check_fits(hm, model_id="/root/.cache/x/SmolLM2-135M-Instruct", **SHAPE)
    with pytest.raises(HeadMapError, match="num_heads is 9 but the loaded model has 4"):
        check_fits(hm, model_id="x", **{**SHAPE, "num_heads": 4})
    with pytest.raises(HeadMapError, match="architecture 'llama', but the loaded model is 'gpt2'"):
        check_fits(hm, model_id="x", **{**SHAPE, "architecture": "gpt2"})
    with pytest.raises(HeadMapError, match="made for model 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        check_fits(hm, model_id="Qwen/Qwen2-0.5B", **SHAPE)
    check_fits(hm, model_id="Qwen/Qwen2-0.5B", check_model=False, **SHAPE)


def test_malformed_files_are_refused(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HeadMapError, match="not valid JSON"):
        load_head_map(str(bad))
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(HeadMapError, match="not an act-eval head map"):
        load_head_map(str(bad))
    data = json.loads(small_map().to_json())
    del data["num_heads"], data["content_hash"]
    bad.write_text(json.dumps(data))
    with pytest.raises(HeadMapError, match="missing field"):
        load_head_map(str(bad))
    with pytest.raises(FileNotFoundError, match="neither a file nor a published map; published: .*llama-2-7b-chat"):
        load_head_map("no-such-map")


@pytest.mark.parametrize(
    "name, heads, kv",
    [
        ("llama-2-7b-chat-hf.classification", 184, 32),
        ("llama-2-7b-chat-hf.multiple_choice", 74, 32),
        ("llama-2-7b-chat-hf.chat", 25, 32),
        ("mistral-7b-instruct-v0.2.classification", 16, 8),
        ("mistral-7b-instruct-v0.2.multiple_choice", 104, 8),
    ],
)
def test_reference_maps_convert_exactly(data_dir: Path, name: str, heads: int, kv: int):
    source = data_dir / "reference_head_maps" / f"{name}.json"
    raw = json.loads(source.read_text())
    hm = convert_reference_map(source)
    assert hm.num_calibrated == heads
    assert hm.num_kv_heads == kv
    assert {str(k): list(v) for k, v in hm.heads.items()} == {k: sorted(v) for k, v in raw["heads"].items()}
    assert (hm.threshold, hm.beta) == (raw["threshold"], raw["beta"])
    # the committed file is exactly this conversion
    published = load_head_map(name.replace("-hf", ""))
    assert published.content_hash == hm.content_hash


def test_every_published_map_loads():
    maps = published_head_maps()
    assert len(maps) >= 5
    assert all(m.provenance for m in maps)


def test_cli_lists_and_shows(capsys):
    assert cli(["head-maps", "list"]) == 0
    assert "mistral-7b-instruct-v0.2.classification" in capsys.readouterr().out
    assert cli(["head-maps", "list", "mistral-*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "mistral-7b-instruct-v0.2.classification", "mistral-7b-instruct-v0.2.multiple_choice"]
    assert cli(["head-maps", "list", "nope*"]) == 2
    assert "no published head map is named like 'nope*'" in capsys.readouterr().err
    assert cli(["head-maps", "show", "mistral-7b-instruct-v0.2.classification"]) == 0
    out = capsys.readouterr().out
    assert "16 of 1024" in out and "layer  13" in out
    assert cli(["head-maps", "show", "nope"]) == 2
    assert "neither a file nor a published map" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# map kinds: ACT maps exactly as before, first-token maps as format version 2

REPO = Path(__file__).resolve().parents[1]


def first_token_map(**kw) -> HeadMap:
    return small_map(**{"rule": "first_token", "factor": 2.0, **kw})


def test_every_committed_map_is_written_back_byte_for_byte():
    """Published maps and searched maps (cited by hash in results and submissions) keep their bytes and hashes:
    ACT maps as format version 1, first-token maps as version 2."""
    files = sorted((REPO / "head_maps").glob("*.json")) + sorted((REPO / "searches").glob("*/*.json"))
    assert len(files) >= 10
    for path in files:
        hm = load_head_map(str(path))
        stored = json.loads(path.read_text())
        assert hm.to_json() == path.read_text(), path
        assert stored["format_version"] == (1 if hm.rule == "act" else 2), path
        assert hm.content_hash == stored["content_hash"]
    assert {load_head_map(str(path)).rule for path in files} == {"act", "first_token"}  # both kinds are read back


def test_an_act_map_has_no_rule_field():
    content = small_map().content()
    assert content["format_version"] == 1 and "rule" not in content and "factor" not in content
    assert small_map(rule="act").content_hash == small_map().content_hash


def test_a_first_token_map_round_trips(tmp_path: Path):
    hm = first_token_map(provenance={"method": "x"})
    data = json.loads(hm.save(tmp_path / "f.json").read_text())
    assert (data["format_version"], data["rule"], data["factor"]) == (2, "first_token", 2.0)
    assert "threshold" not in data and "beta" not in data  # ACT's parameters mean nothing here
    back = load_head_map(str(tmp_path / "f.json"))
    assert (back.rule, back.factor, back.heads) == ("first_token", 2.0, {2: (0, 5), 7: (8,)})
    assert back.content_hash == hm.content_hash == data["content_hash"]
    assert first_token_map(factor=0.5).content_hash != hm.content_hash
    assert "first_token g=2" in hm.summary_line() and "times 2" in hm.describe()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rule="first_token"), "a first_token map needs a factor"),
        (dict(rule="first_token", factor=0.0), r"act_factor must be a positive number .*got 0.0"),
        (dict(rule="first_token", factor=-2), r"act_factor must be a positive number .*got -2.0"),
        (dict(rule="first_token", factor=float("inf")), "act_factor must be a positive number"),
        (dict(rule="first_token", factor=float("nan")), "act_factor must be a number"),
        (dict(rule="first_token", factor=2.0, beta=0.2), "threshold and beta are ACT's parameters"),
        (dict(factor=2.0), "factor is first-token scaling's parameter"),
        (dict(rule="zero", factor=2.0), "rule must be one of act, first_token, got 'zero'"),
    ],
)
def test_invalid_rules_name_the_bad_entry(change, message):
    with pytest.raises(HeadMapError, match=message):
        small_map(**change)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(threshold=0.1), "a first_token map has no threshold"),
        (lambda d: d.pop("factor"), "missing field.*factor"),
        (lambda d: d.update(rule="act"), "format_version 2 needs rule 'first_token'"),
        (lambda d: d.update(format_version=1), "rule and factor need format_version 2"),
        (lambda d: d.update(format_version=3), "unsupported format_version 3 .*reads 1 and 2"),
    ],
)
def test_malformed_first_token_files_are_refused(tmp_path: Path, edit, message):
    data = json.loads(first_token_map().to_json())
    del data["content_hash"]
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(HeadMapError, match=message):
        load_head_map(str(tmp_path / "bad.json"))


def test_settings_of_the_other_rule_are_refused():
    check_overrides(small_map(), threshold=0.2, beta=0.3)
    check_overrides(first_token_map(), factor=0.5)
    with pytest.raises(HeadMapError, match="act_factor applies to first_token maps; this is an ACT map"):
        check_overrides(small_map(), factor=0.5)
    with pytest.raises(HeadMapError, match="act_threshold, act_beta apply to ACT maps; .*factor 2: set act_factor instead"):
        check_overrides(first_token_map(), threshold=0.2, beta=0.3)
    with pytest.raises(HeadMapError, match="act_reference_sinks applies to ACT maps"):
        check_overrides(first_token_map(), reference_sinks=True)


def test_a_map_names_the_tasks_its_search_never_saw():
    """A per-task map knows its one task (lite or full split); the authors' maps record no searched tasks."""
    trec = load_head_map("smollm2-135m.classification_spaced.act_trec_spaced")
    tasks = ["act_trec_spaced_lite", "act_trec_spaced", "act_trec_lite", "act_agnews_spaced", None]
    assert trec.unsearched_tasks(tasks) == ["act_agnews_spaced", "act_trec_lite"]
    family = load_head_map("smollm2-135m.classification")
    assert family.unsearched_tasks(["act_sst2_lite", "act_boolq", "act_arc_easy_lite"]) == ["act_arc_easy_lite"]
    assert load_head_map("llama-2-7b-chat.classification").unsearched_tasks(["act_arc_easy"]) == []
