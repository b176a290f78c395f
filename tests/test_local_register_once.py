"""Local register is idempotent: a register step killed after registering, then resumed,
leaves one model version made from that training output."""

from __future__ import annotations

from typing import Any

import pytest

from phi_finetune import FineTuneSession
from phi_finetune.local.registry import SOURCE_TAG, LocalRegistry

pytestmark = pytest.mark.slow


def _versions(session: FineTuneSession, name: str) -> list[Any]:
    registry = LocalRegistry(session.config.state_dir)
    return list(registry.client.search_model_versions(f"name='{name}'"))


def test_a_register_killed_after_registering_reuses_the_version_on_resume(
    trained_run_copy: FineTuneSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = trained_run_copy
    real_label = LocalRegistry._label

    def killed(self: LocalRegistry, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # the process dies right after mlflow.register_model

    monkeypatch.setattr(LocalRegistry, "_label", killed)
    with pytest.raises(KeyboardInterrupt):
        session.register()
    assert session.journal.get_step("register").status == "failed"  # type: ignore[union-attr]
    monkeypatch.setattr(LocalRegistry, "_label", real_label)

    resumed = FineTuneSession.resume(session.run_id, state_dir=session.config.state_dir)
    model = resumed.register()
    versions = _versions(resumed, model.name)
    assert [str(v.version) for v in versions] == [model.version]
    assert versions[0].tags[SOURCE_TAG].endswith(f"run={versions[0].run_id}")
    # The alias the resumed step sets points at that one version.
    registry = LocalRegistry(resumed.config.state_dir)
    alias = resumed.config.local.registered_model_alias
    assert alias and registry.get(model.name, alias=alias).version == model.version


def test_registering_the_same_folder_again_on_purpose_makes_a_new_version(
    trained_run_copy: FineTuneSession,
) -> None:
    session = trained_run_copy
    model = session.register()
    trained = session.journal.record_of("fine_tune").training
    registry = LocalRegistry(session.config.state_dir)
    again = registry.log_model(trained.merged_dir, name=model.name, alias=None, reuse=False)
    assert int(again.version) == int(model.version) + 1
    same = registry.log_model(trained.merged_dir, name=model.name, alias=None)
    assert same.version == again.version  # the newest version from that folder
