"""Configuration of the MF-TFA network (paper reference and causal/real-time variants).

A :class:`ModelConfig` is a frozen dataclass: it fully determines the network
architecture, is stored inside checkpoints (``to_dict``) and loads from YAML
(``from_yaml``). Named configs live in ``model/configs/*.yaml`` and are resolved by
:func:`load_model_config`.

Kernel sizes are always ``(freq, time)``. A kernel may be written in YAML either as a
single int ``k`` (square ``k x k``, as in the paper) or as a pair ``[kf, kt]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

__all__ = ["ModelConfig", "load_model_config", "available_configs", "CONFIG_DIR"]

#: Directory holding the named YAML configs ("paper", "paper_causal", "rt", ...).
CONFIG_DIR: Path = Path(__file__).parent / "configs"

Kernel = tuple[int, int]


def _kernel(k: int | Sequence[int]) -> Kernel:
    """Normalise an int or a pair to a ``(freq, time)`` kernel tuple."""
    if isinstance(k, int):
        return (k, k)
    kk = tuple(int(v) for v in k)
    if len(kk) != 2:
        raise ValueError(f"kernel must be an int or a (freq, time) pair, got {k!r}")
    return kk  # type: ignore[return-value]


def _kernels(ks: Sequence[int | Sequence[int]]) -> tuple[Kernel, ...]:
    return tuple(_kernel(k) for k in ks)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an MF-TFA network.

    Parameters
    ----------
    name : str
        Identifier written into checkpoints and ONNX metadata.
    n_bins : int
        Frequency rows of the CFP input (360) and pitch rows of the output; the
        voicing ("bm") branch collapses exactly ``prod(bm_strides)`` rows into one,
        so ``prod(bm_strides) == n_bins`` is required.
    in_channels : int
        CFP channels (3: spectrum, GCoS, GC).
    stem_channels : tuple of int
        Output channels of the stem conv blocks (paper: ``(16, 32)``). The last one
        must equal ``channels``.
    stem_kernels : tuple of kernel
        The two convs of every stem block (paper: ``(5, 3)`` then ``3 x 3``).
    channels : int
        Width C of the MF-TFA trunk (paper 32).
    mid_channels : int
        Inner width of each MF-TFA module after its 1x1 expansion (paper 64).
    n_modules : int
        Number of MF-TFA modules (paper 5).
    groups : int
        Res2Net scale: the expanded features are split into ``groups`` groups of
        ``mid_channels // groups`` channels; ``groups - 1`` of them go through an MSC.
    msc_kernels : tuple of kernel
        The sequential convs of a multi-scale conv (paper 3, 5, 7).
    tfa_kernels : tuple of kernel
        The sequential convs of the TFA feature branch (paper 3, 5).
    attn_kernel : int
        Kernel of the 1-D convs in the TFA time and frequency attentions (paper 3).
    head_channels : int
        Hidden width of the main head (paper 16).
    head_kernels : tuple of kernel
        The two convs of the main head (paper 5 x 5 twice).
    bottleneck_mid : int
        Hidden width of the aux bottleneck; 0 means ``channels // 4`` (the paper).
    bottleneck_kernel : kernel
        Middle conv of the aux bottleneck (paper 3 x 3).
    bottleneck_out : int
        Channels of the bottleneck output fed to the aux Linear (paper 2, so the
        Linear sees ``2 * n_bins = 720`` features).
    bm_channels : int
        Hidden width of the voicing branch (paper 16).
    bm_strides : tuple of int
        Kernel = stride (freq) of the voicing-branch convs (paper 4, 3, 6, 5).
    taps : tuple of int
        1-based indices of the modules after which h1 and h2 are taken (paper ``(2, 4)``:
        h1 after modules 1-2, h2 after modules 3-4). h3 is always the last module; a
        shallow config may take h2 there too (``taps[1] == n_modules``), so that its
        second aux head and distillation map still exist.
    aux_heads : bool
        Build the two auxiliary classifiers (Linear(720, 361)) used by SD-MS training.
        The 1-channel feature maps ``feat1``/``feat2`` exist whenever taps exist.
    dropout : float
        Dropout after each stem block (paper 0.2); training only.
    causal : bool
        False: 'same' padding in time and segment-wide TFA frequency attention (the
        reference). True: time padding on the left only, causal TFA attentions and a
        running-mean frequency attention over the last ``freq_window`` frames.
    freq_window : int
        W [frames]: length of the causal running mean used by the TFA frequency
        attention (causal only). Frames before the start of the sequence count as
        zeros and the sum is always divided by W, which is exactly what the streaming
        step computes from a zero state.
    lookahead_frames : int
        Output delay [frames] that the *training code* implements by shifting targets
        (the net predicts the pitch of frame ``t - lookahead_frames`` at frame t). The
        network itself is strictly causal; this only feeds ``MFTFA.delay_frames``.
    stem_bn_eps, stem_bn_momentum : float
        BatchNorm eps/momentum of the stem blocks. The reference passes its intended
        momentum 0.01 positionally, so it lands on ``eps`` and momentum stays 0.1;
        ``paper.yaml`` keeps that behaviour for fidelity.
    bn_momentum : float
        Momentum of every other BatchNorm (PyTorch default 0.1 in the reference).
    """

    name: str = "paper"
    n_bins: int = 360
    in_channels: int = 3
    stem_channels: tuple[int, ...] = (16, 32)
    stem_kernels: tuple[Kernel, ...] = ((5, 3), (3, 3))
    channels: int = 32
    mid_channels: int = 64
    n_modules: int = 5
    groups: int = 4
    msc_kernels: tuple[Kernel, ...] = ((3, 3), (5, 5), (7, 7))
    tfa_kernels: tuple[Kernel, ...] = ((3, 3), (5, 5))
    attn_kernel: int = 3
    head_channels: int = 16
    head_kernels: tuple[Kernel, ...] = ((5, 5), (5, 5))
    bottleneck_mid: int = 0
    bottleneck_kernel: Kernel = (3, 3)
    bottleneck_out: int = 2
    bm_channels: int = 16
    bm_strides: tuple[int, ...] = (4, 3, 6, 5)
    taps: tuple[int, ...] = (2, 4)
    aux_heads: bool = True
    dropout: float = 0.2
    causal: bool = False
    freq_window: int = 128
    lookahead_frames: int = 0
    stem_bn_eps: float = 0.01
    stem_bn_momentum: float = 0.1
    bn_momentum: float = 0.1

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        # Normalise YAML lists to tuples so configs compare/hash consistently.
        set_ = object.__setattr__
        set_(self, "stem_channels", tuple(int(c) for c in self.stem_channels))
        set_(self, "stem_kernels", _kernels(self.stem_kernels))
        set_(self, "msc_kernels", _kernels(self.msc_kernels))
        set_(self, "tfa_kernels", _kernels(self.tfa_kernels))
        set_(self, "head_kernels", _kernels(self.head_kernels))
        set_(self, "bottleneck_kernel", _kernel(self.bottleneck_kernel))
        set_(self, "bm_strides", tuple(int(s) for s in self.bm_strides))
        set_(self, "taps", tuple(int(t) for t in self.taps))

        if not self.stem_channels or self.stem_channels[-1] != self.channels:
            raise ValueError("stem_channels[-1] must equal channels")
        prod = 1
        for s in self.bm_strides:
            prod *= s
        if prod != self.n_bins:
            raise ValueError(f"prod(bm_strides)={prod} must equal n_bins={self.n_bins}")
        if self.groups < 2 or self.mid_channels % self.groups:
            raise ValueError("groups must be >= 2 and divide mid_channels")
        if len(self.taps) != 2 or not (1 <= self.taps[0] < self.taps[1] <= self.n_modules):
            raise ValueError("taps must be two increasing module indices in [1, n_modules]")
        all_k = (
            self.stem_kernels + self.msc_kernels + self.tfa_kernels + self.head_kernels
            + (self.bottleneck_kernel, (self.attn_kernel, self.attn_kernel))
        )
        if any(k % 2 == 0 for kk in all_k for k in kk):
            raise ValueError("all kernel sizes must be odd ('same' padding)")
        if self.freq_window < 1 or self.lookahead_frames < 0:
            raise ValueError("freq_window must be >= 1 and lookahead_frames >= 0")

    # ---------------------------------------------------------------- derived values
    @property
    def n_classes(self) -> int:
        """Output rows: 1 voicing row + ``n_bins`` pitch rows (361)."""
        return self.n_bins + 1

    @property
    def group_channels(self) -> int:
        """Channels per Res2Net group, ``mid_channels // groups``."""
        return self.mid_channels // self.groups

    @property
    def bottleneck_hidden(self) -> int:
        """Hidden width of the aux bottleneck (``channels // 4`` unless overridden)."""
        return self.bottleneck_mid or max(1, self.channels // 4)

    @property
    def aux_features(self) -> int:
        """Input size of an aux Linear: ``bottleneck_out * n_bins`` (720)."""
        return self.bottleneck_out * self.n_bins

    # --------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (lists, not tuples) suitable for YAML/JSON/checkpoints."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _listify(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping; unknown keys raise (typos must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelConfig":
        """Load from a YAML file (a mapping of field names to values)."""
        with open(path, "r", encoding="utf-8") as fh:
            d = yaml.safe_load(fh) or {}
        if "model" in d and isinstance(d["model"], Mapping):  # allow a nested section
            d = d["model"]
        return cls.from_dict(d)

    def to_yaml(self, path: str | Path) -> None:
        """Write as YAML (round-trips through :meth:`from_yaml`)."""
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)

    def replace(self, **changes: Any) -> "ModelConfig":
        """Return a copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _listify(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    return v


def available_configs() -> list[str]:
    """Names of the configs shipped in ``model/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """Resolve a config by name ("paper", "paper_causal", "rt") or YAML path.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped config name, or a path to a YAML file.

    Returns
    -------
    ModelConfig
    """
    p = Path(name_or_path)
    # A path only if it looks like one (a YAML suffix or an existing *file*): a bare
    # name such as "rt" must not resolve against the working directory.
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return ModelConfig.from_yaml(p)
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        raise FileNotFoundError(
            f"no model config {name_or_path!r}; known: {', '.join(available_configs())}"
        )
    return ModelConfig.from_yaml(cand)
