from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import Compose, FlattenSubKeysd

from monai_saliency.engines.handlers import SaliencyHandler, overlay_rgb
from monai_saliency.engines.inferers import SaliencyInferer
from monai_saliency.methods.gradients import VanillaGrad
from monai_saliency.models.small_cnn import SmallCNN
from monai_saliency.ops.normalize import minmax_normalize


def _count_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_saliency_inferer_in_evaluator_prediction_and_maps(cnn2d):
    images = torch.randn(4, 2, 16, 16)
    data = [{"image": MetaTensor(images[i], affine=torch.eye(4) * 2), "label": torch.tensor(0)} for i in range(4)]
    inferer = SaliencyInferer({"grad": lambda net: VanillaGrad(net, reduce="abs_sum")})  # not attached: dict
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
    with pytest.raises(ValueError, match="reserved"):
        SaliencyInferer({"logits": VanillaGrad(cnn2d)})
    with pytest.raises(ValueError, match="reserved"):
        SaliencyInferer({"pred": VanillaGrad(cnn2d)})


def _trainer(model, data, batch_size, lr):
    """A two-epoch SupervisedTrainer (cross-entropy, SGD) over ``data``, unshuffled."""
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=DataLoader(Dataset(data), batch_size=batch_size),
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        loss_function=torch.nn.CrossEntropyLoss(),
    )


def test_handler_in_two_epoch_trainer_writes_nifti_and_tensorboard(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(1)
    model = torch.nn.Sequential(bn, SmallCNN(2, 1, 2, width=4))
    data = [{"image": torch.randn(1, 16, 16), "label": torch.tensor(i % 2)} for i in range(8)]
    trainer = _trainer(model, data, batch_size=4, lr=0.01)
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

    handler = Recording(
        lambda n: VanillaGrad(n, reduce="abs_sum"),
        probe,
        interval=1,
        output_dir=tmp_path / "maps",
        summary_writer=writer,
    )
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


def _evaluator(network, inferer, batch_size, postprocessing=None, handlers=None, decollate=True):
    images = torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    affines = [torch.diag(torch.tensor([1.0 + i, 2.0, 1.0, 1.0])) for i in range(5)]
    data = [
        {
            "image": MetaTensor(images[i], affine=affines[i], meta={"filename_or_obj": f"/data/case{i}.png"}),
            "label": torch.tensor(i % 3),
        }
        for i in range(5)
    ]
    return images, SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=batch_size),
        network=network,
        inferer=inferer,
        postprocessing=postprocessing,
        val_handlers=handlers,
        decollate=decollate,
    )


def test_saliency_inferer_keeps_pred_and_carries_maps_to_own_keys(cnn2d, tmp_path):
    """Attached: 'pred' is what SimpleInferer gives (zoo post-processing untouched), maps have their own keys."""
    from monai.transforms import Activationsd, AsDiscreted

    post = Compose([Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True)])  # a zoo classifier's
    _, plain = _evaluator(cnn2d, None, 2, post)
    plain_preds = []
    plain.add_event_handler(Events.ITERATION_COMPLETED, lambda e: plain_preds.extend(o["pred"] for o in e.state.output))
    plain.run()
    inferer = SaliencyInferer(
        {"grad": lambda net: VanillaGrad(net, reduce="abs_sum")}, output_dir=tmp_path, output_ext=".png"
    )
    images, evaluator = _evaluator(cnn2d, inferer, 2, post, handlers=[inferer])
    outputs = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))
    evaluator.run()
    assert [torch.equal(a, o["pred"]) for a, o in zip(plain_preds, outputs)] == [True] * 5
    maps = torch.stack([o["grad"].as_tensor() for o in outputs])
    ref = VanillaGrad(cnn2d, reduce="abs_sum")(images, class_idx=cnn2d(images).argmax(1))
    torch.testing.assert_close(maps, ref)
    assert [float(o["grad"].affine[0, 0]) for o in outputs] == [1.0, 2.0, 3.0, 4.0, 5.0]  # each item's own meta
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"case{i}_grad.png" for i in range(5)]


def test_attached_inferer_writes_maps_without_decollation(cnn2d, tmp_path):
    inferer = SaliencyInferer({"grad": lambda net: VanillaGrad(net, reduce="abs_sum")}, output_dir=tmp_path)
    images, evaluator = _evaluator(cnn2d, inferer, 2, handlers=[inferer], decollate=False)
    evaluator.run()
    assert evaluator.state.output["grad"].shape == (1, 1, 16, 16)  # the last batch, still collated
    written = nib.load(str(tmp_path / "case3_grad.nii.gz"))
    ref = VanillaGrad(cnn2d, reduce="abs_sum")(images[3:4], class_idx=cnn2d(images[3:4]).argmax(1))[0, 0]
    np.testing.assert_allclose(written.get_fdata(), minmax_normalize(ref[None])[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.diag(written.affine)[:2], [4.0, 2.0])


def test_saliency_inferer_pred_mode_errors(cnn2d):
    inferer = SaliencyInferer(lambda net: VanillaGrad(net), returns="pred")
    x = torch.randn(2, 2, 16, 16)
    torch.testing.assert_close(inferer(x, cnn2d), cnn2d(x))
    assert inferer.pop_maps()["saliency"].shape == (2, 2, 16, 16)
    with pytest.raises(RuntimeError, match="no saliency maps pending"):
        inferer.pop_maps()
    inferer(x, cnn2d)
    with pytest.raises(RuntimeError, match="never collected.*val_handlers"):  # forgot to attach: maps would be lost
        inferer(x, cnn2d)
    _, evaluator = _evaluator(cnn2d, SaliencyInferer(lambda net: VanillaGrad(net)), 2)
    with pytest.raises(ValueError, match="not the engine's inferer"):
        inferer.attach(evaluator)
    with pytest.raises(ValueError, match="attached"):
        SaliencyInferer(lambda net: VanillaGrad(net), returns="dict", output_dir="x")
    with pytest.raises(RuntimeError, match="not attached.*val_handlers"):  # output_dir but the handler line forgotten
        SaliencyInferer(lambda net: VanillaGrad(net), output_dir="x")(x, cnn2d)
    with pytest.raises(ValueError, match="returns must be"):
        SaliencyInferer(lambda net: VanillaGrad(net), returns="tuple")


def test_handler_probe_first_batch_and_first_validation_batch(tmp_path):
    """probe='first_batch' keeps the first batch the trainer loads; probe=<loader> takes the first validation batch
    (collated MetaTensors with per-item affines) without a hand-written expression."""
    torch.manual_seed(0)
    model = SmallCNN(2, 1, 2, width=4)
    train = [{"image": torch.randn(1, 16, 16), "label": torch.tensor(i % 2)} for i in range(6)]
    val = [
        {
            "image": MetaTensor(torch.randn(1, 16, 16), affine=torch.diag(torch.tensor([1.0 + i, 1.0, 1.0, 1.0]))),
            "label": torch.tensor(i % 2),
        }
        for i in range(4)
    ]
    trainer = _trainer(model, train, batch_size=3, lr=0.1)
    val_loader = DataLoader(Dataset(val), batch_size=2)
    seen = {}

    class Recording(SaliencyHandler):
        def __call__(self, engine):
            maps = super().__call__(engine)
            ref = VanillaGrad(model, reduce="abs_sum")(self.probe)  # the model as it is at this epoch
            seen.setdefault(self.tag, []).append(torch.allclose(maps, minmax_normalize(ref)))
            return maps

    first = Recording(lambda n: VanillaGrad(n, reduce="abs_sum"), "first_batch", tag="train")
    validation = Recording(lambda n: VanillaGrad(n, reduce="abs_sum"), val_loader, tag="val", output_dir=tmp_path)
    first.attach(trainer)
    validation.attach(trainer)
    trainer.run()
    assert seen == {"train": [True, True], "val": [True, True]}
    torch.testing.assert_close(first.probe, torch.stack([train[i]["image"] for i in range(3)]))
    torch.testing.assert_close(
        validation.probe.as_tensor(), torch.stack([val[i]["image"].as_tensor() for i in range(2)])
    )
    affines = [nib.load(str(tmp_path / f"val_epoch0002_item{i}.nii.gz")).affine[0, 0] for i in range(2)]
    assert affines == [1.0, 2.0]
    with pytest.raises(ValueError, match="first_batch"):
        SaliencyHandler(lambda n: n, "first_btach")
    with pytest.raises(ValueError, match="data loader"):
        SaliencyHandler(lambda n: n, np.zeros((2, 1, 16, 16)))
    with pytest.raises(ValueError, match="has no 'img'"):
        SaliencyHandler(lambda n: n, val_loader, image_key="img")(trainer)
