"""Checks of the fine-tuning parameters against the model, as the fine-tune component makes them.

The rules come from the component's own code (azureml-assets
``assets/training/finetune_acft_hf_nlp/src/finetune/finetune.py``,
``check_for_invalid_ds_zero3_settings``) and its documentation of ``max_seq_length``
(``components/pipeline_components/chat_completion/README.md``):

- DeepSpeed stage 3 fails the run for Phi-1.5 / Phi-2 (model type ``mixformer-sequential``),
  and with LoRA for model types outside the component's list (Llama, Falcon, Mistral, Mixtral,
  Phi long-rope, Phi-3, Llama 4); stage 3 with ORT is refused by the parameter rules already.
- ``max_seq_length`` pads or truncates to that length; beyond the model's context window the
  positions do not exist, so a larger value is refused here before any GPU is billed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phi_finetune.errors import ParameterError, ParameterProblem

if TYPE_CHECKING:
    from phi_finetune.azure.foundation_model import FoundationModel
    from phi_finetune.parameters import FineTuneParameters

__all__ = ["check_model_parameters", "model_parameter_problems", "model_parameter_warnings"]

#: Name fragments of models whose Hugging Face type is ``mixformer-sequential``.
_MIXFORMER = ("phi-1_5", "phi-1-5", "phi-1.5", "phi-2")
#: Name fragments of the families whose types the component accepts for stage 3 with LoRA.
_STAGE3_LORA_FAMILIES = ("llama", "falcon", "mistral", "mixtral", "phi-3", "phi-4")


def model_parameter_problems(
    model: FoundationModel, params: FineTuneParameters
) -> list[ParameterProblem]:
    """Every rule above that ``params`` break for ``model``."""
    problems: list[ParameterProblem] = []
    name = f"{model.name} {model.id}".lower()
    stage3 = params.get("apply_deepspeed") == "true" and str(params.get("deepspeed_stage")) == "3"
    if stage3 and any(fragment in name for fragment in _MIXFORMER):
        problems.append(
            ParameterProblem(
                "deepspeed_stage",
                "3",
                f"the fine-tune component fails DeepSpeed stage 3 runs for {model.name} "
                "(model type mixformer-sequential)",
                "'2', or apply_deepspeed='false'",
            )
        )
    seq = params.get("max_seq_length")
    context = model.context_length
    if context is not None and isinstance(seq, int) and seq > context:
        problems.append(
            ParameterProblem(
                "max_seq_length",
                seq,
                f"is longer than {model.name}'s context window of {context} tokens",
                f"-1 (the model's own maximum) or 1..{context}",
            )
        )
    return problems


def model_parameter_warnings(model: FoundationModel, params: FineTuneParameters) -> list[str]:
    """What may fail or surprise but cannot be decided offline."""
    warnings: list[str] = []
    name = f"{model.name} {model.id}".lower()
    stage3 = params.get("apply_deepspeed") == "true" and str(params.get("deepspeed_stage")) == "3"
    if (
        stage3
        and params.get("apply_lora") == "true"
        and model.source == "huggingface"
        and not any(family in name for family in _STAGE3_LORA_FAMILIES)
    ):
        warnings.append(
            "the fine-tune component accepts DeepSpeed stage 3 with LoRA only for Llama, "
            f"Falcon, Mistral, Mixtral, Phi-3/Phi-4 and Llama 4 model types; {model.name} may "
            "be refused (set deepspeed_stage = '2' to be safe)"
        )
    own = model.model_specific_defaults.get("deepspeed_stage")
    chosen = params.values.get("deepspeed_stage")
    if own is not None and chosen is not None and str(chosen.value) != str(own):
        warnings.append(
            f"deepspeed_stage {chosen.value} ({chosen.source}) overrides {model.name}'s own "
            f"default of {own}"
        )
    return warnings


def check_model_parameters(model: FoundationModel, params: FineTuneParameters) -> list[str]:
    """Raise :class:`ParameterError` listing every problem of :func:`model_parameter_problems`;
    return :func:`model_parameter_warnings`."""
    problems = model_parameter_problems(model, params)
    if problems:
        raise ParameterError(
            f"{len(problems)} fine-tuning parameter problem(s) for model {model.name}:",
            problems=problems,
        )
    return model_parameter_warnings(model, params)
