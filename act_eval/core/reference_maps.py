"""Convert the head maps published with the ACT paper's code into act-eval's format.

The authors' maps (``../shared/data/reference_head_maps``) list, per layer, the query heads
calibrated; they carry no architecture or KV-head count, which this module adds from the
public configs of the two models they were searched on.
"""

from __future__ import annotations

import json
from pathlib import Path

from act_eval.core.head_map import HeadMap, parse_heads

# architecture facts of the models the authors searched (from their public config.json)
_MODELS = {
    "meta-llama/Llama-2-7b-chat-hf": ("llama", 32),
    "mistralai/Mistral-7B-Instruct-v0.2": ("mistral", 8),
}


def convert_reference_map(path: str | Path) -> HeadMap:
    """Read one reference file and return it as a :class:`HeadMap` with provenance."""
    path = Path(path)
    data = json.loads(path.read_text())
    model = data["model"]
    if model not in _MODELS:
        raise ValueError(f"{path}: unknown reference model {model!r}; known: {', '.join(_MODELS)}")
    architecture, kv_heads = _MODELS[model]
    heads = parse_heads(data["heads"], f"{path}: ")
    count = sum(len(h) for h in heads.values())
    if count != data.get("num_calibrated_heads", count):
        raise ValueError(f"{path}: lists {count} heads but says num_calibrated_heads={data['num_calibrated_heads']}")
    family = str(data["task_family"]).split(" ")[0]
    short = path.name.removesuffix(".json").replace("-hf", "")
    return HeadMap(
        model=model,
        architecture=architecture,
        num_layers=data["num_layers"],
        num_heads=data["num_heads"],
        num_kv_heads=kv_heads,
        heads=heads,
        threshold=data["threshold"],
        beta=data["beta"],
        name=short,
        task_family=family,
        provenance={
            "method": "published by the ACT authors (Yu et al., ICML 2024); their released search script "
            "does not perform the selection step, so how these heads were kept is not documented",
            "search_data": "900 training examples pooled per dataset of the task family (paper, Section 4)",
            "source": data.get("source", {}),
            "layers_eligible": data.get("layers_eligible"),
            "note": data.get("note", ""),
            "converted_from": path.name,
        },
    )
