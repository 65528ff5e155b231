"""``hf-fast``: lm-eval's ``hf`` model, computing logits only where a request is scored.

HFLM asks the model for logits at every position of every row and log-softmaxes them all,
though a loglikelihood request scores only its continuation's positions. With a large
vocabulary that is most of the work: on Gemma-3-270M (262k-entry vocabulary) the output
projection and its log-softmax cost more than the 18 transformer layers
(``benchmarks/bench_scoring.py``). transformers' causal LMs take ``logits_to_keep=K`` (logits
for the last K positions only), and HFLM already reads logits shorter than its input (its
offset for virtual tokens), so asking for the smallest K that covers every row's scored span
gives the same log-likelihoods from a fraction of the work.

Each padded row is tied back to its request (:mod:`act_eval.lm.rows`), for the logits it needs
here and for the prompt length ``hf-act`` (a subclass) passes to the attention function.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from act_eval.lm.pretrained import resolve_pretrained
from act_eval.lm.rows import RequestWindows, scored_tail
from act_eval.lm.task_data import local_data_dir

log = logging.getLogger("lm_eval.models.hf_fast")  # lm-eval's CLI shows its models' log lines


@register_model("hf-fast")
class HFFastLM(HFLM):
    """HFLM that computes logits only at the positions loglikelihood requests score.

    Takes ``hf``'s model args; ``pretrained`` may also name an embedded model
    (``act-eval models list``). Generation is ``hf``'s, unchanged.
    """

    # whether the forward pass depends on where each row's prompt ends (hf-act: the sink set)
    PROMPT_SENSITIVE = False

    def __init__(self, pretrained: Any, device: str | None = None, **kwargs: Any) -> None:
        local_data_dir()  # a bad ACT_EVAL_DATA_DIR is refused now, not after the weights load
        if isinstance(pretrained, str):
            pretrained = resolve_pretrained(pretrained)
        if device is None:  # HFLM's default is cuda, which fails on CPU-only torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cpu":
                log.info("%s: CUDA is not available: running on the CPU", type(self).__name__)
        super().__init__(pretrained=pretrained, device=device, **kwargs)
        self._shard_across_cpu_processes()
        self._windows = RequestWindows()  # the requests of the loglikelihood call in progress
        self._trims = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        if not self._trims:
            log.warning("%s takes no logits_to_keep: computing logits at every position, as hf does", type(self.model).__name__)

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

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        windows = RequestWindows.of(requests, self.max_length)
        if windows.ambiguous and self.PROMPT_SENSITIVE:
            log.warning(
                "%d request(s) feed the same tokens as another with a different context length; "
                "the first one's context is taken as the prompt", windows.ambiguous,
            )
        self._windows = windows
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._windows = RequestWindows()

    def _scoring(self, prompts: list[int | None], length: int) -> dict[str, Any]:
        """Extra forward arguments for one pass over rows padded to ``length`` with these context lengths (None: no request)."""
        return {}

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        if attn_mask is not None or not self._windows:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        matches = [self._windows.match(row) for row in inps.tolist()]
        keep = scored_tail(inps.shape[1], [None if m is None else m[1] for m in matches]) if self._trims else None
        kwargs = self._scoring([None if m is None else m[0] for m in matches], inps.shape[1])
        if keep is not None:
            kwargs["logits_to_keep"] = keep
        # HFLM's own call, with this pass's arguments passed to the forward call itself
        with torch.no_grad(), torch.autocast(
            device_type=self.device.type, dtype=self.mixed_precision_dtype, enabled=self.mixed_precision_dtype is not None
        ):
            return self.model(inps, **kwargs).logits
