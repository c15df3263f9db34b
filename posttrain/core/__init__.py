"""The core every package stands on: registry, config base and loader, the dataset
contract and JSONL I/O, run directories and their file names, checkpoints, progress,
model and tokenizer loading, seeding and stop handling.

The core imports nothing above it (no phase, trainer, pipeline, rewards, hints or
rollouts), so `rewards/`, `hints/` and `rollouts/` can stand on it alone.
"""
