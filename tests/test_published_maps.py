"""The searched maps under head_maps/: each is the search's own output and holds only heads the
search confirmed exactly and kept (the map's provenance is the evidence a user reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from act_eval.core.head_map import load_head_map, published_head_maps

SEARCHES = Path(__file__).resolve().parent.parent / "searches"
SEARCHED = [hm for hm in published_head_maps() if "second generation" in hm.provenance.get("method", "")]


def test_some_published_map_comes_from_the_search():
    assert SEARCHED, "no head map under head_maps/ was produced by act-eval search"


@pytest.mark.parametrize("hm", SEARCHED, ids=lambda hm: hm.name)
def test_a_searched_map_is_the_searchs_output(hm):
    searched = load_head_map(SEARCHES / hm.name / f"{hm.name}.json")
    assert searched.content_hash == hm.content_hash


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
