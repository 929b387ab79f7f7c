"""A MONAI ``DataLoader`` whose workers hand each batch to the main process as one bytes buffer.

With ``num_workers > 0`` torch's ``DataLoader`` collates in the worker, into shared memory, and moves every tensor
of the batch through its own shared-memory segment and file descriptor. A collated ``MetaTensor`` batch carries
dozens of small tensors (its ``meta``: header fields, affines), so the transfer costs more CPU than reading the
study, a third of it in the main process, on the path of the computation. In :class:`PackedDataLoader` each worker
collates in its private memory and pickles the batch into one ``bytes`` object in which every tensor is a numpy
array (numpy arrays pickle and unpickle fast; torch tensors outside shared memory do not); the main process
unpickles it, rebuilding each tensor with ``torch.from_numpy`` (no copy) and each ``MetaTensor`` with its
``meta``, ``applied_operations`` and ``is_batch``: the batches are those of ``num_workers=0``.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from monai.data import DataLoader
from torch.utils.data._utils import worker as _worker
from torch.utils.data._utils.pin_memory import pin_memory
from torch.utils.data.dataloader import _BaseDataLoaderIter, _MultiProcessingDataLoaderIter

__all__ = ["PackedDataLoader", "pack_batch", "unpack_batch"]


def _rebuild_tensor(array: Any, cls: type, state: dict | None) -> torch.Tensor:
    """The tensor :class:`_Packer` took apart: ``torch.from_numpy`` (no copy) as ``cls`` with its attributes."""
    tensor = torch.from_numpy(array)
    if cls is not torch.Tensor:
        tensor = tensor.as_subclass(cls)
        tensor.__dict__.update(state or {})
    return tensor


class _Packer(pickle.Pickler):
    """Pickler that writes each CPU tensor as a numpy array plus its type and attributes (a ``MetaTensor``'s
    ``meta``, ``applied_operations``, ``is_batch``, packed by the same rules).

    Tensors numpy cannot hold as they are (on a device, not contiguous, requiring grad, dtypes such as bfloat16,
    conjugate or negative bits, sparse) fall back to torch's own pickling: slower, exact.
    """

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor) or obj.device.type != "cpu" or not obj.is_contiguous():
            return NotImplemented
        plain = obj if type(obj) is torch.Tensor else obj.as_subclass(torch.Tensor)
        try:
            array = plain.numpy()  # raises for requires_grad, unsupported dtypes, conj/neg bits, sparse layouts
        except (TypeError, RuntimeError):
            return NotImplemented
        state = None if type(obj) is torch.Tensor else dict(obj.__dict__)
        return _rebuild_tensor, (array, type(obj), state)


def pack_batch(batch: Any) -> bytes:
    """Pickle ``batch`` (protocol 5) with every contiguous CPU tensor in it as a numpy array.

    Args:
        batch: any picklable structure (dicts, lists, tensors, ``MetaTensor``, numpy arrays, strings, ...).

    Returns:
        One ``bytes`` object, which multiprocessing sends in one piece (no shared memory, no file descriptors).
    """
    buffer = io.BytesIO()
    _Packer(buffer, protocol=5).dump(batch)
    return buffer.getvalue()


def unpack_batch(data: bytes) -> Any:
    """The structure :func:`pack_batch` packed: equal tensors (types, dtypes, shapes, ``MetaTensor`` attributes),
    each on the memory of its unpickled numpy array, and one object for each object packed (aliases kept)."""
    return pickle.loads(data)


class _CollateAndPack:
    """What a worker runs in place of ``collate_fn``: ``collate_fn`` with the batch in private memory, then
    :func:`pack_batch`.

    torch's ``default_collate`` (and so MONAI's ``list_data_collate``) allocates its outputs in shared memory when
    ``get_worker_info()`` is set; the worker's info is hidden for the call, so ``get_worker_info()`` is ``None``
    inside ``collate_fn`` (it still is in the dataset's ``__getitem__``).
    """

    def __init__(self, collate_fn: Any) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: Any) -> bytes:
        info = getattr(_worker, "_worker_info", None)
        _worker._worker_info = None
        try:
            batch = self.collate_fn(items)
        finally:
            _worker._worker_info = info
        return pack_batch(batch)


class _PackedIterator(_MultiProcessingDataLoaderIter):
    """torch's multi-process iterator with :class:`_CollateAndPack` in the workers; the main process unpacks (and
    with ``pin_memory`` pins) each batch when it takes it."""

    # torch's base iterator sets ``self._collate_fn = loader.collate_fn`` and hands ``self._collate_fn`` to the
    # workers it starts: this property gives them the loader's collate_fn wrapped.
    @property
    def _collate_fn(self) -> Any:
        return self._packing_collate_fn

    @_collate_fn.setter
    def _collate_fn(self, collate_fn: Any) -> None:
        self._packing_collate_fn = _CollateAndPack(collate_fn)

    def _process_data(self, data: Any, worker_idx: int) -> Any:
        data = super()._process_data(data, worker_idx)  # re-raises a worker's error
        batch = unpack_batch(data)
        if self._pin_memory:  # torch's pinning thread passed the bytes through unchanged
            batch = pin_memory(batch, self._pin_memory_device)
        return batch


class PackedDataLoader(DataLoader):
    """:class:`monai.data.DataLoader` whose workers send each batch as one bytes buffer: the same batches as
    ``num_workers=0`` for a fraction of the CPU of torch's shared-memory transfer, most of it saved in the main
    process.

    With ``num_workers=0`` it is ``monai.data.DataLoader``. With workers, each worker loads the items and runs
    ``collate_fn`` as in ``DataLoader``, but with the batch in its private memory, then packs it
    (:func:`pack_batch`: one ``bytes`` object, tensors as numpy arrays); the main process unpacks it
    (:func:`unpack_batch`). Differences from ``DataLoader``: the batch's tensors are not in shared memory;
    ``get_worker_info()`` is ``None`` inside ``collate_fn``; with ``pin_memory=True`` (and an accelerator) the
    batch is pinned in the main process after unpacking instead of in torch's pinning thread.

    Measured on the angiogram bundle's 64 x 64 x 16 cines (batch size 1, two ``MetaTensor`` per study, one
    worker, ``benchmarks/speed/bench_loader_transfer.py``): CPU ms per study in the main process 12.3 -> 1.1, in
    the worker 22.9 -> 10.0 (``num_workers=0``: 7.5 in the main process).

    Args:
        dataset: dataset from which to load the data.
        num_workers: how many worker processes load the data; ``0`` loads in the main process.
        kwargs: the other arguments of :class:`monai.data.DataLoader` (``batch_size``, ``collate_fn``, ...).
    """

    def _get_iterator(self) -> _BaseDataLoaderIter:
        if self.num_workers == 0:
            return super()._get_iterator()
        return _PackedIterator(self)
