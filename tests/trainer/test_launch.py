"""The trainer container's entry (kubetune_trainer.launch): torchrun for several processes or nodes, the trainer
itself otherwise, and a failed rank's exit code kept for the Job's podFailurePolicy."""

from __future__ import annotations

import pytest
from kubetune.api.runtime import ENV_MASTER_ADDR, ENV_NODE_RANK, ENV_NODES, ENV_PROCS_PER_NODE, TrainerExit
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.launch import failed_exit_code, torchrun_arguments

TRAINER = ["--spec", "/etc/kubetune/spec.json", "--output", "/out"]


def test_one_process_is_the_trainer_itself():
    assert torchrun_arguments({}, TRAINER) is None
    assert torchrun_arguments({ENV_NODES: "1", ENV_PROCS_PER_NODE: "1"}, TRAINER) is None


def test_one_node_several_gpus_runs_standalone_torchrun():
    launch = torchrun_arguments({ENV_PROCS_PER_NODE: "4"}, TRAINER)
    assert launch == [
        "--nproc-per-node",
        "4",
        "--max-restarts",
        "0",
        "--standalone",
        "-m",
        "kubetune_trainer",
        *TRAINER,
    ]


def test_several_nodes_meet_at_node_zero_with_the_completion_index_as_rank():
    env = {ENV_NODES: "2", ENV_PROCS_PER_NODE: "8", ENV_NODE_RANK: "1", ENV_MASTER_ADDR: "facts-train-0.facts-nodes"}
    launch = torchrun_arguments(env, TRAINER)
    assert launch[launch.index("--nnodes") + 1] == "2" and launch[launch.index("--node-rank") + 1] == "1"
    assert launch[launch.index("--master-addr") + 1] == "facts-train-0.facts-nodes"
    assert launch[launch.index("--master-port") + 1] == "29500"
    assert launch[-len(TRAINER) - 2 :] == ["-m", "kubetune_trainer", *TRAINER]


def test_several_nodes_without_rank_or_master_is_invalid_input():
    with pytest.raises(InvalidInputError, match="JOB_COMPLETION_INDEX, KUBETUNE_MASTER_ADDR"):
        torchrun_arguments({ENV_NODES: "2"}, TRAINER)


class Failure:
    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode


def test_the_lowest_failed_rank_s_exit_code_is_the_container_s():
    assert failed_exit_code({1: Failure(66), 0: Failure(64)}) == 64
    assert failed_exit_code({0: Failure(-9), 1: Failure(66)}) == 66  # rank 0 was killed by a signal
    assert failed_exit_code({0: Failure(-9)}) == TrainerExit.ERROR
