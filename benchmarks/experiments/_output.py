"""Where the experiments read their configs and write their results."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"


def output_dir(name: str, given: str | None = None, quick: bool = False) -> Path:
    """The output folder of experiment ``name``, created.

    Args:
        name: the experiment's folder name, e.g. ``"sanity"``.
        given: the ``--output-dir`` argument; used as is when set.
        quick: a smoke run, which never overwrites the committed results.

    Returns:
        ``given`` if set, else ``outputs/quick/<name>`` for a quick run, else ``benchmarks/experiments/results/<name>``
        (the committed results, so a full run updates them).
    """
    out = Path(given) if given else (ROOT / "outputs" / "quick" / name if quick else RESULTS / name)
    out.mkdir(parents=True, exist_ok=True)
    return out


OUTPUT_DIR_HELP = (
    "output folder (default: benchmarks/experiments/results/<name>, the committed results; "
    "outputs/quick/<name> with --quick)"
)
