"""Brief masked-language-model pretraining of a small model (for the demo and experiments).

Real studies start from a pretrained hub model; this gives a tiny model enough multilingual
structure to have something to realign, in well under a minute on a CPU.
"""

from __future__ import annotations

import logging
import random
from typing import Sequence

import torch

from .. import progress

log = logging.getLogger(__name__)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, tokenizer, generator: torch.Generator,
                probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: 15% of real tokens are targets; of those 80% [MASK], 10% random, 10% kept.

    input_ids, special (B, T) -> (masked input ids, labels with -100 where not a target).
    """
    labels = input_ids.clone()
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels[~chosen] = -100
    masked = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def _mlm_head(model):
    for name in ("cls", "lm_head"):
        if hasattr(model, name):
            return getattr(model, name)
    return None


def masked_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the masked positions only.

    The vocabulary projection is applied to the ~15% of positions that are targets rather than
    to every token, which is most of the cost of a small model's step.
    """
    head = _mlm_head(model)
    if head is None:  # an architecture whose head we do not know: the model's own loss
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels != -100
    if not targets.any():
        return hidden.sum() * 0.0
    logits = head(hidden[targets])
    return torch.nn.functional.cross_entropy(logits.float(), labels[targets])


def pretrain_mlm(config, tokenizer, texts: Sequence[str], *, steps: int = 300, batch_size: int = 32,
                 lr: float = 5e-4, max_length: int = 64, seed: int = 0):
    """Train ``AutoModelForMaskedLM`` from ``config`` on ``texts``; returns the base model (no head).

    Deterministic on CPU for a given seed. Uses AdamW with linear warm-up over 10% of steps.
    """
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / max(1, steps - warmup))
        if step >= warmup else (step + 1) / warmup
    )
    texts = list(texts)
    order: list[int] = []
    with progress.bar(total=steps, desc="pretrain (MLM)", unit="step") as bar:
        for step in range(steps):
            if len(order) < batch_size:
                fresh = list(range(len(texts)))
                rng.shuffle(fresh)
                order += fresh
            batch = [texts[i] for i in order[:batch_size]]
            del order[:batch_size]
            encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True,
                                return_special_tokens_mask=True, return_tensors="pt", return_token_type_ids=False)
            special = encoded.pop("special_tokens_mask").bool() | ~encoded["attention_mask"].bool()
            inputs, labels = mask_tokens(encoded["input_ids"], special, tokenizer, generator)
            loss = masked_lm_loss(model, inputs, encoded["attention_mask"], labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss.item():.2f}")
            bar.update(1)
    log.info("MLM pretraining done: final loss %.3f", loss.item())
    base = model.base_model
    base.eval()
    return base


def as_base_model(config, trained, *, seed: int = 0):
    """The ``AutoModel`` of ``config`` (with the pooler a BERT has) holding ``trained``'s weights.

    MLM models are built without a pooler; it is initialised from ``seed`` so the result is
    reproducible. Any other missing weight is an error.
    """
    from transformers import AutoModel

    from ..errors import LayerscopeError

    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    missing = model.load_state_dict(trained.state_dict(), strict=False).missing_keys
    if any(not key.startswith("pooler.") for key in missing):
        raise LayerscopeError(f"pretrained model is missing weights: {missing[:3]}")
    model.eval()
    return model
