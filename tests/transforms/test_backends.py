"""Every transform declares its backends the MONAI way (``monai.utils.TransformBackends``), as MONAI's own
transforms do; tools that inspect ``backend`` (e.g. ``monai.transforms.utils.print_transform_backends``) read it."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from monai.transforms import Transform
from monai.utils import TransformBackends

from monai_saliency import transforms
from monai_saliency.transforms import ScaleToUnit


def test_scale_to_unit_keeps_the_input_type():
    arr = np.array([[1.0, 3.0, 2.0]])
    out = ScaleToUnit()(arr)
    assert isinstance(out, np.ndarray) and np.array_equal(out, [[0.0, 1.0, 0.5]])
    assert torch.equal(ScaleToUnit()(torch.as_tensor(arr)), torch.tensor([[0.0, 1.0, 0.5]]))


def test_backends_are_transform_backends():
    classes = [obj for obj in vars(transforms).values() if inspect.isclass(obj) and issubclass(obj, Transform)]
    assert len(classes) == len(transforms.__all__)
    for cls in classes:
        assert cls.backend and all(isinstance(b, TransformBackends) for b in cls.backend), (cls, cls.backend)


def test_dictionary_twins_share_their_array_transforms_backend():
    from monai_saliency.transforms import array, dictionary

    for name in dictionary.__all__:
        if name != "SaveMapsd":
            assert getattr(dictionary, name).backend == getattr(array, name[:-1]).backend, name
