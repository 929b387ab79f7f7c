"""Train the bundle's VideoLesionNet on synthetic angiogram cines and report its held-out test AUC.

The command that built ``models/model.pt``.

Usage, from the bundle root::

    python scripts/train_video.py --quick                 # CI smoke run (seconds)
    python scripts/train_video.py --out models/model.pt

The training, validation and test sets come from :func:`~monai_saliency.data.synthetic.angiogram.make_angiogram_dataset`
with three different seeds derived from ``--seed``, so the reported AUC is on held-out cases (new trees, new
lesions, new backgrounds); see :func:`monai_saliency.models.training.train_video_classifier`. The checkpoint (a plain
``state_dict``) is written atomically, and only if the test AUC reaches ``--min-auc`` and the file is at most
``--max-mb``; otherwise the script says why and writes nothing. Everything is seeded; with ``--threads 1`` a run is
bit-for-bit repeatable on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from monai_saliency.models.training import QUICK, TrainConfig, save_if_good, train_video_classifier

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; prints progress and a final JSON summary line, returns the summary."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    d = TrainConfig()
    p.add_argument("--quick", action="store_true", help="tiny CI run (overrides the size options)")
    p.add_argument("--n-train", type=int, default=d.n_train)
    p.add_argument("--n-val", type=int, default=d.n_val)
    p.add_argument("--n-test", type=int, default=d.n_test)
    p.add_argument("--size", type=int, default=d.shape[0], help="H = W of the cines")
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", type=str, default=None, help="checkpoint path (state_dict); nothing is saved if omitted")
    p.add_argument("--min-auc", type=float, default=0.85, help="save only at or above this test AUC")
    p.add_argument("--max-mb", type=float, default=5.0, help="save only at or below this size")
    a = p.parse_args(argv)
    if a.quick:
        cfg = TrainConfig(**{**asdict(QUICK), "seed": a.seed, "threads": a.threads})
    else:
        names = ("n_train", "n_val", "n_test", "frames", "width", "epochs", "batch_size", "lr", "seed", "threads")
        cfg = TrainConfig(shape=(a.size, a.size), **{n: getattr(a, n) for n in names})
    model, summary = train_video_classifier(cfg)
    if a.out:
        summary["saved"] = save_if_good(model, summary, a.out, a.min_auc, a.max_mb)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
