"""Paired comparisons of two evaluations on the same clips (the report's and the gate's judge).

Both evaluations' ``per_clip.csv`` must score the same clips of a domain; the difference
``first − second`` is bootstrapped over those clips (:func:`semivdn.eval.stats.paired_difference`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from semivdn.config import Config
from semivdn.eval.specs import METRICS, PER_CLIP_FILE
from semivdn.eval.stats import Interval, paired_difference


def load_per_clip(eval_dir: Path) -> pd.DataFrame:
    """The per-clip table ``semivdn evaluate`` wrote in ``eval_dir``."""
    path = Path(eval_dir) / PER_CLIP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-clip scores; run `semivdn evaluate --out {eval_dir}` first")
    return pd.read_csv(path)


def _scores(table: pd.DataFrame, domain: str, metric: str) -> pd.Series:
    if metric not in table.columns:
        return pd.Series(dtype=float)
    rows = table[(table.source == domain) & table[metric].notna()]
    return rows.set_index("clip_id")[metric].astype(float)


def paired_delta(first: pd.DataFrame, second: pd.DataFrame, domain: str, metric: str,
                 cfg: Config) -> Interval | None:
    """``first − second`` of ``metric`` over the ``domain`` clips both scored; None when either has none.

    Raises when the two evaluations scored different clips: a paired comparison needs the same data.
    """
    a, b = _scores(first, domain, metric), _scores(second, domain, metric)
    if a.empty or b.empty:
        return None
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))[:3]
        raise ValueError(f"{domain} {metric}: the two evaluations scored different clips (e.g. {only}); "
                         "compare evaluations of the same data")
    b = b.loc[a.index]
    return paired_difference(a.to_numpy(), b.to_numpy(), cfg.eval.bootstrap, cfg.eval.confidence, cfg.seed)


def gain(delta: Interval, metric: str) -> Interval:
    """A difference turned so that positive means better, whichever way ``metric`` points."""
    if not METRICS[metric].lower_better:
        return delta
    flip = Interval(-delta.mean, None if delta.high is None else -delta.high,
                    None if delta.low is None else -delta.low, delta.n, delta.confidence)
    return flip


def verdict(delta: Interval, metric: str) -> str:
    """'better', 'worse' (the first side, significantly) or 'not significant'."""
    if not delta.significant:
        return "not significant"
    return "better" if gain(delta, metric).mean > 0 else "worse"
