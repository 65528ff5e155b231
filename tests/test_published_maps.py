"""The searched maps under head_maps/: each is the search's own output and holds only heads the
search confirmed exactly and kept (the map's provenance is the evidence a user reads); a search's
per-task maps are published by one rule, whatever their evaluation later showed."""

from __future__ import annotations

from pathlib import Path

import pytest

from act_eval.core.head_map import HeadMap, load_head_map, published_head_maps

SEARCHES = Path(__file__).resolve().parent.parent / "searches"
PUBLISHED = {hm.name: hm for hm in published_head_maps()}
SEARCHED = [hm for hm in PUBLISHED.values() if "second generation" in hm.provenance.get("method", "")]


def search_output(name: str) -> Path:
    """A family map is ``searches/<name>/<name>.json``; a per-task map sits in its family's ``task_maps/``."""
    found = [*SEARCHES.glob(f"*/{name}.json"), *SEARCHES.glob(f"*/task_maps/{name}.json")]
    assert len(found) == 1, f"{name}: expected one search output, found {found}"
    return found[0]


def test_some_published_map_comes_from_the_search():
    assert SEARCHED, "no head map under head_maps/ was produced by act-eval search"


@pytest.mark.parametrize("hm", SEARCHED, ids=lambda hm: hm.name)
def test_a_searched_map_is_the_searchs_output(hm):
    assert load_head_map(search_output(hm.name)).content_hash == hm.content_hash


def settings(hm: HeadMap) -> tuple:
    return dict(hm.heads), hm.rule_settings()


@pytest.mark.parametrize("family", sorted(p.parent.name for p in SEARCHES.glob("*/task_maps")))
def test_a_per_task_map_is_published_when_non_empty_and_unlike_its_family_map(family):
    family_map = load_head_map(SEARCHES / family / f"{family}.json")
    for path in sorted((SEARCHES / family / "task_maps").glob("*.json")):
        task_map = load_head_map(path)
        distinct = task_map.num_calibrated > 0 and settings(task_map) != settings(family_map)
        published = PUBLISHED.get(task_map.name)
        assert (published is not None) == distinct, f"{task_map.name}: published {published is not None}, rule says {distinct}"
        assert published is None or published.content_hash == task_map.content_hash


@pytest.mark.parametrize("hm", SEARCHED, ids=lambda hm: hm.name)
def test_every_head_of_a_searched_map_was_confirmed_exactly_and_kept(hm):
    prov = hm.provenance
    stats = {(s["layer"], s["head"]): s for s in prov["head_stats"]}
    accepted = [tuple(row["tried"]) for row in prov["combination"]["trajectory"] if row["accepted"]]
    heads = sorted((layer, h) for layer, hs in hm.heads.items() for h in hs)
    assert heads == sorted(accepted)
    assert all(stats[h]["kept"] for h in heads)
    chosen = prov["settings"]["chosen"]
    if hm.rule == "first_token":  # the setting chosen on validation is the factor
        assert (hm.rule, hm.factor) == (chosen["rule"], chosen["factor"])
    else:
        assert (hm.threshold, hm.beta) == (chosen["threshold"], chosen["beta"])
    assert prov["validation"]["map"]["objective"] >= prov["validation"]["baseline"]["objective"]
