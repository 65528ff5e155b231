"""``hf-act``: lm-eval's ``hf`` model with ACT-calibrated attention.

A thin HFLM subclass, in the manner of lm-eval's ``steered`` model: it loads the model as
``hf`` does, turns calibration on through :func:`act_eval.attention.enable_act`, and per
forward pass tells the attention modules which rows are prompt. lm-eval right-pads
loglikelihood batches with token 0 and passes no attention mask, so before delegating to
HFLM it records, for every request, the token window HFLM will feed and its context length;
``_model_call`` then recovers each row's context length by matching its unpadded prefix.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from act_eval.attention import ActController, enable_act
from act_eval.head_map import HeadMapError, check_beta, check_threshold
from act_eval.models import model_identity, resolve_pretrained

log = logging.getLogger(__name__)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise HeadMapError(f"{name} must be true or false, got {value!r}")


@register_model("hf-act")
class HFActLM(HFLM):
    """HFLM with ACT.

    Model args beyond ``hf``'s: ``head_map`` (published name or JSON path), ``act_heads``
    (inline ``[[layer, head], ...]``), ``act_threshold``, ``act_beta``,
    ``act_reference_sinks`` (reproduce the authors' "drop the first detected sink"), and
    ``act_check_model`` (refuse a map made for another model; default true).
    """

    def __init__(
        self,
        pretrained: Any,
        head_map: str | None = None,
        act_heads: str | list | dict | None = None,
        act_threshold: float | None = None,
        act_beta: float | None = None,
        act_reference_sinks: bool | str = False,
        act_check_model: bool | str = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("tp_plan") is not None:
            raise ValueError(
                "hf-act does not support tp_plan: tensor parallelism shards attention heads across devices, "
                "so a head map's per-head indices would no longer name the heads each device computes; "
                "use parallelize=True (layers across devices) or accelerate launch (data parallel)"
            )
        if head_map is not None and act_heads is not None:
            raise HeadMapError("give either head_map or act_heads, not both")
        # validate cheap arguments before spending time on loading the model
        threshold = None if act_threshold is None else check_threshold(act_threshold)
        beta = None if act_beta is None else check_beta(act_beta)
        reference = _as_bool("act_reference_sinks", act_reference_sinks)
        check_model = _as_bool("act_check_model", act_check_model)
        if isinstance(pretrained, str):
            identity = model_identity(pretrained)
            pretrained = resolve_pretrained(pretrained)
        else:
            identity = getattr(pretrained.config, "_name_or_path", "")
        if isinstance(act_heads, str):
            try:
                act_heads = json.loads(act_heads)
            except json.JSONDecodeError as err:
                raise HeadMapError(f"act_heads must be JSON like [[layer, head], ...], got {act_heads!r} ({err})") from None

        super().__init__(pretrained=pretrained, **kwargs)
        self._shard_across_cpu_processes()

        self.act: ActController = enable_act(
            self.model,
            head_map if head_map is not None else act_heads,
            threshold=threshold,
            beta=beta,
            reference_drop_first=reference,
            model_id=identity,
            check_model=check_model,
        )
        self._act_windows: dict[int, dict[tuple[int, ...], int]] = {}
        log.info("hf-act: %s%s", self.act_config, " (reference sink rule)" if reference else "")

    def _shard_across_cpu_processes(self) -> None:
        """Make a multi-process CPU launch split the documents across processes.

        (``ACCELERATE_USE_CPU=true torchrun --nproc_per_node N -m lm_eval ...``; ``accelerate
        launch --cpu`` starts a single process.) HFLM keeps the Accelerator of a multi-process
        launch but shards the work only when it counts more than one GPU, so on CPU every
        process would evaluate every document.
        """
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and self._world_size == 1 and accelerator.num_processes > 1:
            self._rank = accelerator.local_process_index
            self._world_size = accelerator.num_processes

    @property
    def act_config(self) -> dict[str, Any]:
        """The calibration in force, with the head map's content hash that results should cite."""
        hm = self.act.head_map
        return {
            "head_map": hm.name or hm.source or "inline",
            "head_map_hash": hm.content_hash,
            "num_calibrated_heads": hm.num_calibrated,
            "threshold": self.act.threshold,
            "beta": self.act.beta,
        }

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        windows: dict[int, dict[tuple[int, ...], int]] = {}
        for _, context, continuation in requests:
            window = tuple((context + continuation)[-(self.max_length + 1):][:-1])
            prompt = len(window) - (len(continuation) - 1)
            known = windows.setdefault(len(window), {})
            if known.setdefault(window, prompt) != prompt:
                log.warning("hf-act: two requests feed the same tokens with different context lengths; using the first")
        self._act_windows = windows
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._act_windows = {}

    def _prompt_length(self, row: list[int]) -> int:
        """Context length of a right-padded row: the longest recorded window it starts with."""
        end = len(row)
        while True:
            window = self._act_windows.get(end, {}).get(tuple(row[:end]))
            if window is not None:
                return window
            if end == 0 or row[end - 1] != 0:
                break
            end -= 1
        # not a scored request (e.g. lm-eval's batch-size probe): the whole row is prompt
        return len(row)

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        if attn_mask is not None or not self._act_windows:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        lengths = [self._prompt_length(row) for row in inps.tolist()]
        with self.act.prompt_lengths(lengths):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
