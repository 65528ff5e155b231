"""``hf-act`` from a fresh shell: ``lm_eval``, ``python -m lm_eval`` and data parallel with torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HEADS = "[[3,1],[5,2],[10,4],[12,0],[20,7]]"


def run_lm_eval(launcher: list[str], model: str, model_args: str, out: Path, limit: int = 12,
                seen: dict | None = None) -> dict[int, dict]:
    """The run's samples by doc_id; ``seen`` (if given) receives the results file and stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = launcher + [
        "--model", model, "--model_args", model_args, "--tasks", "act_sst2",
        "--include_path", str(REPO / "tasks"), "--limit", str(limit), "--batch_size", "4",
        "--output_path", str(out), "--log_samples",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (samples,) = out.glob("*/samples_act_sst2_*.jsonl")
    (results,) = out.glob("*/results_*.json")
    assert json.loads(results.read_text())["config"]["model"] == model
    if seen is not None:
        seen.update(results=json.loads(results.read_text()), stderr=proc.stderr)
    return {row["doc_id"]: row for row in map(json.loads, samples.read_text().splitlines())}


def loglik(row: dict) -> list[float]:
    return [float(resp[0][0]) for resp in row["resps"]]


def test_plain_lm_eval_knows_hf_act_and_still_knows_hf(tmp_path: Path):
    lm_eval = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    assert lm_eval, "the lm_eval console script is installed beside this Python"
    seen: dict = {}
    act = run_lm_eval([lm_eval], "hf-act", f"pretrained=smollm2-135m,act_heads={HEADS}", tmp_path / "act", seen=seen)
    calibration = seen["results"]["config"]["act"]  # the map that ran, in the results file
    assert calibration["heads"] == {"3": [1], "5": [2], "10": [4], "12": [0], "20": [7]}
    assert calibration["num_calibrated_heads"] == 5 and calibration["head_map_hash"].startswith("sha256:")
    assert "hf-act: head map act_heads (" in seen["stderr"]
    assert "Custom kwargs can be passed" not in seen["stderr"]  # lm-eval's per-task note is quieted
    from act_eval.lm.pretrained import resolve_pretrained

    hf = run_lm_eval([lm_eval], "hf", f"pretrained={resolve_pretrained('smollm2-135m')}", tmp_path / "hf")
    assert act.keys() == hf.keys() == set(range(12))
    diffs = [abs(a - b) for d in act for a, b in zip(loglik(act[d]), loglik(hf[d]))]
    assert max(diffs) > 1e-3  # calibration ran


def test_data_parallel_torchrun_matches_one_process(tmp_path: Path):
    args = f"pretrained=smollm2-135m,act_heads={HEADS}"
    one = run_lm_eval([sys.executable, "-m", "lm_eval"], "hf-act", args, tmp_path / "one", limit=16)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lm_eval"]
    two = run_lm_eval(torchrun, "hf-act", args, tmp_path / "two", limit=16)
    assert one.keys() == two.keys() == set(range(16))
    for doc_id in one:
        assert one[doc_id]["acc"] == two[doc_id]["acc"]
        for a, b in zip(loglik(one[doc_id]), loglik(two[doc_id])):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
