"""Tensors of the local trainer: padded batches and the assistant-token loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phi_finetune.local.examples import Example

__all__ = ["collate", "loss_sum"]


def collate(
    examples: Sequence[Example], batch: Sequence[int], pad_id: int, device: str
) -> tuple[Any, Any]:
    """``(ids, labels)`` of a batch, right-padded to its longest example (no mask needed:
    see :func:`loss_sum`)."""
    import torch

    width = max(len(examples[i][0]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, index in enumerate(batch):
        tokens, mask = examples[index]
        n = len(tokens)
        ids[row, :n] = torch.tensor(tokens, dtype=torch.long)
        labels[row, :n] = torch.where(
            torch.tensor(mask), torch.tensor(tokens, dtype=torch.long), torch.tensor(-100)
        )
    return ids.to(device), labels.to(device)


def loss_sum(model: Any, ids: Any, labels: Any) -> tuple[Any, int]:
    """Summed next-token loss over assistant tokens, and how many there were.

    The LM head runs only on the positions that predict an assistant token (not on the
    prompt or padding): with real vocabularies (32k+) that is most of the step's compute
    and memory. Models without a separable decoder / LM head get the full logits.

    No padding mask is passed: batches are right-padded (:func:`collate`), so under the
    causal mask no real token attends to a pad, position ids are ``0..n-1`` either way and
    pad positions carry no label. The mask would change nothing that is scored; without it
    attention runs the plain causal kernel instead of building a (batch, 1, n, n) mask.
    """
    import torch

    shift_labels = labels[:, 1:]
    wanted = shift_labels != -100
    count = int(wanted.sum().item())
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(causal_lm, "model", None)
    head = causal_lm.get_output_embeddings() if decoder is not None else None
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=ids).last_hidden_state
        picked = hidden[:, :-1, :][wanted]
        logits = head(picked).float()
        loss = torch.nn.functional.cross_entropy(logits, shift_labels[wanted], reduction="sum")
        return loss, count
    full = model(input_ids=ids).logits[:, :-1, :].float()
    loss = torch.nn.functional.cross_entropy(
        full.reshape(-1, full.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return loss, count
