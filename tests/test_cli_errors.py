"""``act-eval`` errors: one line naming the problem (and the closest known name), ``--debug`` for the traceback."""

from __future__ import annotations

import pytest

from act_eval.cli import error_line, main


def test_a_misspelt_map_gets_one_line_with_the_closest_name(capsys):
    assert main(["head-maps", "show", "smollm2-135m.clasification"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("act-eval head-maps: error: head map 'smollm2-135m.clasification' is neither a file nor a published map")
    assert "(did you mean 'smollm2-135m.classification'?)" in err


def test_debug_shows_the_traceback():
    with pytest.raises(FileNotFoundError, match="neither a file nor a published map"):
        main(["--debug", "head-maps", "show", "no-such-map"])


def test_a_misspelt_task_is_named_before_any_model_loads(capsys, tmp_path):
    args = ["icl", "run", "--model", "hf", "--model_args", "pretrained=/no/such/model", "--tasks", "act_sst3",
            "--no-builtin-tasks", "--output_path", str(tmp_path / "icl")]
    assert main(args) == 2
    assert capsys.readouterr().err == "act-eval icl: error: unknown task or group 'act_sst3' (did you mean 'act_sst5'?)\n"


def test_unexpected_errors_name_their_type_and_point_to_debug():
    assert error_line(RuntimeError("CUDA out of\nmemory")) == "RuntimeError: CUDA out of memory (run with --debug for the traceback)"
    assert error_line(KeyError("no 'acc' in the run")) == "no 'acc' in the run"


def test_a_misspelt_family_is_refused_before_the_search_loads_a_model(capsys, tmp_path):
    args = ["search", "--model", "/no/such/model", "--tasks", "clasification", "--out", str(tmp_path / "map.json")]
    assert main(args) == 2
    assert capsys.readouterr().err == "act-eval search: error: unknown task, group or family 'clasification' (did you mean 'classification'?)\n"
