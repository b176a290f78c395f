"""The ``phi-finetune`` command line; :func:`phi_finetune.cli.main.main` is the entry point."""
