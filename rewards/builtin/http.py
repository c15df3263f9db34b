"""`http`: scores from an HTTP reward service, with connect/read timeouts and bounded
retries with backoff.

POSTs `{"completions": [...], "samples": [...]}` as JSON to `url` and expects
`{"rewards": [float | null, ...]}` (one per sample; null = that sample failed) back.
Errors (refused connection, timeout, HTTP 5xx, bad JSON) are retried `retries` times
with exponential backoff, then raise, so every sample of the call is recorded as failed
with the reason. Runs in the worker pool, whose `timeout_s` must exceed
`(retries + 1) * timeout_s + backoff` of this reward.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from rewards.api import RewardResult, reward


def post_json(url: str, payload: dict, timeout_s: float, retries: int, backoff_s: float) -> dict:
    body = json.dumps(payload).encode()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read(64 * 1024 * 1024))
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} from {url}"
            if e.code < 500:
                break  # a client error will not get better on retry
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            last = f"{url}: {'timeout' if 'timed out' in str(reason) else reason}"
        except ValueError as e:
            last = f"{url} answered with invalid JSON ({e})"
    raise RuntimeError(f"reward service failed after {attempt + 1} attempt(s): {last}")


@reward("http", batched=True)
def http_reward(completions: list[str], samples: list[dict], url: str = "http://127.0.0.1:8000/score",
                timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 0.5) -> list:
    """Scores from an HTTP service: POST {completions, samples} -> {rewards: [...]}."""
    data = post_json(url, {"completions": completions, "samples": samples}, timeout_s, retries, backoff_s)
    rewards = data.get("rewards") if isinstance(data, dict) else None
    if not isinstance(rewards, list):
        raise ValueError(f"{url} answered without a 'rewards' list")
    return [RewardResult.fail(f"{url} returned null for this sample") if r is None else r for r in rewards]
