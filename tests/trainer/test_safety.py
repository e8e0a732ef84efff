"""The output lock, complete-only checkpoints, atomic adapter publishing, and the documented exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubetune.api.runtime import ADAPTER_DIR, LOCK_FILE, MANIFEST_FILE, TrainerExit
from kubetune_trainer.checkpoints import (
    COMPLETE_MARKER,
    mark_complete,
    newest_complete_checkpoint,
    remove_foreign_checkpoints,
    remove_incomplete_checkpoints,
)
from kubetune_trainer.errors import OutputLockedError, exit_code_for
from kubetune_trainer.output_lock import OutputLock
from kubetune_trainer.outputs import partial_adapter_dir, publish_adapter

from tests.trainer.helpers import base_spec, run_in_process, write_spec


def test_a_second_trainer_on_the_same_output_is_refused(tmp_path: Path):
    with OutputLock(tmp_path), pytest.raises(OutputLockedError, match=r"in use by another trainer \(\{\"pid\""):
        OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path):
        pass  # released on exit: a later trainer gets it


def test_the_lock_dies_with_a_killed_trainer(tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f,fcntl.LOCK_EX); "
            "print('locked',flush=True); time.sleep(60)",
            str(tmp_path / LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputLockedError):
        OutputLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    OutputLock(tmp_path).acquire().release()


def test_cli_exits_67_when_the_output_is_locked(pvc_root: Path, tmp_path: Path):
    output = tmp_path / "output"
    with OutputLock(output):
        assert run_in_process(write_spec(tmp_path, base_spec()), output, pvc_root) == TrainerExit.OUTPUT_LOCKED
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["exitReason"] == "OutputLocked" and summary["exitCode"] == 67


def make_checkpoint(folder: Path, step: int, complete: bool, identity: dict[str, str] | None = None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        mark_complete(path, identity)
    return path


def test_a_checkpoint_of_another_spec_or_other_data_is_never_resumed(tmp_path: Path):
    mine = {"specHash": "sha256:new", "datasetFingerprint": "data-1"}
    own = make_checkpoint(tmp_path, 10, complete=True, identity=mine)
    other_spec = make_checkpoint(tmp_path, 20, complete=True, identity={**mine, "specHash": "sha256:old"})
    other_data = make_checkpoint(tmp_path, 30, complete=True, identity={**mine, "datasetFingerprint": "data-0"})
    legacy = tmp_path / "checkpoint-40"  # marked by a trainer that recorded no identity
    legacy.mkdir()
    (legacy / COMPLETE_MARKER).write_text("complete\n")
    assert newest_complete_checkpoint(tmp_path, mine) == own
    assert remove_foreign_checkpoints(tmp_path, mine) == [other_spec, other_data, legacy]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]


def test_only_complete_checkpoints_are_resumed_and_partial_ones_removed(tmp_path: Path):
    make_checkpoint(tmp_path, 10, complete=True)
    newest = make_checkpoint(tmp_path, 20, complete=True)
    partial = make_checkpoint(tmp_path, 30, complete=False)
    (tmp_path / "checkpoint-x").mkdir()
    assert newest_complete_checkpoint(tmp_path) == newest, "checkpoint-30 was killed mid-save"
    assert remove_incomplete_checkpoints(tmp_path) == [partial]
    assert not partial.exists() and (newest / COMPLETE_MARKER).is_file()
    assert newest_complete_checkpoint(tmp_path / "missing") is None


def test_an_incomplete_adapter_is_never_published(tmp_path: Path):
    partial = partial_adapter_dir(tmp_path)
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{}")
    with pytest.raises(RuntimeError, match=r"kubetune\.json is missing"):
        publish_adapter(tmp_path)
    assert not (tmp_path / ADAPTER_DIR).exists()


def test_publishing_replaces_an_older_adapter_whole(tmp_path: Path):
    old = tmp_path / ADAPTER_DIR
    old.mkdir()
    (old / "stale.txt").write_text("old")
    partial = partial_adapter_dir(tmp_path)
    partial.mkdir()
    for name in ("adapter_config.json", MANIFEST_FILE):
        (partial / name).write_text("{}")
    assert publish_adapter(tmp_path) == old
    assert sorted(p.name for p in old.iterdir()) == ["adapter_config.json", MANIFEST_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ADAPTER_DIR]


def test_exit_codes_are_distinct_and_out_of_memory_is_recognised():
    import torch

    assert len({int(code) for code in TrainerExit}) == len(TrainerExit)
    assert exit_code_for(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) == 66
    assert exit_code_for(MemoryError()) == 66
    assert exit_code_for(RuntimeError("boom")) == 1


@pytest.mark.parametrize(
    ("spec_change", "data", "code", "message"),
    [
        ({"training": {"learningRate": 5}}, None, 64, "spec.training.learningRate"),
        ({"baseModel": {"pvc": {"claimName": "models", "path": "nope"}}}, None, 65, "no model at"),
        (
            {"baseModel": {"name": "nobody/no-such-model"}},
            None,
            65,
            "cannot load the tokenizer from 'nobody/no-such-model'",
        ),
        ({}, [{"instruction": "q", "output": "a"}, {"instruction": "q"}], 64, "row 2 does not fit format alpaca"),
        ({}, [], 64, "is empty"),
        (
            {"dataset": {"pvc": {"claimName": "data", "path": "x.jsonl"}, "format": "qa"}},
            [{"instruction": "q", "output": "a"}],
            64,
            "column(s) ['question', 'answer'] missing",
        ),
    ],
)
def test_failures_exit_with_their_code_and_say_why(pvc_root, tmp_path, spec_change, data, code, message):
    if data is not None:
        (pvc_root / "data" / "x.jsonl").write_text("".join(json.dumps(row) + "\n" for row in data))
        spec_change = {"dataset": {"pvc": {"claimName": "data", "path": "x.jsonl"}}, **spec_change}
    spec = base_spec(**spec_change)
    assert run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root) == code
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["exitCode"] == code and message in summary["message"]
    assert not (tmp_path / "output" / ADAPTER_DIR).exists()


def test_the_adapter_store_gets_a_whole_copy_once(tmp_path: Path, monkeypatch):
    from kubetune.api.runtime import ENV_ADAPTER_STORE
    from kubetune_trainer.outputs import publish_to_store

    adapter = tmp_path / "run" / ADAPTER_DIR
    adapter.mkdir(parents=True)
    for name, text in (("adapter_config.json", "{}"), (MANIFEST_FILE, '{"specHash": "a"}')):
        (adapter / name).write_text(text)
    assert publish_to_store(adapter) is None  # no store configured: nothing copied
    store = tmp_path / "store" / "adapters" / "job" / "uid-1"
    monkeypatch.setenv(ENV_ADAPTER_STORE, str(store))
    stale = store.with_name(f".{store.name}.partial")  # a copy cut short by a killed pod
    stale.mkdir(parents=True)
    assert publish_to_store(adapter) == store
    assert sorted(p.name for p in store.iterdir()) == ["adapter_config.json", MANIFEST_FILE]
    assert not stale.exists()
    (store / "adapter_config.json").write_text('{"kept": true}')
    publish_to_store(adapter)  # the same adapter again (a retried pod): the copy there is kept as it is
    assert (store / "adapter_config.json").read_text() == '{"kept": true}'
