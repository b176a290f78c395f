"""The Azure ML backend: everything that talks to an Azure ML workspace or registry.

- :mod:`.workspace`: the workspace and registry clients; :mod:`.compute`: cluster choice and
  quota; :mod:`.foundation_model`: the base model in the registry;
- :mod:`.job`: plan, pipeline and handle of the fine-tuning job; :mod:`.registrar`: model
  registration; :mod:`.deployer`: online endpoints, with :mod:`.deployment_spec` (the settings)
  and :mod:`.deployment_handle` (a deployment in progress); :mod:`.data_assets`: data assets;
- :mod:`.backend`: the steps of :class:`~phi_finetune.session.FineTuneSession` on Azure;
- :mod:`.boundary`: the one place azure-core exceptions become the library's errors.

Nothing is imported here: ``import phi_finetune.azure`` stays cheap.
"""
