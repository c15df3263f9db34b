"""Built-in rule rewards; importing this package registers them."""

from rewards.builtin import exact  # noqa: F401
