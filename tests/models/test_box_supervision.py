"""Box supervision (training-only auxiliary lesion map): targets against a brute-force loop, the plain state_dict."""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_saliency.data.synthetic.angiogram_clinical import make_clinical_angiogram_dataset
from monai_saliency.models.box_supervision import BoxSupervision, box_target_grid, lesion_crops
from monai_saliency.models.training import TrainConfig, train_video_classifier
from monai_saliency.models.video import VideoLesionNet


def _brute_force(boxes, grades, shape, stride):
    """Pixel loop: a cell holds 1 + the highest grade of the boxes with a pixel y0 <= y < y1, x0 <= x < x1 in it."""
    n, slots, t = boxes.shape[:3]
    out = torch.zeros(n, t, shape[0] // stride, shape[1] // stride, dtype=torch.uint8)
    for i, k, f in itertools.product(range(n), range(slots), range(t)):
        if grades[i, k] < 0:
            continue
        y0, x0, y1, x1 = boxes[i, k, f].tolist()
        for y, x in itertools.product(range(shape[0]), range(shape[1])):
            if y0 <= y < y1 and x0 <= x < x1:
                cell = (i, f, y // stride, x // stride)
                out[cell] = max(int(out[cell]), int(grades[i, k]) + 1)
    return out


def test_box_target_grid_matches_pixel_loop_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(3, 2, 2, 2, generator=g) * 40 - 6  # fractional edges, some outside the 32 x 32 image
    size = torch.rand(3, 2, 2, 2, generator=g) * 14 - 1  # a few empty (negative-size) boxes
    boxes = torch.cat([corner, corner + size], -1)
    grades = torch.tensor([[1, 0], [2, -1], [-1, 1]])
    for stride in (8, 4, 1):
        got = box_target_grid(boxes, grades, (32, 32), stride)
        torch.testing.assert_close(got, _brute_force(boxes, grades, (32, 32), stride))
    assert set(box_target_grid(boxes, grades, (32, 32), 8).unique().tolist()) == {0, 1, 2, 3}


def test_box_target_grid_equals_pooled_generator_masks():
    b = make_clinical_angiogram_dataset(6, shape=(64, 64), frames=4, seed=3)
    codes = (b.lesion_masks() * (b.grades + 1).view(6, -1, 1, 1, 1)).amax(1).float()  # (N, T, H, W)
    pooled = torch.nn.functional.max_pool2d(codes, 8).to(torch.uint8)
    torch.testing.assert_close(box_target_grid(b.boxes, b.grades, (64, 64), 8), pooled)
    assert (b.labels == (pooled.flatten(1).amax(1) >= 2).long()).all()  # positive <=> a moderate-or-severe cell
    assert pooled.eq(1).any() and pooled.ge(2).any()


def test_box_target_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        box_target_grid(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1), (30, 30), 8)
    with pytest.raises(ValueError, match="grades"):
        box_target_grid(torch.zeros(1, 2, 1, 4), torch.zeros(1, 1), (32, 32), 8)


def test_box_supervised_training_saves_a_plain_video_lesion_net(tmp_path):
    b = make_clinical_angiogram_dataset(8, shape=(64, 64), frames=4, seed=1)
    targets = box_target_grid(b.boxes, b.grades, (64, 64), 8)

    def data(n: int, seed: int):
        return b.display()[:n], b.labels[:n], targets[:n]

    cfg = TrainConfig(n_train=8, n_val=8, n_test=8, shape=(64, 64), frames=4, width=2, epochs=2, batch_size=4)
    net = VideoLesionNet(width=2, temporal_window=1, stem_stride=2)
    heads = []

    def aux(model):
        heads.append(BoxSupervision(model, VideoLesionNet.cam_layer, 8, weight=1.0))
        return heads[0]

    model, summary = train_video_classifier(cfg, log=None, data=data, model=net, aux=aux)
    assert summary["aux_loss"] > 0 and summary["aux_pos_weight"] > 1
    assert not model.features.stage3._forward_hooks  # the hook is gone
    torch.save(model.state_dict(), tmp_path / "m.pt")
    plain = VideoLesionNet(width=2, temporal_window=1, stem_stride=2)
    plain.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))  # strict: no auxiliary keys
    assert set(model.state_dict()) == set(plain.state_dict())
    assert heads[0].head.weight.grad is not None  # the auxiliary head was trained
    with pytest.raises(ValueError, match="targets"):
        train_video_classifier(cfg, log=None, data=lambda n, s: data(n, s)[:2], model=net, aux=aux)


def test_lesion_crops_match_a_loop_and_avoid_lesions():
    b = make_clinical_angiogram_dataset(5, shape=(64, 64), frames=4, seed=2)
    x = b.display()
    windows, labels, centres = lesion_crops(x, b.boxes, b.grades, size=16, background=3, jitter=0, seed=0)
    active = (b.grades >= 0).nonzero().tolist()
    assert windows.shape == (len(active) + 15, 4, 16, 16) and labels.shape == (len(active) + 15,)
    for j, (i, k) in enumerate(active):  # lesion windows: centred on the frame-mean box centre, label = grade >= 1
        cy, cx = ((b.boxes[i, k, :, :2] + b.boxes[i, k, :, 2:]) / 2).mean(0).long().tolist()
        assert centres[j].tolist() == [i, cy, cx] and labels[j] == int(b.grades[i, k] >= 1)
    fill = x.mean((1, 2, 3))
    tmin = x.amin(1)
    for j in range(len(windows)):  # every window against a pixel loop (outside the image: the cine's mean)
        i, cy, cx = centres[j].tolist()
        for dy, dx in itertools.product(range(16), range(16)):
            y, xx = cy - 8 + dy, cx - 8 + dx
            want = x[i, :, y, xx] if 0 <= y < 64 and 0 <= xx < 64 else fill[i].expand(4)
            torch.testing.assert_close(windows[j, :, dy, dx], want)
        if j >= len(active):  # background: a dark pixel, far from every lesion of its cine, label 0
            assert labels[j] == 0 and tmin[i, cy, cx] <= torch.quantile(tmin[i].flatten(), 0.15)
            c = ((b.boxes[i, :, :, :2] + b.boxes[i, :, :, 2:]) / 2).mean(1)[b.grades[i] >= 0]
            assert ((c - torch.tensor([cy, cx])).pow(2).sum(1) > 12**2).all()
    assert labels[: len(active)].sum() == int((b.grades >= 1).sum()) > 0
    assert ((centres[:, 1:] < 8) | (centres[:, 1:] >= 56)).any()  # some windows reach outside: the fill is tested


def test_dihedral_moves_coarse_targets_with_the_cines():
    """The augmentation flips/transposes a target grid exactly as the cine it was pooled from (and draws as before)."""
    from monai_saliency.models.training import _dihedral

    x = torch.rand(16, 1, 3, 32, 32)
    target = torch.nn.functional.max_pool3d(x, (1, 8, 8))  # (16, 1, 3, 4, 4): a grid pooled from the cine
    xa, ta = _dihedral(x, torch.Generator().manual_seed(5), target)
    torch.testing.assert_close(ta, torch.nn.functional.max_pool3d(xa, (1, 8, 8)))
    assert not torch.equal(xa, x)
    torch.testing.assert_close(_dihedral(x, torch.Generator().manual_seed(5)), xa)  # same draws without targets
