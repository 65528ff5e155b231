"""Register ``hf-act`` and ``hf-fast`` with lm-eval 0.4.13, which has no plugin discovery.

Imported at interpreter start-up by ``act_eval_lm_eval_hook.pth``. It costs nothing unless
the process imports lm-eval: a meta-path finder waits for ``lm_eval.api.registry`` to be
imported and then registers lazy ``module:Class`` placeholders, so plain
``lm_eval --model hf-act``, ``python -m lm_eval`` and ``accelerate launch -m lm_eval`` all
see the model type while nothing of act-eval (or torch) is imported until it is used.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

MODELS = {"hf-act": "act_eval.lm.hf_act:HFActLM", "hf-fast": "act_eval.lm.hf_fast:HFFastLM"}
_REGISTRY_MODULE = "lm_eval.api.registry"


def register(registry_module) -> None:
    """Register the placeholders; built-in models first, since lm-eval only imports them into an empty registry."""
    import lm_eval.models  # noqa: F401  (fills the registry with the built-in placeholders)

    registry = registry_module.model_registry
    for name, target in MODELS.items():
        if name not in registry:
            registry.register(name, target=target)


class _RegistryLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        register(module)


class _RegistryFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegistryLoader(spec.loader)
        return spec


def install() -> None:
    if _REGISTRY_MODULE in sys.modules:
        register(sys.modules[_REGISTRY_MODULE])
    elif not any(isinstance(f, _RegistryFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


install()
