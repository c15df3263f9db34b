"""A dense reward that even a random tiny model gets signal from (tests only)."""


def digit_fraction(completion: str, sample: dict) -> float:
    return sum(c.isdigit() for c in completion) / max(1, len(completion))
