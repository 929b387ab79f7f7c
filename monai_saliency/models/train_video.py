"""Deprecated: the training functions moved to :mod:`monai_saliency.models.training` (``TrainConfig``, ``QUICK``,
``train_video_classifier``, ``evaluate_auc``, ``save_if_good``), the command line to the angiogram bundle's
``scripts/train_video.py`` (``python scripts/train_video.py --out models/model.pt`` from the bundle root).

The old names and ``python -m monai_saliency.models.train_video`` keep working, with a ``DeprecationWarning``, for
one release.
"""

from __future__ import annotations

import sys
from typing import Any

from monai_saliency._deprecation import bundle_scripts, forward_getattr, warn_moved

_BUNDLE = "angiogram_signature_activation"
_MOVED = ("QUICK", "TrainConfig", "evaluate_auc", "save_if_good", "train_video_classifier")
__all__ = ["QUICK", "TrainConfig", "evaluate_auc", "main", "save_if_good", "train_video_classifier"]  # noqa: F822


def _training(name: str) -> Any:
    from monai_saliency.models import training

    return lambda: getattr(training, name)


__getattr__ = forward_getattr(
    __name__,
    {
        **{n: (f"monai_saliency.models.training.{n}", _training(n)) for n in _MOVED},
        "main": (f"the {_BUNDLE} bundle's scripts/train_video.py", lambda: bundle_scripts(_BUNDLE, "train_video").main),
    },
)

if __name__ == "__main__":  # pragma: no cover
    warn_moved("python -m monai_saliency.models.train_video", f"python scripts/train_video.py in the {_BUNDLE} bundle")
    bundle_scripts(_BUNDLE, "train_video").main(sys.argv[1:])
