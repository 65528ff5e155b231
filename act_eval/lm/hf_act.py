"""``hf-act``: lm-eval's ``hf`` model with ACT-calibrated attention.

A thin subclass of ``hf-fast`` (:mod:`act_eval.lm.hf_fast`), in the manner of lm-eval's
``steered`` model: it loads the model as ``hf`` does, turns calibration on through
:func:`act_eval.core.enable.enable_act`, and passes each row's prompt length to the forward
call (``act_prompt_lengths``); ``hf-fast`` recovers each padded row's context length from the requests.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lm_eval.api.registry import register_model

from act_eval.core.attention import KERNELS, PROMPT_LENGTHS
from act_eval.core.enable import ActController, enable_act
from act_eval.core.head_map import HeadMap, HeadMapError, check_beta, check_factor, check_overrides, check_threshold, resolve_head_map
from act_eval.core.switch import config_shape
from act_eval.lm.hf_fast import HFFastLM
from act_eval.lm.pretrained import model_identity, resolve_pretrained

log = logging.getLogger("lm_eval.models.hf_act")  # lm-eval's CLI shows its models' log lines


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise HeadMapError(f"{name} must be true or false, got {value!r}")


def config_without_weights(pretrained: str, kwargs: dict[str, Any]):
    """The model's config, read as HFLM will read it, without loading weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        pretrained,
        revision=kwargs.get("revision") or "main",
        trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
        gguf_file=kwargs.get("gguf_file"),
        subfolder=kwargs.get("subfolder") or "",
    )


def fitted_head_map(
    spec: HeadMap | str | dict | list | None, pretrained: Any, kwargs: dict[str, Any], check_model: bool = True
) -> tuple[HeadMap, str]:
    """The map a run calibrates with, read and fitted to the model's config before any weights load, and the id
    head maps cite for the model. ``pretrained`` is a loadable path (resolved embedded name) or a loaded model."""
    if isinstance(pretrained, str):
        identity, config = model_identity(pretrained), config_without_weights(pretrained, kwargs)
    else:
        identity, config = model_identity(getattr(pretrained.config, "_name_or_path", "") or ""), pretrained.config
    return resolve_head_map(spec, model_id=identity, check_model=check_model, **config_shape(config)), identity


def _announce(config: dict[str, Any]) -> None:
    """One line saying what is calibrated; a warning when nothing is (the run then equals ``hf``)."""
    layers = ", ".join(f"{layer}:{heads}" for layer, heads in config["heads"].items())
    if config["rule"] == "act":
        rule = f"rule act, threshold {config['threshold']:g}, beta {config['beta']:g}"
        rule += ", reference sink rule" if config["reference_sinks"] else ""
    else:
        rule = f"rule first_token, factor {config['factor']:g}"
    log.info(
        "hf-act: head map %s (%s), %d heads [%s], %s",
        config["head_map"], config["head_map_hash"][:19], config["num_calibrated_heads"], layers or "none", rule,
    )
    if not config["num_calibrated_heads"]:
        log.warning("hf-act: head map %s selects no head: this run computes exactly what `hf` computes", config["head_map"])


def _warn_unsearched(head_map: HeadMap, requests: list) -> None:
    """A warning when this call scores tasks the map was not searched on: a per-task map run on a group, or a
    map on the other prompt protocol. It may be deliberate (the README evaluates maps across protocols); it
    should never be silent."""
    unseen = head_map.unsearched_tasks(getattr(r, "task_name", None) for r in requests)
    if unseen:
        log.warning(
            "hf-act: head map %s was searched on %s; this run also scores %s",
            head_map.name or head_map.source, ", ".join(head_map.provenance["tasks"]), ", ".join(unseen),
        )


@register_model("hf-act")
class HFActLM(HFFastLM):
    """``hf-fast`` with ACT.

    Model args beyond ``hf``'s: ``head_map`` (published name or JSON path; an ACT map or a
    first-token map), ``act_heads`` (inline ``[[layer, head], ...]``, ACT), ``act_threshold``,
    ``act_beta`` (ACT maps), ``act_factor`` (first-token maps), ``act_reference_sinks``
    (reproduce the authors' "drop the first detected sink"), ``act_check_model`` (refuse a map
    made for another model; default true), and ``act_kernel`` (``blockwise``, the default, or
    ``eager``, the float32 reference: same numbers).
    """

    PROMPT_SENSITIVE = True

    def __init__(
        self,
        pretrained: Any,
        head_map: str | None = None,
        act_heads: str | list | dict | None = None,
        act_threshold: float | None = None,
        act_beta: float | None = None,
        act_factor: float | None = None,
        act_reference_sinks: bool | str = False,
        act_check_model: bool | str = True,
        act_kernel: str = KERNELS[0],
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
        factor = None if act_factor is None else check_factor(act_factor)
        reference = _as_bool("act_reference_sinks", act_reference_sinks)
        check_model = _as_bool("act_check_model", act_check_model)
        if act_kernel not in KERNELS:
            raise HeadMapError(f"act_kernel must be one of {', '.join(KERNELS)}, got {act_kernel!r}")
        if isinstance(act_heads, str):
            try:
                act_heads = json.loads(act_heads)
            except json.JSONDecodeError as err:
                raise HeadMapError(f"act_heads must be JSON like [[layer, head], ...], got {act_heads!r} ({err})") from None
        if isinstance(pretrained, str):
            pretrained = resolve_pretrained(pretrained)
        calibration, identity = fitted_head_map(head_map if head_map is not None else act_heads, pretrained, kwargs, check_model)
        check_overrides(calibration, threshold, beta, factor, reference)

        super().__init__(pretrained=pretrained, **kwargs)

        self.act: ActController = enable_act(
            self.model,
            calibration,
            threshold=threshold,
            beta=beta,
            reference_drop_first=reference,
            model_id=identity,
            check_model=check_model,
            kernel=act_kernel,
            factor=factor,
        )
        self._reference_sinks = reference
        _announce(self.act_config)

    @property
    def act_config(self) -> dict[str, Any]:
        """The calibration in force, with the head map's content hash that results should cite: the rule,
        and its parameters (ACT: threshold, beta, reference_sinks; first_token: factor)."""
        hm = self.act.head_map
        if self.act.rule == "act":
            settings = {"threshold": self.act.threshold, "beta": self.act.beta, "reference_sinks": self._reference_sinks}
        else:
            settings = {"factor": self.act.factor}
        return {
            "head_map": hm.name or hm.source or "inline",
            "head_map_hash": hm.content_hash,
            "heads": {str(layer): list(heads) for layer, heads in sorted(hm.heads.items()) if heads},
            "num_calibrated_heads": hm.num_calibrated,
            "rule": self.act.rule,
            **settings,
        }

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus the calibration: lm-eval merges it into the results' ``config``,
        so a results file says which map ran (``act-eval submit`` and ``compare`` check it)."""
        return {**super().get_model_info(), "act": self.act_config}

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        _warn_unsearched(self.act.head_map, requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        _warn_unsearched(self.act.head_map, requests)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _scoring(self, prompts: list[int | None], length: int) -> dict[str, Any]:
        """Each row's prompt length, for the forward call; a row that is no request (lm-eval's
        batch-size probe) is all prompt."""
        return {PROMPT_LENGTHS: [length if p is None else p for p in prompts]}
