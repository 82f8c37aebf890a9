"""Score a checkpoint on a data set: pooled mir_eval metrics plus a per-track table."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from melodyrt.rt.config import CfpConfig, _from_mapping
from melodyrt.rt.errors import MelodyRTError

from .datasets import discover
from .features import FeatureCache, variants_of
from .metrics import MelodyScorer, format_table
from .train import load_checkpoint, model_from_checkpoint, score_track


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, variant: str | None = None,
                        singers: list[str] | None = None, cache_dir: str | Path = ".cache/features",
                        progress: bool = True) -> dict:
    """Evaluate the full-sequence forward of a checkpoint (causal or paper) on ``data``.

    Returns
    -------
    dict
        ``pooled`` (metrics over all frames), ``per_track`` and a markdown ``table``.
    """
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    layout, tracks = discover(data)
    if singers:
        tracks = [t for t in tracks if t.singer in singers]
        if not tracks:
            raise MelodyRTError(f"no tracks of singers {', '.join(singers)} in {data}")
    cache = FeatureCache(cache_dir, cfp)
    cache.build(tracks, progress=progress)
    lookahead = model.delay_frames
    scorer = MelodyScorer()
    for t in tqdm(tracks, desc="evaluating", unit="track", disable=not progress):
        available = variants_of(t)
        v = variant if variant in available else ("mix0" if "mix0" in available else "mix")
        score_track(scorer, model, cache, t, v, stats, lookahead)
    pooled = scorer.pooled()
    table = "pooled over frames\n" + format_table({f"{layout} ({len(tracks)} tracks)": pooled})
    table += "\n\nper track\n" + format_table(scorer.per_track)
    return {"pooled": pooled, "per_track": scorer.per_track, "table": table}
