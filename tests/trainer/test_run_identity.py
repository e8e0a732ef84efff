"""Which checkpoints a run may resume: its identity hash changes with what shapes training, never with suspend,
placement, or an operator upgrade that adds a field at its neutral default."""

from __future__ import annotations

from kubetune.api import FineTuneJobSpec
from kubetune_trainer.manifest import checkpoint_spec_hash

from tests.trainer.helpers import base_spec


def _hash(**overrides) -> str:
    return checkpoint_spec_hash(FineTuneJobSpec.model_validate(base_spec(**overrides)))


def test_suspend_and_placement_keep_the_checkpoints():
    plain = _hash()
    assert _hash(suspend=True) == plain, "a job suspended and resumed finds its checkpoints"
    assert _hash(queueName="gpu-queue") == plain
    assert _hash(tracking={"tensorboard": False}) == plain


def test_fields_at_their_neutral_default_are_left_out():
    """An upgrade that adds a field at the default that trains as before keeps a running job's checkpoints."""
    spec = FineTuneJobSpec.model_validate(base_spec())
    assert checkpoint_spec_hash(spec) == spec.fingerprint()


def test_what_shapes_training_changes_the_identity():
    assert _hash(training={"learningRate": 1e-3}) != _hash()
    assert _hash(lora={"r": 4}) != _hash()
