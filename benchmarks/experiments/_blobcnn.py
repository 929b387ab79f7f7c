"""A small SmallCNN trained in seconds on the synthetic blob task, shared by the FORGrad and sanity experiments.

The weights are cached under ``outputs/models/`` keyed by the training settings, so re-running an experiment
does not retrain; delete the file to retrain.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.experiments._output import ROOT
from monai_saliency.data.synthetic.blobs import make_blob_dataset
from monai_saliency.models.small_cnn import SmallCNN


def train_blob_cnn(
    spatial_dims: int = 2,
    size: int = 32,
    n_train: int = 512,
    epochs: int = 8,
    width: int = 8,
    seed: int = 0,
    cache_dir: Path | None = None,
    verbose: bool = True,
    pool: str = "max",
) -> tuple[SmallCNN, dict]:
    """Train (or load) a 2-class SmallCNN on ``make_blob_dataset``; returns ``(model in eval mode, info)``.

    ``info`` holds the settings, the final training loss and the accuracy on a fresh 256-image test split.
    ``pool="avg"`` swaps SmallCNN's two max-pooling layers for average pooling (same kernel and stride; pooling
    has no weights, so the initial weights, the data and their order are those of the max-pool model of the same
    seed): the max- vs average-pool ablation of FORGrad's mechanism claim. The default ``"max"`` is SmallCNN as is
    (and keeps the cache key it always had).
    """
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}.")
    settings = {
        "spatial_dims": spatial_dims,
        "size": size,
        "n_train": n_train,
        "epochs": epochs,
        "width": width,
        "seed": seed,
    }
    if pool != "max":
        settings["pool"] = pool
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    cache = (cache_dir or ROOT / "outputs" / "models") / f"blobcnn_{spatial_dims}d_{key}.pt"
    shape = (size,) * spatial_dims
    torch.manual_seed(seed)
    model = SmallCNN(spatial_dims=spatial_dims, in_channels=1, num_classes=2, width=width)
    if pool == "avg":
        avg = torch.nn.AvgPool2d if spatial_dims == 2 else torch.nn.AvgPool3d
        for i, layer in enumerate(model.features):
            if isinstance(layer, (torch.nn.MaxPool2d, torch.nn.MaxPool3d)):
                model.features[i] = avg(layer.kernel_size, layer.stride)
    if cache.exists():
        state = torch.load(cache, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        info = state["info"]
    else:
        x, y, _ = make_blob_dataset(n_train, shape, seed=seed + 100)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        loss = torch.tensor(0.0)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n_train, generator=g)
            for lo in range(0, n_train, 32):
                idx = perm[lo : lo + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        xt, yt, _ = make_blob_dataset(256, shape, seed=seed + 200)
        with torch.no_grad():
            acc = float((model(xt).argmax(1) == yt).float().mean())
        info = dict(settings, final_loss=float(loss.detach()), test_accuracy=acc)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "info": info}, tmp)
        tmp.replace(cache)
    if verbose:
        tag = "" if pool == "max" else f" {pool}-pool"
        print(f"blob CNN {spatial_dims}D{tag}: test accuracy {info['test_accuracy']:.3f} ({cache.name})")
    return model.eval(), info
