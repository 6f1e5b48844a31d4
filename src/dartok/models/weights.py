"""Loading weights trained on one model into another: the shape check, the head, the key report.

What image-to-video inflation (:func:`dartok.models.videomamba.load_image_weights`) and a
run's ``init_from`` (:func:`dartok.train.checkpoint.init_from`) share: a state dict that has
already been mapped onto the model's key names is checked and loaded by :func:`load_fitting`,
which says what it left at its initialisation and what it did not use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = ["CAM_KEYS", "HEAD_KEYS", "WeightReport", "load_fitting", "matches"]

HEAD_KEYS = ("head.weight", "head.bias")
"""The classifier's keys (Vim, VideoMamba): dropped, with a note, when the class counts differ."""

CAM_KEYS = ("patch_embed.scorer.cam.weight", "patch_embed.scorer.cam.bias")
"""The scorer's auxiliary CAM head (docs/method.md §10), a classifier too: dropped like the head."""


@dataclass
class WeightReport:
    """What :func:`load_fitting` did.

    Attributes:
        loaded: model keys whose values came from the state dict.
        missing: model keys left at their initialisation (only those the caller allowed,
            plus a dropped head).
        unexpected: state-dict keys not used (only those the caller allowed to be ignored).
        notes: one line per mapping step worth knowing (inflated, resampled, head dropped...).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines for a log: counts, the notes, the keys left at init and those unused."""
        lines = [f"loaded {len(self.loaded)} tensors"]
        lines += [f"  {n}" for n in self.notes]
        if self.missing:
            lines.append(f"  left at init ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  not used ({len(self.unexpected)}): {_short(self.unexpected)}")
        return "\n".join(lines)


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys if len(keys) <= n else keys[:n] + [f"... ({len(keys) - n} more)"])


def matches(key: str, prefixes: Iterable[str]) -> bool:
    """True if ``key`` is one of ``prefixes`` or lies under one (``p`` or ``p.<anything>``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_fitting(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, may_miss: Iterable[str] = (),
                 may_ignore: Iterable[str] = (), notes: list[str] | None = None,
                 source: str = "weights") -> WeightReport:
    """Load ``state_dict`` (already in ``model``'s key names) into ``model`` in place, checked.

    - ``head.weight`` / ``head.bias`` of another shape (another ``num_classes``) are dropped
      with a note; the model's head stays at its initialisation. So is the scorer's CAM head
      (:data:`CAM_KEYS`) of another class count.
    - Any other shape mismatch, a missing key not under ``may_miss`` or an unused key not
      under ``may_ignore`` is an error (nothing is loaded then).

    Args:
        model: the module to load into.
        state_dict: name → tensor in the model's layout.
        may_miss: key names or prefixes (``"patch_embed.scorer"``) the model may keep at init.
        may_ignore: key names or prefixes of ``state_dict`` that may go unused.
        notes: notes of the mapping so far (copied into the report).
        source: how the error messages name the weights (e.g. a path).

    Returns:
        A :class:`WeightReport`.

    Raises:
        ValueError: shape mismatches (other than the head), or missing / unused keys the
            caller did not allow, each listed by name.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    notes = list(notes or [])
    head_dropped = [k for k in HEAD_KEYS if k in sd and k in own and sd[k].shape != own[k].shape]
    if head_dropped:
        notes.append(f"head dropped: {source} have {sd['head.weight'].shape[0] if 'head.weight' in sd else '?'} "
                     f"classes, the model {own['head.weight'].shape[0] if 'head.weight' in own else '?'}; "
                     "the head starts from its initialisation")
        for k in head_dropped:
            sd.pop(k)
    cam_dropped = [k for k in CAM_KEYS if k in sd and k in own and sd[k].shape != own[k].shape]
    if cam_dropped:
        notes.append(f"scorer CAM head dropped: {source} have {sd[cam_dropped[0]].shape[0]} classes, the model "
                     f"{own[cam_dropped[0]].shape[0]}; it starts from its initialisation")
        for k in cam_dropped:
            sd.pop(k)
    head_dropped += cam_dropped
    mismatched = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_missing = [k for k in missing if not matches(k, may_miss) and k not in head_dropped]
    bad_unexpected = [k for k in unexpected if not matches(k, may_ignore)]
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
    if bad_missing:
        problems.append(f"missing keys {_short(bad_missing, 8)}")
    if bad_unexpected:
        problems.append(f"unexpected keys {_short(bad_unexpected, 8)}")
    if problems:
        raise ValueError(f"{source} do not fit {type(model).__name__}: " + " | ".join(problems))
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return WeightReport(loaded=[k for k in own if k in sd], missing=missing, unexpected=unexpected, notes=notes)
