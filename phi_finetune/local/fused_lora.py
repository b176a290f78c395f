"""One autograd node per LoRA projection while the local trainer trains.

peft computes an adapted projection as ``base(x) + lora_B(lora_A(dropout(x))) * scaling``:
five autograd nodes, and a scaling multiply plus an add over the full ``(tokens, out)``
output in the forward pass and again in the backward pass. :func:`fused_lora` swaps the
forward of every plain peft ``Linear`` for one :class:`torch.autograd.Function` that folds
the scaling and the add into the matmuls (``addmm``); the same arithmetic, so the same
losses and gradients up to float rounding order (tested against peft's own forward).

The fused forward serves only the case it is written for, and hands every other call back to
peft's own forward: a single active vanilla adapter (no DoRA or other variant), adapters
enabled and not merged, no per-call ``adapter_names``, a ``torch.nn.Linear`` base layer that
is frozen, and no autocast (the local trainer's bf16 path on CUDA keeps peft's forward).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["fused_lora"]


class _LoraLinear(torch.autograd.Function):
    """``x @ W.T (+ bias) + scaling * (dropped @ A.T) @ B.T`` with a frozen ``W``.

    ``dropped`` is ``dropout(x)``, or ``None`` when the adapter has no dropout (then ``x``
    feeds both paths and its gradient is one ``addmm``).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        dropped: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        into_a = flat if dropped is None else dropped.reshape(-1, dropped.shape[-1])
        down = into_a @ lora_a.t()
        base = flat @ weight.t() if bias is None else torch.addmm(bias, flat, weight.t())
        out = base.addmm_(down, lora_b.t(), alpha=scaling)  # in place: no copy of base
        ctx.save_for_backward(into_a, weight, lora_a, lora_b, down)
        ctx.scaling = scaling
        ctx.dropped = dropped is not None
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        into_a, weight, lora_a, lora_b, down = ctx.saved_tensors
        scaling = ctx.scaling
        shape = (*grad.shape[:-1], weight.shape[1])
        g = grad.reshape(-1, grad.shape[-1])
        g_down = (g @ lora_b).mul_(scaling)
        grad_a = g_down.t() @ into_a if ctx.needs_input_grad[4] else None
        grad_b = (g.t() @ down).mul_(scaling) if ctx.needs_input_grad[5] else None
        grad_x = grad_dropped = None
        if ctx.dropped:
            if ctx.needs_input_grad[0]:
                grad_x = (g @ weight).view(shape)
            if ctx.needs_input_grad[1]:
                grad_dropped = (g_down @ lora_a).view(shape)
        elif ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(g_down, lora_a).view(shape)
        return grad_x, grad_dropped, None, None, grad_a, grad_b, None


def _fusable(module: Any, lora_linear: type[Any]) -> bool:
    """Whether ``module`` is a peft LoRA ``Linear`` over a frozen ``torch.nn.Linear``."""
    if not isinstance(module, lora_linear) or getattr(module, "fan_in_fan_out", False):
        return False
    base = module.base_layer
    if type(base) is not torch.nn.Linear or base.weight.requires_grad:
        return False
    return base.bias is None or not base.bias.requires_grad


def _fused_forward(module: Any) -> Any:
    peft_forward = type(module).forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active = module.active_adapters
        if (
            args
            or kwargs
            or len(active) != 1
            or module.disable_adapters
            or module.merged
            or active[0] not in module.lora_A
            or active[0] in module.lora_variant
            or torch.is_autocast_enabled(x.device.type)
            or x.dtype != module.lora_A[active[0]].weight.dtype
        ):
            return peft_forward(module, x, *args, **kwargs)  # type: ignore[no-any-return]
        name = active[0]
        dropout = module.lora_dropout[name]
        dropped = None if isinstance(dropout, torch.nn.Identity) else dropout(x)
        base = module.base_layer
        result: torch.Tensor = _LoraLinear.apply(  # type: ignore[no-untyped-call]
            x,
            dropped,
            base.weight,
            base.bias,
            module.lora_A[name].weight,
            module.lora_B[name].weight,
            float(module.scaling[name]),
        )
        return result

    return forward


@contextlib.contextmanager
def fused_lora(model: Any) -> Iterator[int]:
    """Within the block, ``model``'s plain LoRA projections run fused; yields how many.

    Restores peft's forward on exit, also when the block raises.
    """
    from peft.tuners.lora import Linear

    modules = [m for m in model.modules() if _fusable(m, Linear)]
    for module in modules:
        module.forward = _fused_forward(module)
    try:
        yield len(modules)
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
