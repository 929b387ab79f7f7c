from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import Compose, FlattenSubKeysd

from monai_saliency.engines.handlers import SaliencyHandler, overlay_rgb
from monai_saliency.engines.inferers import SaliencyInferer
from monai_saliency.methods.gradients import VanillaGrad
from monai_saliency.models.small_cnn import SmallCNN


def _count_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_saliency_inferer_in_evaluator_prediction_and_maps(cnn2d):
    images = torch.randn(4, 2, 16, 16)
    data = [{"image": MetaTensor(images[i], affine=torch.eye(4) * 2), "label": torch.tensor(0)} for i in range(4)]
    inferer = SaliencyInferer({"grad": lambda net: VanillaGrad(net, reduce="abs_sum")})
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=cnn2d,
        inferer=inferer,
        postprocessing=Compose([FlattenSubKeysd(keys="pred")]),
    )
    evaluator.run()
    out = evaluator.state.output
    assert {"logits", "grad"} <= set(out[0])
    logits = torch.stack([o["logits"] for o in out])
    torch.testing.assert_close(logits, cnn2d(images[2:]))
    maps = torch.stack([o["grad"] for o in out])
    ref = VanillaGrad(cnn2d, reduce="abs_sum")(images[2:], class_idx=cnn2d(images[2:]).argmax(1))
    torch.testing.assert_close(maps.as_tensor(), ref)
    assert isinstance(out[0]["grad"], MetaTensor)
    torch.testing.assert_close(out[0]["grad"].affine, torch.eye(4).double() * 2, check_dtype=False)


def test_saliency_inferer_binds_once_and_checks_network(cnn2d):
    inferer = SaliencyInferer(lambda net: VanillaGrad(net))
    x = torch.randn(2, 2, 16, 16)
    first = inferer(x, cnn2d)
    bound = inferer._bound["saliency"]
    for _ in range(5):
        inferer(x, cnn2d)
    assert inferer._bound["saliency"] is bound
    assert first["saliency"].shape == (2, 2, 16, 16)
    other = SmallCNN(2, 2, 3)
    with pytest.raises(ValueError, match="different model"):
        SaliencyInferer({"g": VanillaGrad(other)})(x, cnn2d)
    with pytest.raises(ValueError, match="collides"):
        SaliencyInferer({"logits": VanillaGrad(cnn2d)})


def test_handler_in_two_epoch_trainer_writes_nifti_and_tensorboard(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(1)
    model = torch.nn.Sequential(bn, SmallCNN(2, 1, 2, width=4))
    data = [{"image": torch.randn(1, 16, 16), "label": torch.tensor(i % 2)} for i in range(8)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=DataLoader(Dataset(data), batch_size=4),
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        loss_function=torch.nn.CrossEntropyLoss(),
    )
    probe = MetaTensor(torch.randn(2, 1, 16, 16), affine=torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0])))
    writer = tb.SummaryWriter(log_dir=str(tmp_path / "tb"))
    seen_stats = []

    class Recording(SaliencyHandler):
        def __call__(self, engine):
            before = bn.running_mean.clone()
            maps = super().__call__(engine)
            seen_stats.append(torch.equal(before, bn.running_mean))  # eval mode: BN statistics untouched
            assert model.training  # the trainer's mode is restored
            return maps

    handler = Recording(lambda n: VanillaGrad(n, reduce="abs_sum"), probe, interval=1, output_dir=tmp_path / "maps",
                        summary_writer=writer)
    handler.attach(trainer)
    hooks_before = _count_hooks(model)
    trainer.run()
    writer.close()
    assert seen_stats == [True, True]
    assert _count_hooks(model) == hooks_before
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert files == [f"saliency_epoch{e:04d}_item{i}.nii.gz" for e in (1, 2) for i in (0, 1)]
    img = nib.load(str(tmp_path / "maps" / files[0]))
    np.testing.assert_allclose(np.diag(img.affine)[:2], [0.5, 0.5])
    assert 0 <= img.get_fdata().min() and img.get_fdata().max() <= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == ["saliency/item0", "saliency/item1"]
    assert [e.step for e in acc.Images("saliency/item0")] == [1, 2]


def test_overlay_rgb_and_handler_bad_input():
    rgb = overlay_rgb(torch.rand(5, 8, 9), torch.rand(5, 8, 9))
    assert rgb.shape == (8, 9, 3) and 0 <= rgb.min() and rgb.max() <= 1
    with pytest.raises(ValueError, match="shapes differ"):
        overlay_rgb(torch.rand(8, 8), torch.rand(8, 9))
    with pytest.raises(ValueError, match="interval"):
        SaliencyHandler(lambda n: n, torch.rand(1, 1, 4, 4), interval=0)
    with pytest.raises(ValueError, match="probe"):
        SaliencyHandler(lambda n: n, torch.rand(4, 4))
