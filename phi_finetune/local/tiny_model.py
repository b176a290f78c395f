"""A tiny Phi-3-architecture **test** model, built offline in well under a second.

This is not a real language model: its weights are random and it has ~0.4M parameters. It
exists so the local backend (training, registry, endpoint) can be exercised end to end on a
laptop CPU, in tests and in the demo, without downloading anything. Its replies are gibberish
until trained; after the demo's ~200 LoRA steps they are strings of words from the demo data.

What it has in common with Phi-3-mini: the ``Phi3ForCausalLM`` architecture (so the Phi-3 LoRA
target modules ``qkv_proj``, ``o_proj``, ``gate_up_proj``, ``down_proj`` apply unchanged), the
Phi-3 special tokens (``<|user|>``, ``<|assistant|>``, ``<|system|>``, ``<|end|>``,
``<|endoftext|>``) and the Phi-3 chat format. The tokenizer is a byte-level BPE trained on the
given texts (or a small built-in corpus), wrapped as a transformers fast tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi_finetune._atomic import atomic_write_text
from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import PHI3_CHAT_TEMPLATE, PHI3_SPECIAL_TOKENS

logger = logging.getLogger(__name__)

__all__ = ["TEST_MODEL_MARKER", "TEST_MODEL_TYPE", "build_tiny_model", "is_test_model"]

#: Key set to ``true`` in the config.json of every model built here.
TEST_MODEL_MARKER = "phi_finetune_test_model"

#: The transformers ``model_type`` of the models built here (``Phi3Config``).
TEST_MODEL_TYPE = "phi3"

_BUILTIN_TEXTS = (
    "Hello! How can I help you today?",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The sea is wide, the sea is deep, it sings the sailors "
    "off to sleep.",
    "Explain what machine learning is. Machine learning is a way for computers to learn "
    "patterns from data instead of following hand-written rules.",
    "Give me three tips for better sleep: keep a regular schedule, avoid screens before bed, "
    "and keep your room cool and dark.",
    "Translate 'good morning' into Spanish. 'Good morning' in Spanish is 'buenos días'.",
    "Summarize the plot of a story in one sentence, please.",
    "Thank you, that was helpful. You're welcome! Let me know if you have other questions.",
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. 0123456789",
)

_MODEL_CARD = """# phi_finetune tiny TEST model

**This is a test model, not a real language model.** It has the Phi-3 architecture
(`Phi3ForCausalLM`), hidden size {hidden}, {layers} layers, {heads} heads, a {vocab}-token
byte-level BPE vocabulary and RANDOM weights. It was built offline by
`phi_finetune.local.build_tiny_model(seed={seed})` to exercise the local backend (LoRA training,
MLflow registry, scoring endpoint) in tests and demos. Its replies are meaningless.
"""


def _texts_from(texts: Iterable[Any] | None) -> list[str]:
    """Plain strings from strings, message dicts or ``{"messages": [...]}`` records."""
    if texts is None:
        return list(_BUILTIN_TEXTS)
    out: list[str] = []
    for item in texts:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping):
            if "messages" in item:
                out.extend(_texts_from(item["messages"]))
            elif "content" in item:
                out.append(str(item["content"]))
        elif isinstance(item, Sequence):
            out.extend(_texts_from(item))
    return out or list(_BUILTIN_TEXTS)


def build_tokenizer(texts: Iterable[Any] | None = None, *, vocab_size: int = 512) -> Any:
    """A byte-level BPE fast tokenizer with the Phi-3 special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = _texts_from(texts)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(PHI3_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer=trainer)
    tokenizer: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=1024,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]}
    )
    tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    *,
    texts: Iterable[Any] | None = None,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 2048,
    max_position_embeddings: int = 1024,
    initializer_range: float = 0.2,
) -> Path:
    """Build the tiny Phi-3-architecture TEST model and its tokenizer into ``out_dir``.

    ``texts`` (strings, messages or ``{"messages": [...]}`` records) train the BPE vocabulary;
    by default a small built-in corpus is used. The same ``seed`` and texts give the same
    weights and vocabulary. ``initializer_range`` is the weights' standard deviation: with
    Phi-3's 0.02 the frozen LM head of so small a model caps the logits near +-1.3, so LoRA
    could not lower the loss much below uniform; 0.2 lets the demo visibly learn. Returns the
    folder, loadable with
    ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    try:
        import torch
        from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalBackendError(
            "the local backend needs torch and transformers: pip install 'phi-finetune[local]'"
        ) from exc

    target = Path(out_dir)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    vocab = tokenizer.get_vocab()
    eos_id = vocab["<|endoftext|>"]
    end_id = vocab["<|end|>"]
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        original_max_position_embeddings=max_position_embeddings,
        pad_token_id=eos_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    setattr(config, TEST_MODEL_MARKER, True)
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=[end_id, eos_id], pad_token_id=eos_id, bos_token_id=eos_id
    )
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    atomic_write_text(
        target / "README.md",
        _MODEL_CARD.format(
            hidden=hidden_size, layers=num_layers, heads=num_heads, vocab=len(tokenizer), seed=seed
        ),
    )
    logger.info("built the tiny Phi-3 TEST model in %s", target)
    return target


def is_test_model(model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir`` holds a model built by :func:`build_tiny_model`."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get(TEST_MODEL_MARKER, False))
