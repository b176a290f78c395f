"""The fused LoRA projection: same outputs and gradients as peft's forward, peft's forward
wherever the fused one does not apply, and the same training run end to end."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

from phi_finetune.local import fused_lora as fused_module
from phi_finetune.local.fused_lora import fused_lora


class TwoLayers(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.up = torch.nn.Linear(12, 20, bias=bias)
        self.down = torch.nn.Linear(20, 12, bias=bias)

    def forward(self, x: Any) -> Any:
        return self.down(torch.nn.functional.silu(self.up(x)))


def lora_model(*, bias: bool = False, dropout: float = 0.0, r: int = 4, alpha: int = 7) -> Any:
    """A peft model whose adapters are not zero (B starts at zero in peft: randomize it)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["up", "down"])
    model = get_peft_model(TwoLayers(bias), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    return model


def run(model: Any, x: Any, seed: int = 3) -> tuple[Any, dict[str, Any], Any]:
    """Output, gradients of the trainable weights and of the input, for one backward."""
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout masks on both sides
    out = model(x)
    (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, x.grad


@pytest.mark.parametrize(
    ("bias", "dropout"), [(False, 0.0), (True, 0.0), (False, 0.3), (True, 0.3)]
)
def test_fused_matches_peft_outputs_and_gradients(bias: bool, dropout: float) -> None:
    reference = lora_model(bias=bias, dropout=dropout)
    model = copy.deepcopy(reference)
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(1))
    expected = run(reference, x)
    with fused_lora(model) as count:
        assert count == 2
        probe = model(x.clone().requires_grad_(True))
        assert type(probe.grad_fn).__name__ == "_LoraLinearBackward"
        got = run(model, x)
    assert got[1].keys() == expected[1].keys() and len(got[1]) == 4  # A and B of two layers
    pairs = [(got[0], expected[0]), (got[2], expected[2])]
    pairs += [(got[1][name], grad) for name, grad in expected[1].items()]
    for actual, wanted in pairs:
        # Float rounding only: the sums run in another order (addmm).
        scale = float(wanted.abs().max())
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6 * scale)


def test_peft_forward_wherever_fused_does_not_apply() -> None:
    model = lora_model()
    x = torch.randn(2, 3, 12)
    plain = copy.deepcopy(model)
    with fused_lora(model):
        with model.disable_adapter():
            off = model(x)
        with plain.disable_adapter():
            torch.testing.assert_close(off, plain(x))
        assert type(off.grad_fn).__name__ != "_LoraLinearBackward"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)
        assert type(autocast.grad_fn).__name__ != "_LoraLinearBackward"
        model.merge_adapter()
        plain.merge_adapter()
        merged = model(x)
        assert type(merged.grad_fn).__name__ != "_LoraLinearBackward"
        torch.testing.assert_close(merged, plain(x))


def test_trainable_base_layer_keeps_peft_forward_and_gets_its_gradient() -> None:
    model = lora_model()
    model.base_model.model.up.base_layer.weight.requires_grad_(True)
    with fused_lora(model) as count:
        assert count == 1
        model(torch.randn(2, 12)).sum().backward()
    assert model.base_model.model.up.base_layer.weight.grad is not None


def test_forward_restored_on_exit_and_on_error() -> None:
    model = lora_model()
    layers = [model.base_model.model.up, model.base_model.model.down]
    with pytest.raises(RuntimeError, match="boom"), fused_lora(model):
        assert all("forward" in m.__dict__ for m in layers)
        raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in layers)
    assert type(model(torch.randn(1, 12)).grad_fn).__name__ != "_LoraLinearBackward"


def test_no_input_gradient_when_the_input_needs_none() -> None:
    # The first projection of a frozen model sees an input without grad: no (tokens, in)
    # gradient is computed for it, only the adapters'.
    model = lora_model()
    with fused_lora(model):
        out = model(torch.randn(4, 12))
        out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n), (
        "every adapter weight got a gradient"
    )


@pytest.mark.slow
def test_training_run_is_the_same_with_and_without_fusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.local.tiny_model import build_tiny_model
    from phi_finetune.local.training import LocalTrainer

    records = [
        {
            "messages": [
                {"role": "user", "content": f"count to {n} please"},
                {"role": "assistant", "content": " ".join(str(i) for i in range(n))},
            ]
        }
        for n in range(2, 26)
    ]
    tiny = build_tiny_model(tmp_path / "model", texts=records, seed=0)
    params = {
        "learning_rate": "0.01",
        "per_device_train_batch_size": "4",
        "lora_r": "8",
        "lora_alpha": "12",
        "lora_dropout": "0.1",
        "seed": "5",
        "max_steps": "6",
        "merge_lora_weights": "false",
    }
    calls: list[int] = []

    @contextlib.contextmanager
    def counting(model: Any) -> Iterator[int]:
        with fused_lora(model) as count:
            calls.append(count)
            yield count

    monkeypatch.setattr(fused_module, "fused_lora", counting)
    fused = LocalTrainer(tiny, output_dir=tmp_path / "a", parameters=params, device="cpu").train(
        records, validation=records[:4]
    )
    assert calls and calls[0] > 0, "the trainer trained through the fused projections"

    @contextlib.contextmanager
    def unfused(model: Any) -> Iterator[int]:
        yield 0

    monkeypatch.setattr(fused_module, "fused_lora", unfused)
    plain = LocalTrainer(tiny, output_dir=tmp_path / "b", parameters=params, device="cpu").train(
        records, validation=records[:4]
    )
    assert len(fused.history) == len(plain.history) == 6
    for a, b in zip(fused.history, plain.history, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
    assert fused.eval_loss == pytest.approx(plain.eval_loss, rel=1e-5)
