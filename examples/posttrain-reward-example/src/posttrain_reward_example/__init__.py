"""Example posttrain reward plugins (registered through the `posttrain.rewards` entry points)."""
