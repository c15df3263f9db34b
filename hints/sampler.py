"""`HintSampler`: progressive hints as a sampler the RL step asks once and tells once.

    hints = HintSampler(cfg.hints, train_rows, threshold=cfg.reward.threshold)
    draws = hints.plan(rows, step)      # per group: the row to generate from, the row to
                                        # train on, its hint level (and whether it probes)
    ... generate and score every draw's group ...
    metrics = hints.update([(draw, rewards_of_its_group), ...])

The sampler owns its state (the scheduler: per-prompt levels and history); the trainer
never reaches into it. With `search: linear`, a prompt that has just become hard is
probed at its next visit: `plan` returns one draw per level 1..max_level instead of its
usual draw, all generated and scored with the step's batch; `update` sets the prompt's
minimal level (the lowest level with a correct response). The probes' rollouts join the
training batch like any group (Keye trains on the minimal level's rollouts): the levels
below the minimal one are all wrong, carry no advantage and drop out of the update; a
higher level that is not all correct trains too (a departure from Keye's minimal-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hints.config import HintsConfig
from hints.inject import with_hint
from hints.levels import MIN_LEVEL, NO_HINT
from hints.metrics import LevelStats, count_correct, hard_pass_rate, level_histogram
from hints.scheduler import HintScheduler
from hints.sources import DatasetHints, HintSource, HintSourceError
from posttrain.core.run_dir import HINTS_STATE_FILE


@dataclass(frozen=True)
class Draw:
    """One planned group: generate from `prompt_row`, train on `train_row`, at `level`."""

    row: dict[str, Any]  # the dataset row as given (what rewards score against)
    prompt_row: dict[str, Any]  # the row whose prompt is sampled (hinted when level > 0)
    train_row: dict[str, Any]  # the row whose prompt the update sees ('hinted' or 'plain')
    level: int
    search: bool = False  # a probe of the minimal-hint search

    @property
    def id(self) -> str:
        return self.row["id"]


def has_reference(row: dict[str, Any]) -> bool:
    answer = row.get("answer")
    return isinstance(answer, str) and bool(answer.strip())


class HintSampler:
    def __init__(self, cfg: HintsConfig, rows: Sequence[dict[str, Any]] = (), threshold: float = 1.0,
                 source: HintSource | None = None):
        self.cfg, self.threshold = cfg, threshold
        self.scheduler = HintScheduler(cfg.policy, cfg.policy_params(), cfg.max_history)
        self.rows = {r["id"]: r for r in rows}
        if source is None and cfg.enabled and cfg.source == "teacher":
            raise HintSourceError("hints.source=teacher needs a TeacherHints source; build one with "
                                  "hints.sources.TeacherHints(generator, encode, teacher, cache_path)")
        self.source = source or DatasetHints()
        if cfg.enabled and cfg.source == "dataset":
            for row in rows:
                if has_reference(row) and not row.get("hints"):
                    raise HintSourceError(
                        f"training row {row['id']!r} has an answer but no 'hints' list; hints.enabled with "
                        "hints.source=dataset needs 5 hints per row (or set hints.source=teacher)")
        self._to_probe: set[str] = set()
        self._step = 0
        if cfg.init_state:
            self.scheduler.load(cfg.init_state)

    # ------------------------------------------------------------------ the two calls of a step

    def plan(self, rows: Sequence[dict[str, Any]], step: int) -> list[Draw]:
        """The step's groups: each row at its level, or (search) at every level 1..max_level."""
        self._step = step
        if not self.cfg.enabled:
            return [Draw(r, r, r, NO_HINT) for r in rows]
        wanted: list[tuple[dict[str, Any], int, bool]] = []
        for r in rows:
            self.rows.setdefault(r["id"], r)
            if r["id"] in self._to_probe:
                wanted += [(r, lv, True) for lv in range(MIN_LEVEL, self.cfg.max_level + 1)]
            else:
                wanted.append((r, self.scheduler.level(r["id"]), False))
        hinted = self._hinted(wanted)
        return [Draw(r, h, h if lv == NO_HINT or self.cfg.train_prompt == "hinted" else r, lv, search)
                for (r, lv, search), h in zip(wanted, hinted)]

    def update(self, batch: Sequence[tuple[Draw, Sequence[float | None]]]) -> dict[str, float]:
        """Learn from the scored groups (reward >= threshold is correct); returns the step's hint metrics."""
        stats, search_stats = LevelStats(), LevelStats()
        probes: dict[str, list[tuple[int, int]]] = {}
        for draw, rewards in batch:
            correct, total = count_correct(rewards, self.threshold)
            if draw.search:
                search_stats.add(draw.level, correct, total)
                probes.setdefault(draw.id, []).append((draw.level, correct))
                continue
            stats.add(draw.level, correct, total)
            if self.cfg.enabled and total:
                self._observe(draw, correct, total)
        for pid, results in probes.items():
            solved = [lv for lv, c in sorted(results) if c > 0]
            self.scheduler.set_minimal(pid, solved[0] if solved else None)
            self._to_probe.discard(pid)
        metrics = level_histogram(d.level for d, _ in batch if not d.search)
        metrics.update(stats.metrics())
        metrics["hints/hinted_prompts"] = float(sum(v != NO_HINT for v in self.scheduler.levels().values()))
        metrics["hints/searched_prompts"] = float(len(probes))
        if probes:
            metrics["hints/search/found_fraction"] = sum(
                any(c > 0 for _, c in r) for r in probes.values()) / len(probes)
            metrics.update({k.replace("hints/", "hints/search/", 1): v for k, v in search_stats.metrics().items()})
        return metrics

    def _observe(self, draw: Draw, correct: int, total: int) -> None:
        before = self.scheduler.level(draw.id)
        after = self.scheduler.observe(draw.id, self._step, draw.level, correct, total,
                                       has_reference(self.rows.get(draw.id, draw.row)))
        if before == NO_HINT and after != NO_HINT and self.cfg.search != "none":
            self._to_probe.add(draw.id)

    def _hinted(self, wanted: list[tuple[dict[str, Any], int, bool]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [None] * len(wanted)  # type: ignore[list-item]
        for lv in sorted({lv for _, lv, _ in wanted}):
            idx = [i for i, (_, v, _) in enumerate(wanted) if v == lv]
            hints = self.source.hints([wanted[i][0] for i in idx], lv)
            for i, h in zip(idx, hints):
                out[i] = with_hint(wanted[i][0], lv, h, self.cfg.template)
        return out

    # ------------------------------------------------------------------ evaluation and state

    def hard_ids(self) -> list[str]:
        """Prompts that needed a hint at some point."""
        return sorted(pid for pid, s in self.scheduler.prompts.items()
                      if s.level != NO_HINT or any(a.level != NO_HINT for a in s.history))

    def eval_rows(self) -> list[dict[str, Any]]:
        """Up to `hints.eval_hard_rows` hard training rows, to be evaluated without hints."""
        if not self.cfg.enabled:
            return []
        return [self.rows[i] for i in self.hard_ids() if i in self.rows][: self.cfg.eval_hard_rows]

    def eval_metrics(self, correct_by_id: dict[str, float]) -> dict[str, float]:
        """`hints/hard_pass_rate_no_hint` from the unhinted evaluation of `eval_rows()`:
        {prompt id: reward}; a reward >= threshold is correct."""
        return hard_pass_rate({i: float(v >= self.threshold) for i, v in correct_by_id.items()}, self.hard_ids())

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "to_probe": sorted(self._to_probe)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self._to_probe = set(state.get("to_probe", []))

    def save(self, run_dir: str | Path) -> Path:
        """Write RUN_DIR/hints_state.json (a later round passes it as hints.init_state)."""
        return self.scheduler.save(Path(run_dir) / HINTS_STATE_FILE)
