"""posttrain: RL post-training for language models.

Pure modules (losses, advantages, config, data) import fast and without ray or vllm;
the engine-backed parts live in `rollouts/` and the reward services in `rewards/`.
"""

__version__ = "0.1.0"
