"""How the vLLM engine's processes are laid out from its settings (no vLLM needed)."""
from __future__ import annotations

from rlhf.rollout.vllm_engine import VLLMSettings, executor_backend


def test_one_rank_with_the_engine_core_in_process_runs_its_worker_in_process_too():
    assert executor_backend(VLLMSettings(tensor_parallel_size=1, engine_core_in_process=True)) == "uni"


def test_one_rank_with_a_separate_engine_core_leaves_the_choice_to_vllm():
    assert executor_backend(VLLMSettings(tensor_parallel_size=1, engine_core_in_process=False)) is None


def test_tensor_parallel_ranks_are_processes_in_the_actors_bundle_either_way():
    for in_process in (True, False):
        assert executor_backend(VLLMSettings(tensor_parallel_size=2, engine_core_in_process=in_process)) == "mp"
