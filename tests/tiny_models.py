"""Tiny random models of each architecture, for plumbing tests (accuracy claims use real models)."""

from __future__ import annotations

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

transformers.logging.set_verbosity_error()

SUPPORTED = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3", "gpt2", "gemma2"]
# Architectures whose routing through the attention interface changes between transformers
# releases (GPT-J joined it in 5.24); tests decide from what the installed release does.
OTHERS = ["falcon", "gptj", "bloom", "mpt"]


def tiny_model(model_type: str, seed: int = 0) -> transformers.PreTrainedModel:
    common = dict(vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    layers, heads, width = 3, 4, 64
    if model_type == "gpt2":
        kw = dict(n_layer=layers, n_embd=width, n_head=heads)
    elif model_type == "gptj":
        kw = dict(n_layer=layers, n_embd=width, n_head=heads, rotary_dim=8)
    elif model_type == "bloom":
        kw = dict(n_layer=layers, hidden_size=width, n_head=heads)
    elif model_type == "mpt":
        kw = dict(n_layers=layers, d_model=width, n_heads=heads)
    elif model_type == "falcon":
        kw = dict(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads)
    else:
        kw = dict(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                  num_key_value_heads=2, head_dim=16, intermediate_size=128)
        if model_type in ("gemma3_text", "mistral", "gemma2"):
            kw["sliding_window"] = 6  # exercise sliding-window layers on short inputs
    config = AutoConfig.for_model(model_type, **common, **kw)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
