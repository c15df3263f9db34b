"""A vLLM engine in this process: keyed sampling with logprobs, and versioned weight loads.

Used inside a Ray actor (rollouts/actors.py) with VLLM_ENABLE_V1_MULTIPROCESSING=0 so
the engine lives in the actor process and `collective_rpc` can hand it tensors.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Sequence

from rollouts.media import load_media
from rollouts.seeding import unit_seed
from rollouts.types import Media, Rollout


def engine_env(device: str, kv_cache_gib: int, cpu_threads: str | None) -> dict[str, str]:
    """Environment a CPU engine needs to run fast here (ENVIRONMENT.md: 3-5x otherwise)."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        if cpu_threads:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads
            env["OMP_NUM_THREADS"] = str(count_cpus(cpu_threads))
    return env


def count_cpus(spec: str) -> int:
    """'0-1' -> 2, '0,2,4' -> 3, '0-3|4-7' (per-rank lists) -> 4."""
    first = spec.split("|")[0]
    n = 0
    for part in first.split(","):
        a, _, b = part.partition("-")
        n += (int(b) - int(a) + 1) if b else 1
    return n


class VLLMEngine:
    def __init__(self, model: str, dtype: str = "float32", enforce_eager: bool = True,
                 max_model_len: int = 512, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.5, seed: int = 0, trust_remote_code: bool = False,
                 chunked_prefill: bool | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, max_images_per_prompt: int = 0):
        from vllm import LLM

        t0 = time.monotonic()
        kwargs: dict[str, Any] = dict(model=model, dtype=dtype, enforce_eager=enforce_eager,
                                      max_model_len=max_model_len, seed=seed,
                                      tensor_parallel_size=tensor_parallel_size,
                                      trust_remote_code=trust_remote_code)
        on_cpu = os.environ.get("VLLM_TARGET_DEVICE", "cpu") == "cpu"
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        # vLLM rewinds a seeded request's generator when it discards the token sampled
        # after a partial (chunked) prefill; CPU generators cannot rewind ("CPU Generator
        # does not use offset"), so per-unit seeds need whole prefills on CPU.
        if chunked_prefill is None:
            chunked_prefill = not on_cpu
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        if max_images_per_prompt:
            kwargs["limit_mm_per_prompt"] = {"image": max_images_per_prompt}
        if not chunked_prefill:
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, max_num_seqs or 0, max_num_batched_tokens or 8192)
        elif max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max_num_batched_tokens
        self.llm = LLM(**kwargs)
        self.weight_version = 0
        self.startup_s = time.monotonic() - t0

    def generate(self, units: Sequence[tuple], temperature: float,
                 top_p: float, max_tokens: int, base_seed: int, ignore_eos: bool = False) -> list[Rollout]:
        """Sample one response per unit ((step, prompt_id, sample_idx), prompt token ids[, Media]).
        `ignore_eos` samples exactly `max_tokens` tokens (fixed-length benchmarks). A prompt's
        images are loaded once per call and shared by its samples."""
        from vllm import SamplingParams

        loaded: dict[Media, list] = {}
        prompts = [self._prompt(u, loaded) for u in units]
        params = [SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 logprobs=0, seed=unit_seed(base_seed, u[0]), ignore_eos=ignore_eos)
                  for u in units]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        rollouts = []
        for unit, out in zip(units, outs):
            key, ids = unit[0], unit[1]
            c = out.outputs[0]
            tokens = list(c.token_ids)
            lps = [float(d[t].logprob) for d, t in zip(c.logprobs or [], tokens)]
            # with media the engine expanded the image tokens; the trainer needs that prompt
            prompt_ids = list(out.prompt_token_ids) if len(unit) > 2 and unit[2] is not None else list(ids)
            rollouts.append(Rollout(prompt_id=key[1], sample_idx=key[2], prompt_token_ids=prompt_ids,
                                    token_ids=tokens, logprobs=lps, text=c.text,
                                    finish_reason=str(c.finish_reason), weight_version=self.weight_version,
                                    step=key[0]))
        return rollouts

    @staticmethod
    def _prompt(unit: tuple, loaded: dict[Media, list]) -> Any:
        from vllm.inputs import TokensPrompt

        media = unit[2] if len(unit) > 2 else None
        if media is None:
            return TokensPrompt(prompt_token_ids=list(unit[1]))
        if media not in loaded:
            loaded[media] = load_media(media)
        return TokensPrompt(prompt_token_ids=list(unit[1]), multi_modal_data={"image": loaded[media]})

    def load_weights(self, state_dict: dict[str, Any], version: int) -> int:
        """Install an HF state dict. vLLM-CPU post-processes loaded weights, so the
        model's own `load_weights` fails after start-up; `reload_weights` works."""
        self.reload(state_dict.items())
        return self.finish_load(version)

    def reload(self, items: Iterable[tuple[str, Any]]) -> None:
        """Load (name, tensor) pairs in place, consuming `items` lazily: vLLM's layerwise reload
        processes a layer once all of its weights have arrived, so a streamed iterator that
        receives bucket by bucket is loaded as it arrives. In-process engine only (the
        iterator is handed to the worker as is)."""

        def _reload(worker, weights):
            worker.model_runner.reload_weights(weights_iterator=iter(weights))
            return True

        self.llm.collective_rpc(_reload, args=(items,))

    def finish_load(self, version: int | None = None) -> int:
        """After a load: drop what was computed with the old weights; stamp `version` if given."""
        # cached prefixes were computed with the old weights
        self.llm.reset_prefix_cache()
        # so were cached vision-encoder outputs (image prompts); without this reset a reused image
        # is either embedded with stale weights or missed ("Encoder cache miss") after the reload
        engine = self.llm.llm_engine
        if hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()
        if version is not None:
            self.weight_version = version
        return self.weight_version

    def worker_pids(self) -> list[int]:
        """The processes that hold the model (the actor's own with VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
        return list(self.llm.collective_rpc(lambda worker: os.getpid()))

    def sequence_logprobs(self, sequences: Sequence[list[int]], start: int) -> list[list[float]]:
        """log p(seq[t] | seq[:t]) for t >= start, computed by the engine (prompt_logprobs)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences],
                                 SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        return [[float(d[t].logprob) for d, t in zip(o.prompt_logprobs[start:], s[start:])]
                for o, s in zip(outs, sequences)]
