"""``hf-act`` refuses bad arguments before any weights load, and runs on the CPU when CUDA is absent.

The refusals are shown on a model directory holding SmolLM2's config and tokenizer but no weights: if a check
ran only after loading, the error would be about the missing weights instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import logged
import torch

from act_eval.core.head_map import HeadMapError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weightless(smollm2_path, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("weightless")
    for path in Path(smollm2_path).iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy(path, folder / path.name)
    return str(folder)


def test_the_folder_really_has_no_weights(weightless):
    from act_eval.lm.hf_act import HFActLM

    with pytest.raises(OSError):
        HFActLM(pretrained=weightless, tokenizer=weightless, device="cpu", act_heads=[[3, 1]])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(head_map="smollm2-135m.clasification"), FileNotFoundError,
         r"head map 'smollm2-135m.clasification' is neither a file nor a published map \(did you mean 'smollm2-135m.classification'"),
        (dict(act_heads=[[30, 0]]), HeadMapError, "layer 30 is out of range: the model has 30 layers"),
        (dict(act_heads=[[3, 9]]), HeadMapError, "head 9 of layer 3 is out of range"),
        (dict(head_map="llama-2-7b-chat.classification"), HeadMapError,
         "head map llama-2-7b-chat.classification: num_layers is 32 but the loaded model has 30"),
        (dict(head_map="gemma3-270m.classification"), HeadMapError, "made for architecture 'gemma3_text'"),
    ],
)
def test_bad_maps_are_refused_before_the_weights_load(weightless, kwargs, error, message):
    from act_eval.lm.hf_act import HFActLM

    with pytest.raises(error, match=message):
        HFActLM(pretrained=weightless, tokenizer=weightless, device="cpu", **kwargs)


def test_settings_of_the_other_rule_are_refused_before_the_weights_load(weightless, tmp_path):
    from act_eval.core.head_map import HeadMap
    from act_eval.lm.hf_act import HFActLM

    first = HeadMap(model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="llama", num_layers=30, num_heads=9,
                    num_kv_heads=3, heads={3: (1,)}, name="ft", rule="first_token", factor=2.0)
    path = str(first.save(tmp_path / "ft.json"))
    for kwargs, message in (
        (dict(head_map=path, act_threshold=0.2), "act_threshold applies to ACT maps; .*set act_factor instead"),
        (dict(head_map=path, act_factor=0), r"act_factor must be a positive number .*got 0.0"),
        (dict(act_heads=[[3, 1]], act_factor=2.0), "act_factor applies to first_token maps; this is an ACT map"),
    ):
        with pytest.raises(HeadMapError, match=message):
            HFActLM(pretrained=weightless, tokenizer=weightless, device="cpu", **kwargs)


def test_a_missing_data_directory_is_refused_before_the_weights_load(weightless, monkeypatch, tmp_path):
    from act_eval.lm.hf_act import HFActLM

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACT_EVAL_DATA_DIR", "no/such/data")
    with pytest.raises(FileNotFoundError, match=rf"ACT_EVAL_DATA_DIR='no/such/data' is not a directory .*relative to the current directory {tmp_path}"):
        HFActLM(pretrained=weightless, tokenizer=weightless, device="cpu", act_heads=[[3, 1]])


def test_without_a_device_it_runs_where_torch_can(smollm2_path, caplog):
    from act_eval.lm.hf_fast import HFFastLM

    with logged(caplog, "lm_eval.models.hf_fast"):
        lm = HFFastLM(pretrained=smollm2_path)
    if torch.cuda.is_available():
        assert lm.device.type == "cuda"
    else:
        assert lm.device.type == "cpu"
        assert "HFFastLM: CUDA is not available: running on the CPU" in caplog.text
