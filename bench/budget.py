"""The latency budget (``bench/budget.yaml``): load it, compare measured figures, explain misses.

Every benchmark returns a flat ``{budget key: measured value}`` dict of the figures it
measures; :func:`compare` checks the keys that benchmark measured (the others are listed as
"not measured by this run") and :func:`table` prints measured vs budget. Keys ending in
``_min_x_realtime`` are lower bounds, all others upper bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BUDGET_FILE = Path(__file__).resolve().parent / "budget.yaml"


def load_budget(path: str | Path | None = None) -> dict[str, float]:
    """The budget file as ``{key: limit}``."""
    data = yaml.safe_load(Path(path or BUDGET_FILE).read_text()) or {}
    if not isinstance(data, dict):
        from melodyrt.rt.errors import MelodyRTError

        raise MelodyRTError(f"{path or BUDGET_FILE}: a budget file is a mapping of key: limit")
    return {str(k): float(v) for k, v in data.items()}


def is_lower_bound(key: str) -> bool:
    return key.endswith("_min_x_realtime")


@dataclass(frozen=True)
class Row:
    key: str
    measured: float | None
    limit: float
    ok: bool | None  # None: not measured by this run

    @property
    def status(self) -> str:
        return "not measured here" if self.ok is None else ("ok" if self.ok else "OVER")


def compare(measured: dict[str, float], budget: dict[str, float]) -> list[Row]:
    """One row per budget key, in the budget file's order."""
    rows = []
    for key, limit in budget.items():
        if key not in measured:
            rows.append(Row(key, None, limit, None))
            continue
        v = float(measured[key])
        ok = v >= limit if is_lower_bound(key) else v <= limit
        rows.append(Row(key, v, limit, ok))
    return rows


def over(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.ok is False]


def table(rows: list[Row]) -> str:
    """Markdown table: key | measured | budget | status."""
    lines = ["| budget item | measured | budget | status |", "|---|---:|---:|---|"]
    for r in rows:
        m = "-" if r.measured is None else f"{r.measured:.4g}"
        bound = ">= " if is_lower_bound(r.key) else "<= "
        lines.append(f"| {r.key} | {m} | {bound}{r.limit:g} | {r.status} |")
    return "\n".join(lines)


def held_back_by(stages_ms: dict[str, float], goal_ms: float, goal: str, fixed: set[str] | None = None) -> str:
    """A plain sentence naming the stage(s) that keep a latency goal out of reach.

    Parameters
    ----------
    stages_ms : dict
        Contribution of each stage to the latency [ms].
    goal_ms : float [ms]
    goal : str
        Name of the goal, e.g. "e2e note-on p50".
    fixed : set of str, optional
        Stages the design fixes (an algorithmic delay); None: all of them. Only a fixed stage
        over the goal by itself is reported as making the goal unreachable.
    """
    total = sum(stages_ms.values())
    if total <= goal_ms:
        return f"{goal}: the stages add up to {total:.2f} ms, within the {goal_ms:g} ms goal"
    ranked = sorted(stages_ms.items(), key=lambda kv: -kv[1])
    name, worst = ranked[0]
    parts = ", ".join(f"{k} {v:.2f} ms" for k, v in ranked if v > 0)
    if worst > goal_ms and (fixed is None or name in fixed):
        return (f"{goal}: the {name} alone ({worst:.2f} ms) exceeds the {goal_ms:g} ms goal; "
                f"no other setting can meet it with this design ({parts}; sum {total:.2f} ms)")
    return (f"{goal}: the stages add up to {total:.2f} ms, {total - goal_ms:.2f} ms over the {goal_ms:g} ms goal; "
            f"the largest is the {name} ({parts})")
