"""Training data for the local trainer: read conversations, encode them, batch them by length.

An example is ``(token ids, assistant mask)``: the loss counts assistant tokens only (masks from
the rendered chat format, see :func:`phi_finetune.local._chat.encode_conversation`). Batches
come from length bucketing: examples are sorted by length inside shuffled mega-batches, so a
batch pads to similar lengths and no example ever attends to another (no packing).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import encode_conversation
from phi_finetune.scoring import validate_conversation

__all__ = ["Conversation", "Example", "encode_examples", "length_batches", "load_conversations"]

Conversation = Sequence[Mapping[str, str]]
#: ``(token ids, assistant mask)`` of one conversation.
Example = tuple[list[int], list[bool]]

_MEGABATCH = 32  # batches per sorting window


def load_conversations(
    source: str | os.PathLike[str] | Iterable[Any],
) -> list[list[dict[str, str]]]:
    """Conversations from a JSONL file (ultrachat ``{"messages": [...]}`` records) or objects.

    Items may be ``{"messages": [...]}`` records or message lists. Raises
    :class:`~phi_finetune.errors.LocalBackendError` naming file:line for unreadable records.
    """
    records: list[tuple[str, Any]] = []
    if isinstance(source, str | os.PathLike):
        records = _read_jsonl(Path(source))
    else:
        records = [(f"<records>[{i}]", item) for i, item in enumerate(source)]
    conversations: list[list[dict[str, str]]] = []
    for where, record in records:
        messages = record.get("messages") if isinstance(record, Mapping) else record
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise LocalBackendError(
                f"{where}: expected a {{'messages': [...]}} record or a list of messages"
            )
        conversations.append(
            [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        )
    return conversations


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LocalBackendError(f"cannot read training data {path}: {exc.strerror}") from exc
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except ValueError as exc:
            raise LocalBackendError(
                f"{path}:{number}: not a JSON line; each line must be one "
                '{"messages": [...]} record'
            ) from exc
    return records


def _usable(conversation: Conversation) -> bool:
    problems = [
        p for p in validate_conversation(list(conversation)) if "must end with a user turn" not in p
    ]
    return not problems and any(m.get("role") == "assistant" for m in conversation)


def encode_examples(
    tokenizer: Any, conversations: Sequence[Conversation], max_len: int
) -> tuple[list[Example], int]:
    """Encoded examples and how many conversations were skipped (invalid, or no assistant
    token left within ``max_len``)."""
    examples: list[Example] = []
    skipped = 0
    for conversation in conversations:
        if not _usable(conversation):
            skipped += 1
            continue
        ids, mask = encode_conversation(tokenizer, conversation, max_length=max_len)
        # The first token never gets a loss (nothing predicts it).
        if not any(mask[1:]):
            skipped += 1
            continue
        examples.append((ids, mask))
    return examples, skipped


def length_batches(
    examples: Sequence[Example], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """Index batches of similar length; shuffled mega-batches when ``rng`` is given."""
    order = list(range(len(examples)))
    if rng is None:
        order.sort(key=lambda i: len(examples[i][0]))
        return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    rng.shuffle(order)
    window = batch_size * _MEGABATCH
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i][0]))
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
