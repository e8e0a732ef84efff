"""kubetune's trainer: turns one FineTuneJob spec into a LoRA/QLoRA adapter on the output volume.

Entry point: `python -m kubetune_trainer --spec <spec.json> --output <dir>` (see `cli.py`).
"""
