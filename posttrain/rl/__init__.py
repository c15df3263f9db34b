"""GSPO reinforcement learning: the RL config, the trainer (one step reads generate ->
score -> select -> update -> sync), the policy update, log-probs, the policy-loss
registry with each loss's declared settings, and alignment RL."""
