"""Model loading for the local trainer: device and dtype, base model and tokenizer, LoRA adapters.

The base model is any causal LM in a local folder (``save_pretrained``) or a Hugging Face Hub
id. Training runs on CUDA with bf16 autocast when available, else on CPU in float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.constants import hf_hub_offline
from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import PHI3_CHAT_TEMPLATE
from phi_finetune.local.parameters import IgnoredParameter

logger = logging.getLogger(__name__)

__all__ = [
    "PHI3_LORA_TARGETS",
    "Hardware",
    "add_lora",
    "enable_gradient_checkpointing",
    "load_model_and_tokenizer",
    "merge_and_save",
    "pick_device",
]

#: LoRA target modules of the Phi-3 architecture (other models get ``"all-linear"``).
PHI3_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def load_model_and_tokenizer(
    model: str | os.PathLike[str], *, device: str = "cpu", dtype: Any = None
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a Hugging Face Hub id.

    Raises :class:`~phi_finetune.errors.LocalBackendError` with an offline hint when the model
    is neither a local folder nor reachable on the Hub.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalBackendError(
            "the local backend needs torch, transformers and peft: "
            "pip install 'phi-finetune[local]'"
        ) from exc
    name = os.fspath(model)
    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and (local.exists() or name.startswith((".", "/", "~"))):
        raise LocalBackendError(
            f"model folder {local} does not exist or is not a folder with config.json; pass a "
            "folder saved with save_pretrained or a Hugging Face Hub id such as "
            "'microsoft/Phi-3-mini-4k-instruct'"
        )
    source = str(local) if is_local else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        loaded: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32)
    except Exception as exc:  # a library boundary: any loading failure becomes one clear error
        raise _load_error(name, local, is_local, exc) from exc
    if getattr(tokenizer, "chat_template", None) is None:
        logger.warning("tokenizer of %s has no chat template; using the Phi-3 chat format", name)
        tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded.to(device)
    return loaded, tokenizer


def _load_error(name: str, local: Path, is_local: bool, exc: Exception) -> LocalBackendError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if is_local:
        return LocalBackendError(
            f"cannot load the model in {local}: {first}. The folder must hold a causal LM "
            "and its tokenizer saved with save_pretrained."
        )
    offline = hf_hub_offline()
    return LocalBackendError(
        f"cannot load model {name!r}: it is not a local folder and the Hugging Face Hub "
        f"could not provide it ({first}). "
        + (
            "HF_HUB_OFFLINE is set, so only the local Hub cache was searched. "
            if offline
            else "If this machine cannot reach huggingface.co, "
        )
        + f"download it where you can (huggingface-cli download {name} --local-dir DIR), "
        "copy DIR here and pass that folder instead; set HF_HUB_OFFLINE=1 to use only "
        "the local cache."
    )


def pick_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when available, else ``"cpu"``; a CUDA request needs CUDA."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LocalBackendError(f"device {device!r} was asked for but CUDA is not available")
    return device


@attrs.frozen
class Hardware:
    """Where training runs and in which precision (see :meth:`choose`)."""

    device: str
    use_bf16: bool = False
    precision: str = "fp32"
    """What is used: ``"bf16"`` or ``"fp32"``."""
    ignored: IgnoredParameter | None = None
    """The ``precision`` parameter when it could not be honoured."""

    @classmethod
    def choose(cls, device: str, precision: str, seed: int) -> Hardware:
        """Resolve the device request and the ``precision`` parameter; seeds CUDA when used.

        bf16 autocast needs CUDA with bf16 support; CPU training always runs in float32.
        """
        import torch

        device = pick_device(device)
        if device.startswith("cuda"):
            torch.cuda.manual_seed_all(seed)
            if precision in ("auto", "16", "fp16", "bf16") and torch.cuda.is_bf16_supported():
                return cls(device, use_bf16=True, precision="bf16")
            return cls(device)
        if precision in ("16", "fp16", "bf16"):
            ignored = IgnoredParameter("precision", precision, "CPU training runs in float32")
            return cls(device, ignored=ignored)
        return cls(device)

    @property
    def dtype(self) -> Any:
        """The torch dtype to load the model weights in."""
        import torch

        return torch.bfloat16 if self.use_bf16 else torch.float32

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when used, else a no-op context."""
        if self.use_bf16:
            import torch

            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def add_lora(
    model: Any, parameters: Mapping[str, Any], target_modules: Sequence[str] | str | None = None
) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (``lora_r``, ``lora_alpha``, ``lora_dropout``).

    ``target_modules`` defaults to the Phi-3 projections for ``model_type == "phi3"`` and to
    ``"all-linear"`` otherwise. Returns the PEFT model in training mode.
    """
    from peft import LoraConfig, get_peft_model

    targets: Any = target_modules
    if targets is None:
        model_type = getattr(model.config, "model_type", "")
        targets = list(PHI3_LORA_TARGETS) if model_type == "phi3" else "all-linear"
    lora = LoraConfig(
        r=int(parameters["lora_r"]),
        lora_alpha=int(parameters["lora_alpha"]),
        lora_dropout=float(parameters["lora_dropout"]),
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    peft_model: Any = get_peft_model(model, lora)
    peft_model.train()
    return peft_model


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer's activations in the backward pass (``gradient_checkpointing``).

    Non-reentrant checkpointing: it works with frozen inputs (LoRA) without
    ``enable_input_require_grads``. Less activation memory for ~one more forward per step.
    """
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def merge_and_save(peft_model: Any, tokenizer: Any, target: Path) -> tuple[Any, Path]:
    """Merge the LoRA adapter into the base model, save it with the tokenizer to ``target``
    (through a temporary folder); returns the merged model in eval mode and ``target``."""
    merged = peft_model.merge_and_unload()
    merged.eval()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)
    return merged, target
