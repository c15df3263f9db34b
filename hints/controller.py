"""`HintController`: what the GSPO trainer calls, once per step.

    hints = HintController(cfg.hints, train_rows)            # once
    for row, level in hints.prepare(batch_rows, step): ...    # before generation
    hints.observe(row["id"], level, rewards_of_its_G)         # after scoring
    log(hints.metrics())                                      # per step / eval
    ckpt["hints"] = hints.state_dict()                        # with each checkpoint

Training uses the hinted rollouts (Keye's choice); the row returned by `prepare`
carries `hint_level`, which the trainer copies into each rollout's meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from hints.config import HintsConfig
from hints.inject import with_hint
from hints.levels import NO_HINT
from hints.metrics import LevelStats, count_correct, hard_pass_rate, level_histogram
from hints.scheduler import HintScheduler
from hints.sources import DatasetHints, HintSource, HintSourceError

STATE_FILE = "hints_state.json"


def has_reference(row: dict[str, Any]) -> bool:
    answer = row.get("answer")
    return isinstance(answer, str) and bool(answer.strip())


class HintController:
    """Decides each prompt's hint level per step and learns from the scored groups.

    With a `generator` and `encode` and `cfg.search != "none"`, a prompt that has just
    become hard is probed for its minimal level before it is next used.
    """

    def __init__(self, cfg: HintsConfig, rows: Sequence[dict[str, Any]] = (),
                 source: HintSource | None = None, generator: Any = None,
                 encode: Callable[[Any], list[int]] | None = None,
                 is_correct: Callable[[list[str], list[dict]], list[bool]] | None = None):
        self.cfg = cfg
        self.scheduler = HintScheduler(cfg.policy, cfg.policy_params(), cfg.max_history)
        self.rows = {r["id"]: r for r in rows}
        if source is None and cfg.enabled and cfg.source == "teacher":
            raise HintSourceError("hints.source=teacher needs a TeacherHints source; build one with "
                                  "hints.sources.TeacherHints(generator, encode, teacher, cache_path)")
        self.source = source or DatasetHints()
        if cfg.enabled and cfg.source == "dataset":
            self._check_dataset_hints(rows)
        self.generator, self.encode, self.is_correct = generator, encode, is_correct
        self.sampling: Any = None
        self._to_probe: set[str] = set()
        self._searched = 0
        self._stats = LevelStats()
        self._levels_in_use: list[int] = []
        if cfg.init_state:
            self.scheduler.load(cfg.init_state)

    def attach(self, generator: Any, encode: Callable[[Any], list[int]],
               is_correct: Callable[[list[str], list[dict]], list[bool]], sampling: Any = None) -> None:
        """Give the minimal-level search (`hints.search`) a generator, an encoder and a judge.

        `sampling` (a SamplingSpec: temperature, max_tokens) should match the rollouts';
        its `n` is replaced by `hints.search_samples`.
        """
        self.generator, self.encode, self.is_correct = generator, encode, is_correct
        self.sampling = sampling

    def _check_dataset_hints(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if has_reference(row) and not row.get("hints"):
                raise HintSourceError(
                    f"training row {row['id']!r} has an answer but no 'hints' list; hints.enabled with "
                    "hints.source=dataset needs 5 hints per row (or set hints.source=teacher)")

    # ------------------------------------------------------------------ per step

    def prepare(self, rows: Sequence[dict[str, Any]], step: int) -> list[tuple[dict[str, Any], int]]:
        """Each row with its hint appended, and the level it got (0 = as given)."""
        if not self.cfg.enabled:
            self._levels_in_use = [NO_HINT] * len(rows)
            return [(dict(r), NO_HINT) for r in rows]
        for r in rows:
            self.rows.setdefault(r["id"], r)
        self._run_search([r for r in rows if r["id"] in self._to_probe], step)
        levels = [self.scheduler.level(r["id"]) for r in rows]
        out: list[tuple[dict[str, Any], int]] = [None] * len(rows)  # type: ignore[list-item]
        for lv in sorted(set(levels)):
            idx = [i for i, v in enumerate(levels) if v == lv]
            hints = self.source.hints([rows[i] for i in idx], lv)
            for i, h in zip(idx, hints):
                out[i] = (with_hint(rows[i], lv, h, self.cfg.template), lv)
        self._levels_in_use = levels
        return out

    def observe(self, prompt_id: str, level: int, rewards: Sequence[float | None], step: int = 0) -> int:
        """Record one scored group (reward >= correct_threshold is correct); returns the next level."""
        correct, total = count_correct(rewards, self.cfg.correct_threshold)
        self._stats.add(level, correct, total)
        if not self.cfg.enabled or total == 0:
            return self.scheduler.level(prompt_id)
        before = self.scheduler.level(prompt_id)
        ref = has_reference(self.rows.get(prompt_id, {"answer": "?"}))
        after = self.scheduler.observe(prompt_id, step, level, correct, total, ref)
        if before == NO_HINT and after != NO_HINT and self.cfg.search != "none":
            self._to_probe.add(prompt_id)
        return after

    def _run_search(self, rows: list[dict[str, Any]], step: int) -> None:
        if not rows:
            return
        if self.generator is None or self.encode is None or self.is_correct is None:
            raise HintSourceError(
                f"hints.search={self.cfg.search} needs a generator: call HintController.attach(generator, "
                "encode, is_correct) before training, or set hints.search=none")
        from dataclasses import replace

        from hints.probe import minimal_levels
        from rollouts.types import SamplingSpec

        sampling = replace(self.sampling or SamplingSpec(), n=self.cfg.search_samples)
        # A distinct step tag keeps the search's samples apart from the training rollouts'.
        result = minimal_levels(self.generator, self.encode, rows, self.source, sampling, self.is_correct,
                                self.cfg.search, self.cfg.template, self.cfg.max_level, step=-(10**6) - step)
        self._searched += len(rows)
        for pid, lv in result.levels.items():
            self.scheduler.set_minimal(pid, lv)
            self._to_probe.discard(pid)

    # ------------------------------------------------------------------ reporting and state

    def metrics(self) -> dict[str, float]:
        """Levels in use at the last `prepare`, and per-level group stats since the last call."""
        out = level_histogram(self._levels_in_use)
        out.update(self._stats.metrics())
        levels = self.scheduler.levels().values()
        out["hints/hinted_prompts"] = float(sum(v != NO_HINT for v in levels))
        out["hints/searched_prompts"] = float(self._searched)
        self._stats, self._searched = LevelStats(), 0
        return out

    def hard_ids(self) -> list[str]:
        """Prompts that needed a hint at some point (for the no-hint evaluation of hard prompts)."""
        return sorted(pid for pid, s in self.scheduler.prompts.items()
                      if s.level != NO_HINT or any(a.level != NO_HINT for a in s.history))

    def hard_rows(self, limit: int) -> list[dict[str, Any]]:
        """The training rows of `hard_ids()` (at most `limit`), for an evaluation without hints."""
        return [self.rows[i] for i in self.hard_ids() if i in self.rows][:limit]

    def eval_metrics(self, correct_by_id: dict[str, float]) -> dict[str, float]:
        """`hints/hard_pass_rate_no_hint` from an unhinted evaluation of (some of) the training
        prompts: {prompt id: fraction correct}; prompts never hard are left out."""
        return hard_pass_rate(correct_by_id, self.hard_ids())

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "to_probe": sorted(self._to_probe)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self._to_probe = set(state.get("to_probe", []))

    def save(self, run_dir: str | Path) -> Path:
        """Write RUN_DIR/hints_state.json (a later round passes it as hints.init_state)."""
        return self.scheduler.save(Path(run_dir) / STATE_FILE)

    def load(self, path: str | Path) -> None:
        path = Path(path)
        self.scheduler.load(path / STATE_FILE if path.is_dir() else path)
