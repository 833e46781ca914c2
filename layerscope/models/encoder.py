"""Loading any Hugging Face model with its tokenizer and finding its ordered blocks (freezing: :mod:`.freezing`).

Layer 0 is the embedding output and layer *i* the output of block *i*, on every architecture.
Blocks are found by architecture (``encoder.layer``, ``transformer.layer``, ``layers``, ``h``)
with a generic fallback (the longest ``nn.ModuleList`` of identical blocks), so that "the lower
half" names the same blocks on BERT, DistilBERT, XLM-R, GPT-2 or Llama.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LayerscopeError
from .checkpoint import BareStateDict, Checkpoint, read_weights_file, refuse_non_finite, state_dict_hash

log = logging.getLogger(__name__)

# Paths of the block list, tried in order, relative to the base model.
KNOWN_BLOCK_PATHS = (
    "encoder.layer",  # BERT, XLM-R, RoBERTa, ELECTRA
    "transformer.layer",  # DistilBERT
    "layers",  # Llama, Qwen, Mistral, Gemma
    "h",  # GPT-2, GPT-J, BLOOM
    "encoder.layers",
    "decoder.layers",
    "transformer.h",
    "model.layers",
    "block",  # T5 stacks
    "encoder.block",
)

# Modules after the blocks that rewrite the last hidden state in ``output_hidden_states``.
FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_norm", "layer_norm", "final_layernorm")


@dataclass
class Encoder:
    """A base model (no task head) with its tokenizer and the ordered list of its blocks."""

    model: nn.Module
    tokenizer: Any
    block_paths: list[str]
    name: str
    source_hash: str
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    tokenizer_name: str | None = None

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.model.get_submodule(path) for path in self.block_paths]

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks L (a layer stack has L + 1 layers)."""
        return len(self.block_paths)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        for attr in ("hidden_size", "dim", "n_embd", "d_model"):
            if getattr(config, attr, None):
                return int(getattr(config, attr))
        raise LayerscopeError(f"cannot tell the hidden size of {self.name}")

    @property
    def max_positions(self) -> int:
        """Longest input in sub-tokens the model accepts (position table and tokenizer limit)."""
        config = self.model.config
        limits = []
        for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                if "roberta" in str(config.model_type):
                    value -= int(getattr(config, "pad_token_id", 1) or 0) + 1  # positions start after padding_idx
                limits.append(value)
                break
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10**6:
            limits.append(tokenizer_limit)
        return min(limits) if limits else 512

    @property
    def layer_names(self) -> list[str]:
        return ["embeddings"] + [f"block {i + 1}" for i in range(self.num_layers)]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.model.config.to_json_string(use_diff=False))

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter names grouped as ``embeddings``, ``block.0`` … ``block.{L-1}``, ``after``."""
        return group_parameters(self.model, self.block_paths)

    def final_norm_after_blocks(self) -> bool:
        """Whether the model normalises the last hidden state after its last block (GPT-2, Llama)."""
        top = self.block_paths[0].split(".")[0]
        names = list(self.model._modules)
        after = names[names.index(top) + 1 :] if top in names else []
        return any(name in FINAL_NORM_NAMES for name in after)


def group_parameters(model: nn.Module, block_paths: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"embeddings": [], "after": []}
    prefixes = [(f"block.{i}", path + ".") for i, path in enumerate(block_paths)]
    for i in range(len(block_paths)):
        groups[f"block.{i}"] = []
    container_top = block_paths[0].split(".")[0]
    top_order = list(model._modules)
    container_index = top_order.index(container_top) if container_top in top_order else len(top_order)
    for name, _ in model.named_parameters():
        for group, prefix in prefixes:
            if name.startswith(prefix):
                groups[group].append(name)
                break
        else:
            top = name.split(".")[0]
            position = top_order.index(top) if top in top_order else container_index + 1
            groups["embeddings" if position < container_index else "after"].append(name)
    return groups


def find_blocks(model: nn.Module, *, source: object | None = None) -> list[str]:
    """Module paths of the ordered transformer blocks of ``model`` (``source`` names it in errors)."""
    expected = None
    config = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layers", "n_layer", "num_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            expected = value
            break
    for path in KNOWN_BLOCK_PATHS:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (expected is None or len(module) == expected):
            return [f"{path}.{i}" for i in range(len(module))]
    # Generic fallback: the longest ModuleList whose children all share one class.
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and (best is None or len(module) > best[0]):
                best = (len(module), name)
    if best is None:
        raise LayerscopeError(f"cannot find the transformer blocks of {type(model).__name__}", source=source)
    return [f"{best[1]}.{i}" for i in range(best[0])]


# --------------------------------------------------------------------------- loading


def _tokenizer_from_checkpoint(ckpt: Checkpoint, *, trust_remote_code: bool):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if ckpt.tokenizer_json:
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(ckpt.tokenizer_json)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise LayerscopeError(f"the embedded tokenizer is unreadable ({exc})", source=ckpt.path) from None
        kwargs = {k: v for k, v in (ckpt.tokenizer_config or {}).items() if v is not None}
        try:
            return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
        except Exception as exc:  # noqa: BLE001 - settings come from the file; any failure is bad input
            raise LayerscopeError(f"the embedded tokenizer settings are invalid ({_short_error(exc)})",
                                  source=ckpt.path) from None
    if ckpt.tokenizer_name:
        try:
            return AutoTokenizer.from_pretrained(ckpt.tokenizer_name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise LayerscopeError(f"cannot load the tokenizer {ckpt.tokenizer_name!r} the checkpoint names "
                                  f"({_short_error(exc)})", source=ckpt.path) from None
    raise LayerscopeError("checkpoint has no tokenizer; pass --model <hub id or dir> for one", source=ckpt.path)


def tokenizer_payload(tokenizer) -> tuple[str | None, dict[str, Any]]:
    """The tokenizer.json string and the special-token settings needed to rebuild a tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None, {}
    config: dict[str, Any] = dict(tokenizer.special_tokens_map)
    config = {k: (str(v) if not isinstance(v, list) else [str(x) for x in v]) for k, v in config.items()}
    max_len = getattr(tokenizer, "model_max_length", None)
    if isinstance(max_len, int) and max_len < 10**9:
        config["model_max_length"] = max_len
    config["padding_side"] = getattr(tokenizer, "padding_side", "right")
    return backend.to_str(), config


def _short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: transformers' messages can list every model type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _config_from_dict(config: dict[str, Any], source: object):
    from transformers import AutoConfig, CONFIG_MAPPING

    config = dict(config)
    model_type = config.pop("model_type", None)
    if not model_type or not isinstance(model_type, str):
        raise LayerscopeError("checkpoint config has no model_type", source=source)
    if model_type not in CONFIG_MAPPING:
        raise LayerscopeError(f"unknown model_type {model_type!r} (not a transformers architecture)", source=source)
    try:
        return AutoConfig.for_model(model_type, **config)
    except Exception as exc:  # noqa: BLE001 - values come from the file; any failure is bad input
        raise LayerscopeError(f"invalid {model_type} config ({_short_error(exc)})", source=source) from None


def _model_from_config(config, source: object, *, trust_remote_code: bool) -> nn.Module:
    """``AutoModel.from_config``, with a config that cannot build a model reported as bad input."""
    from transformers import AutoModel

    try:
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - e.g. a width that the number of heads does not divide
        raise LayerscopeError(f"the checkpoint's config cannot build a model ({_short_error(exc)})",
                              source=source) from None


def _strip_to_base(state: dict[str, torch.Tensor], base: nn.Module) -> dict[str, torch.Tensor]:
    """Map a state_dict saved from a model with a head (``bert.``, ``model.`` …) onto the base model."""
    expected = set(base.state_dict())
    if set(state) & expected:
        candidates = [""]
    else:
        candidates = []
    prefixes = {key.split(".")[0] + "." for key in state}
    candidates += sorted(prefixes)
    best, best_hits = state, -1
    for prefix in candidates:
        mapped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        hits = len(set(mapped) & expected)
        if hits > best_hits:
            best, best_hits = mapped, hits
    return best


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    state = _strip_to_base(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    # Buffers such as position_ids are rebuilt by the model; only parameters must be present.
    param_names = {name for name, _ in model.named_parameters()}
    # Parameters after the blocks (a pooler, say) never shape a hidden state layerscope reads:
    # weights saved from a model with a task head lack them, which is harmless.
    after = set(group_parameters(model, find_blocks(model, source=source))["after"])
    skipped = [k for k in missing if k in param_names and k in after]
    if skipped:
        log.info("%s: %d parameters after the blocks not in the weights, kept as initialised (%s)",
                 source, len(skipped), ", ".join(skipped[:3]))
    missing_params = [k for k in missing if k in param_names and k not in after]
    if missing_params:
        shown = ", ".join(missing_params[:3])
        raise LayerscopeError(
            f"weights do not match the architecture: {len(missing_params)} parameters missing ({shown}…)",
            source=source,
        )
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise LayerscopeError(
            f"weights do not match the architecture: {k} has shape {tuple(state[k].shape)}, "
            f"model expects {tuple(own[k].shape)}",
            source=source,
        )
    # Integer weights for a float parameter would be cast silently and lose everything after the point.
    kinds = [k for k in own if k in state and state[k].is_floating_point() != own[k].is_floating_point()]
    if kinds:
        k = kinds[0]
        raise LayerscopeError(
            f"weights do not match the architecture: {k} has dtype {state[k].dtype}, model expects {own[k].dtype}",
            source=source,
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _finish(model: nn.Module, tokenizer, *, name: str, source_hash: str, meta: dict, tokenizer_name: str | None,
            device: str | torch.device) -> Encoder:
    block_paths = find_blocks(model, source=name)
    if getattr(tokenizer, "pad_token", None) is None:
        # Decoder-only tokenizers often lack a pad token; padding is masked out anyway.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise LayerscopeError(f"tokenizer of {name} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    model.eval()
    model.to(device)
    return Encoder(
        model=model,
        tokenizer=tokenizer,
        block_paths=block_paths,
        name=name,
        source_hash=source_hash,
        checkpoint_meta=meta,
        tokenizer_name=tokenizer_name,
    )


def encoder_from_checkpoint(ckpt: Checkpoint, *, device: str | torch.device = "cpu",
                            trust_remote_code: bool = False) -> Encoder:
    config = _config_from_dict(ckpt.config, ckpt.path)
    model = _model_from_config(config, ckpt.path, trust_remote_code=trust_remote_code)
    _load_state(model, ckpt.state_dict, ckpt.path)
    tokenizer = _tokenizer_from_checkpoint(ckpt, trust_remote_code=trust_remote_code)
    name = str(ckpt.path.name) if ckpt.path else ckpt.meta.get("name", ckpt.model_type)
    return _finish(model, tokenizer, name=name, source_hash=ckpt.content_hash(), meta=ckpt.meta,
                   tokenizer_name=ckpt.tokenizer_name, device=device)


def _from_pretrained(name_or_dir: str, *, trust_remote_code: bool):
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(name_or_dir, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name_or_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # ValueError: a directory without a usable config.json
        first = _short_error(exc)
        raise LayerscopeError(
            f"cannot load as a Hugging Face model ({first}); without internet, give a local "
            "directory or a layerscope checkpoint",
            source=name_or_dir,
        ) from None
    except SafetensorError as exc:
        raise LayerscopeError(f"corrupt safetensors weights in the model ({_short_error(exc)})",
                              source=name_or_dir) from None
    refuse_non_finite(model.state_dict(), name_or_dir)
    return model, tokenizer


def load_encoder(
    source: str | os.PathLike | Checkpoint,
    *,
    model: str | None = None,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> Encoder:
    """Load an encoder from any supported source.

    Parameters
    ----------
    source : a layerscope checkpoint (``.pt``) or :class:`Checkpoint`, an HF model directory,
        a hub id, a ``.safetensors`` file or a bare state_dict ``.pt`` (the last two need ``model``),
        or a built-in model such as ``e5-small`` (see :mod:`layerscope.models`).
    model : hub id or HF directory giving the architecture and tokenizer for bare weights.
    """
    if isinstance(source, Checkpoint):
        return encoder_from_checkpoint(source, device=device, trust_remote_code=trust_remote_code)
    text = str(source)
    from .builtin import builtin_model_name, load_builtin

    builtin = builtin_model_name(text)
    if builtin is not None:
        return load_builtin(builtin, device=device)
    path = Path(text)
    if path.is_dir():
        base, tokenizer = _from_pretrained(text, trust_remote_code=trust_remote_code)
        return _finish(base, tokenizer, name=path.name, source_hash=state_dict_hash(base.state_dict()),
                       meta={}, tokenizer_name=None, device=device)
    looks_like_file = path.suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") or path.exists()
    if looks_like_file:
        loaded = read_weights_file(path)
        if isinstance(loaded, Checkpoint):
            return encoder_from_checkpoint(loaded, device=device, trust_remote_code=trust_remote_code)
        assert isinstance(loaded, BareStateDict)
        if model is None:
            raise LayerscopeError(
                "bare weights without architecture or tokenizer; pass --model <hub id or HF directory>",
                source=path,
            )
        base, tokenizer = _from_pretrained(model, trust_remote_code=trust_remote_code)
        _load_state(base, loaded.state_dict, path)
        return _finish(base, tokenizer, name=path.name, source_hash=state_dict_hash(base.state_dict()),
                       meta={"architecture_from": model}, tokenizer_name=model, device=device)
    # A hub id such as "xlm-roberta-base" or "org/model".
    base, tokenizer = _from_pretrained(text, trust_remote_code=trust_remote_code)
    return _finish(base, tokenizer, name=text, source_hash=state_dict_hash(base.state_dict()), meta={},
                   tokenizer_name=text, device=device)


def checkpoint_from_encoder(encoder: Encoder, *, meta: dict[str, Any] | None = None) -> Checkpoint:
    """A self-contained checkpoint of ``encoder``'s current weights, config and tokenizer."""
    tokenizer_json, tokenizer_config = tokenizer_payload(encoder.tokenizer)
    state = {k: v.detach().to("cpu").clone() for k, v in encoder.model.state_dict().items()}
    return Checkpoint(
        config=encoder.config_dict,
        state_dict=state,
        tokenizer_json=tokenizer_json,
        tokenizer_name=encoder.tokenizer_name,
        tokenizer_config=tokenizer_config,
        meta=dict(meta or {}),
    )


def check_compatible(a: Encoder, b: Encoder) -> None:
    """Two encoders can be compared only with the same architecture, depth, width and tokenizer."""
    ca, cb = a.model.config, b.model.config
    if ca.model_type != cb.model_type:
        raise LayerscopeError(f"{a.name} is a {ca.model_type} model but {b.name} is a {cb.model_type} model; compare needs one architecture")
    if a.num_layers != b.num_layers or a.hidden_size != b.hidden_size:
        raise LayerscopeError(
            f"{a.name} has {a.num_layers} blocks of width {a.hidden_size} but {b.name} has "
            f"{b.num_layers} of width {b.hidden_size}; compare needs one architecture"
        )
    ja, _ = tokenizer_payload(a.tokenizer)
    jb, _ = tokenizer_payload(b.tokenizer)
    if ja is not None and jb is not None and ja != jb:
        if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
            raise LayerscopeError(f"{a.name} and {b.name} use different tokenizers; compare needs one tokenizer")
