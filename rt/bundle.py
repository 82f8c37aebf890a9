"""An exported model as the runtime loads it: ONNX files plus a metadata sidecar.

A bundle is a folder holding ``model.json`` and the ONNX files it names. The runtime
checks the metadata against what it implements before it opens a session, so a model
from another version or a corrupt file fails with one clear line instead of wrong
pitches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cfp import FeatureStats
from .config import CfpConfig, NormConfig, _from_mapping
from .errors import ConfigError, ModelError

FORMAT = "melodyrt-model"
#: 2: frequency-attention windows became host-managed running sums (``kind`` of a state).
FORMAT_VERSION = 2
METADATA_FILE = "model.json"
WEIGHTS = Path(__file__).resolve().parent.parent / "model" / "weights"
#: Packaged models by profile (``--profile``): the trade-off between note-on latency and
#: accuracy is measured in the README and the model card.
PROFILES = {"accurate": WEIGHTS / "rt", "low-latency": WEIGHTS / "rt_lowlat", "backing": WEIGHTS / "rt_backing"}
#: The profile a command uses when given neither ``--model`` nor ``--profile``.
DEFAULT_PROFILE = "accurate"
#: The packaged default model.
DEFAULT_BUNDLE = PROFILES[DEFAULT_PROFILE]


def profile_dir(profile: str) -> Path:
    """The packaged model folder of a profile.

    Raises
    ------
    ModelError
        An unknown profile, or one whose model is not in this installation.
    """
    if profile not in PROFILES:
        raise ModelError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    root = PROFILES[profile]
    if not (root / METADATA_FILE).exists():
        raise ModelError(f"the {profile} profile's model is not installed ({root / METADATA_FILE} is missing)")
    return root


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: A state the step returns and takes back on the next call (the last k-1 inputs of a conv).
CARRY = "carry"
#: A causal window mean: the step takes the sum of the last ``window - 1`` frames and returns
#: the new frame; the engine keeps those frames and their running sum (:mod:`.window_sums`).
WINDOW_SUM = "window_sum"


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state of the streaming step.

    Attributes
    ----------
    name : str
        Layer name (its module path with ``_``).
    shape : tuple of int
        Shape of the step's input and output tensor without the batch axis:
        ``(channels, k - 1, n_freq)`` for a carry, ``(channels, 1, n_freq)`` for a window.
    kind : {"carry", "window_sum"}
    window : int
        W [frames] of a window state (0 for a carry).
    """

    name: str
    shape: tuple[int, ...]
    kind: str = CARRY
    window: int = 0

    @property
    def input_name(self) -> str:
        """ONNX input: ``state_in_<name>`` (carry) or ``window_sum_<name>`` (window)."""
        return f"state_in_{self.name}" if self.kind == CARRY else f"window_sum_{self.name}"

    @property
    def output_name(self) -> str:
        """ONNX output: ``state_out_<name>`` (carry) or ``window_frame_<name>`` (window)."""
        return f"state_out_{self.name}" if self.kind == CARRY else f"window_frame_{self.name}"

    @classmethod
    def from_meta(cls, entry: dict) -> "StateSpec":
        """From one ``model.json`` ``states`` entry (checked)."""
        kind = entry.get("kind", CARRY)
        if kind not in (CARRY, WINDOW_SUM):
            raise ValueError(f"state {entry.get('name')!r} has unknown kind {kind!r}")
        window = int(entry.get("window", 0))
        if kind == WINDOW_SUM and window < 2:
            raise ValueError(f"window state {entry.get('name')!r} needs window >= 2, got {window}")
        return cls(str(entry["name"]), tuple(int(d) for d in entry["shape"]), kind, window)

    def to_meta(self) -> dict:
        """The ``model.json`` entry."""
        d: dict = {"name": self.name, "shape": list(self.shape), "kind": self.kind}
        if self.kind == WINDOW_SUM:
            d["window"] = self.window
        return d


@dataclass(frozen=True)
class ModelBundle:
    """Validated metadata of an exported model.

    Attributes
    ----------
    root : Path
    meta : dict
        The raw sidecar.
    cfp : CfpConfig
        Front end the model was trained on.
    stats : FeatureStats
        Fixed feature normalisation.
    states : tuple of StateSpec
    delay_frames : int [frames]
        Model look-ahead: output of step t describes frame ``t - delay_frames``.
    """

    root: Path
    meta: dict
    cfp: CfpConfig
    stats: FeatureStats
    states: tuple[StateSpec, ...]
    delay_frames: int

    @property
    def name(self) -> str:
        return f"{self.meta['model_name']}-{self.meta['model_version']}"

    @property
    def norm(self) -> NormConfig:
        return NormConfig(mode="fixed")

    def onnx_path(self, precision: str = "fp32") -> Path:
        """Path of the ONNX file for ``precision`` ("fp32", "fp16" or "int8"), hash-checked."""
        files = self.meta.get("onnx", {})
        if precision not in files:
            raise ModelError(f"model {self.root} has no {precision} ONNX file (has: {', '.join(files) or 'none'})")
        path = self.root / files[precision]
        if not path.exists():
            raise ModelError(f"model file missing: {path}")
        expected = self.meta.get("sha256", {}).get(files[precision])
        if expected and sha256_of(path) != expected:
            raise ModelError(f"model file {path} does not match its metadata hash (corrupt or replaced)")
        return path

    def io_dtype(self, precision: str = "fp32") -> np.dtype:
        """Element type of every input/output of that ONNX file."""
        return np.dtype(np.float16 if precision == "fp16" else np.float32)


def load_bundle(root: str | Path | None = None) -> ModelBundle:
    """Read and check a model folder (default: the packaged ``rt`` model).

    Raises
    ------
    ModelError
        Missing folder or sidecar, invalid JSON, another format or version, or values
        this runtime does not implement.
    """
    root = Path(root) if root is not None else DEFAULT_BUNDLE
    if root.is_file() and root.name == METADATA_FILE:
        root = root.parent
    meta_path = root / METADATA_FILE
    if not meta_path.exists():
        raise ModelError(f"no {METADATA_FILE} in {root}: not an exported melodyrt model (see `melodyrt export`)")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {meta_path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path} is not a melodyrt model (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{meta_path} has format version {meta.get('format_version')}, this melodyrt reads {FORMAT_VERSION}: "
            "re-export it with this version's `melodyrt export`"
        )
    try:
        cfp = _from_mapping(CfpConfig, meta["cfp"], "cfp.")
        stats = FeatureStats.from_lists(meta["norm"]["offset"], meta["norm"]["scale"])
        states = tuple(StateSpec.from_meta(s) for s in meta["states"])
        delay = int(meta["delay_frames"])
        n_bins, n_classes = int(meta["n_bins"]), int(meta["n_classes"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ModelError(f"{meta_path} is missing or has invalid fields: {exc}") from None
    if (n_bins, n_classes) != (360, 361) or cfp.sample_rate != 8000 or cfp.hop != 80:
        raise ModelError(
            f"{meta_path}: model expects {n_bins} bins / {n_classes} classes at {cfp.sample_rate} Hz, hop "
            f"{cfp.hop}; this runtime implements 360 / 361 at 8000 Hz, hop 80"
        )
    return ModelBundle(root, meta, cfp, stats, states, delay)
