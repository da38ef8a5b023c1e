"""Runs one vLLM engine on a checkpoint and writes what it generated as JSON (a script, not a test module).

The tests start it in a fresh interpreter per engine: vLLM sets process-wide state (its distributed group,
the CPU thread binding) that a second engine in the same process would trip over.

Usage: ``python engine_run.py SPEC.json OUT.json`` where SPEC holds ``model`` (checkpoint folder),
``prompts`` (lists of token ids), ``max_tokens``, ``max_num_batched_tokens`` (None: vLLM's default),
``calls`` (how many times the same prompts are generated, in reversed order on every other call, so
that later calls reuse state slots), ``prompt_logprobs`` (teacher-forced log-probabilities of the
prompt tokens), ``multiprocess`` (vLLM's engine-core process) and ``drop_state`` (the negative control:
the GLA layers forget the carried state, every step starting from zero).
"""

from __future__ import annotations

import json
import os
import sys


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path, encoding="utf-8").read())
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if spec.get("multiprocess") else "0"
    if spec.get("drop_state"):
        # Negative control: every request starts every step from a zero GLA state.
        import torch

        from sb_adapters.vllm.mixer import SpikingBrainGLA

        stored_states = SpikingBrainGLA.initial_states

        def forget(self, slots, has_context):
            return torch.zeros_like(stored_states(self, slots, has_context))

        SpikingBrainGLA.initial_states = forget
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    kwargs = dict(
        model=spec["model"], dtype="float32", enforce_eager=True, skip_tokenizer_init=True, seed=0,
        max_model_len=spec.get("max_model_len", 128), max_num_seqs=spec.get("max_num_seqs", 8),
        enable_prefix_caching=False,
        # On the CPU this is the share of host memory vLLM reserves (weights, activations, KV cache): a tiny
        # model needs little, and the machine is shared.
        gpu_memory_utilization=spec.get("memory_fraction", 0.05),
    )
    if spec.get("max_num_batched_tokens"):
        kwargs.update(max_num_batched_tokens=spec["max_num_batched_tokens"], enable_chunked_prefill=True)
    llm = LLM(**kwargs)
    params = SamplingParams(
        temperature=0.0, max_tokens=spec["max_tokens"], detokenize=False, ignore_eos=True,
        prompt_logprobs=0 if spec.get("prompt_logprobs") else None,
    )
    calls = []
    for call in range(spec.get("calls", 1)):
        order = list(range(len(spec["prompts"])))
        if call % 2:
            order.reverse()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=spec["prompts"][i]) for i in order], params, use_tqdm=False)
        results = [None] * len(order)
        for i, output in zip(order, outputs):
            logprobs = None
            if output.prompt_logprobs is not None:
                ids = spec["prompts"][i]
                logprobs = [entry[ids[j]].logprob for j, entry in enumerate(output.prompt_logprobs) if entry is not None]
            results[i] = {"tokens": list(output.outputs[0].token_ids), "prompt_logprobs": logprobs}
        calls.append(results)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump({"calls": calls}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
