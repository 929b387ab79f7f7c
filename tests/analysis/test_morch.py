from __future__ import annotations

import copy

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from torch import nn

from monai_saliency.analysis import MorchSaliency
from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.tanh_net import TanhNet

HESSIANS = ["gauss_newton", "gauss_newton_diag", "exact"]


class Wrapped(nn.Module):
    """Hides the TanhNet type so MorchSaliency must use autograd."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, 6, 4, generator=g, dtype=torch.float64)
    mask = torch.zeros(5, 6, 4, dtype=torch.bool)
    mask[1:4, 1:5, 1:3] = True
    y = (torch.arange(10) % 5).double()
    y = y - y.mean()
    pca = PCAProjection().fit(x, mask)
    net = TanhNet(pca.k, 3, bias=True, seed=1)
    res = net.fit(pca(x), y, weight_decay=1e-2)
    assert res.converged
    return x, mask, y, pca, net


def cost(pca: PCAProjection, head: nn.Module, x: torch.Tensor, y: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """E of eq. 2 through the full pipeline with a given basis (independent of MorchSaliency)."""
    p = copy.deepcopy(pca)
    p.basis = basis
    with torch.no_grad():
        return (y - head(p(x)).reshape(-1)).pow(2).mean()


def phi(pca, head, x, y, i: int, t: float) -> torch.Tensor:
    b = pca.basis.clone()
    b[i] = (1 - t) * b[i]
    return cost(pca, head, x, y, b)


def test_exact_equals_brute_force_loop_zeroing_one_row(setup):
    x, _mask, y, pca, net = setup
    e0 = cost(pca, net, x, y, pca.basis)
    brute = []
    for i in range(pca.n_voxels):  # the literal definition: zero one basis row at a time
        b = pca.basis.clone()
        b[i] = 0
        brute.append(cost(pca, net, x, y, b) - e0)
    brute = torch.stack(brute)
    assert brute.abs().max() > 1e-6
    for head in (net, Wrapped(net)):
        exact = MorchSaliency(head, pca).cost_changes(x, y, orders=("exact",))["exact"]
        torch.testing.assert_close(exact, brute, atol=1e-12, rtol=1e-9)


def test_first_and_second_order_against_finite_differences(setup):
    x, _mask, y, pca, net = setup
    out = MorchSaliency(net, pca, hessian="exact").cost_changes(x, y, orders=("first", "second"))
    h = 1e-4
    for i in (0, 7, pca.n_voxels - 1):
        p0, pp, pm = (phi(pca, net, x, y, i, t) for t in (0.0, h, -h))
        d1 = (pp - pm) / (2 * h)
        d2 = (pp - 2 * p0 + pm) / h**2
        torch.testing.assert_close(out["first"][i], d1, rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(out["second"][i], d1 + 0.5 * d2, rtol=1e-4, atol=1e-9)


def test_gauss_newton_exact_at_zero_residual_and_seed_diagonal(setup):
    x, _mask, _y, pca, net = setup
    y_fit = net(pca(x)).detach()  # zero residuals: Gauss-Newton = true Hessian
    sal = MorchSaliency(net, pca)
    first = sal.cost_changes(x, y_fit, orders=("first",))["first"]
    torch.testing.assert_close(first, torch.zeros_like(first), atol=1e-14, rtol=0)
    gn = MorchSaliency(net, pca, hessian="gauss_newton").cost_changes(x, y_fit, orders=("second",))["second"]
    full = MorchSaliency(net, pca, hessian="exact").cost_changes(x, y_fit, orders=("second",))["second"]
    torch.testing.assert_close(gn, full, rtol=1e-12, atol=1e-16)
    diag = MorchSaliency(net, pca, hessian="gauss_newton_diag").cost_changes(x, y_fit, orders=("second",))["second"]
    h = 1e-4
    i = 5
    # seed eq. 10: (1/2) sum_k d2E/dB_ik^2 * B_ik^2, each second derivative by finite differences on one entry
    terms = []
    for k in range(pca.k):
        vals = []
        for t in (-h, 0.0, h):
            b = pca.basis.clone()
            b[i, k] = b[i, k] + t
            vals.append(cost(pca, net, x, y_fit, b))
        terms.append(0.5 * (vals[0] - 2 * vals[1] + vals[2]) / h**2 * pca.basis[i, k] ** 2)
    torch.testing.assert_close(diag[i], torch.stack(terms).sum(), rtol=1e-4, atol=1e-12)
    assert not torch.allclose(diag, gn)  # the cross-k terms matter


@pytest.mark.parametrize("hessian", HESSIANS)
def test_autograd_path_equals_closed_form(setup, hessian):
    x, _mask, y, pca, net = setup
    closed = MorchSaliency(net, pca, hessian=hessian).cost_changes(x, y)
    auto = MorchSaliency(Wrapped(net), pca, hessian=hessian).cost_changes(x, y)
    for k in closed:
        torch.testing.assert_close(auto[k], closed[k], rtol=1e-10, atol=1e-15)


def test_linear_head_second_order_is_exact(setup):
    x, _mask, y, pca, _ = setup
    lin = nn.Linear(pca.k, 1).double()
    torch.manual_seed(0)
    nn.init.normal_(lin.weight, std=0.1)
    out = MorchSaliency(lin, pca, hessian="gauss_newton").cost_changes(x, y)
    torch.testing.assert_close(out["second"], out["exact"], rtol=1e-10, atol=1e-14)
    assert (out["first"] - out["exact"]).abs().max() > 1e-8


def test_chunking_does_not_change_results(setup):
    x, _mask, y, pca, net = setup
    for head in (net, Wrapped(net)):
        big = MorchSaliency(head, pca).cost_changes(x, y)
        small = MorchSaliency(head, pca, chunk_bytes=2**16).cost_changes(x, y)
        for k in big:
            torch.testing.assert_close(small[k], big[k], rtol=1e-12, atol=1e-16)


def test_voxel_ranges_concatenate_to_the_full_result(setup):
    x, _mask, y, pca, net = setup
    sal = MorchSaliency(net, pca)
    full = sal.cost_changes(x, y)
    n = pca.n_voxels
    parts = [sal.cost_changes(x, y, voxel_range=r) for r in ((0, 7), (7, 7), (7, n))]
    for k in full:
        torch.testing.assert_close(torch.cat([p[k] for p in parts]), full[k], rtol=1e-12, atol=1e-16)
    with pytest.raises(ValueError, match="voxel_range"):
        sal.cost_changes(x, y, voxel_range=(3, n + 1))


def test_float32_exact_is_accurate(setup):
    x, _mask, y, pca, net = setup
    ref = MorchSaliency(net, pca).cost_changes(x, y, orders=("exact",))["exact"]
    f32 = MorchSaliency(net, pca, dtype=torch.float32).cost_changes(x, y, orders=("exact",))["exact"]
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), ref, rtol=1e-3, atol=1e-6 * float(ref.abs().max()))


def test_volume_output_mask_geometry_and_clipping(setup):
    x, mask, y, pca, net = setup
    y = y.flip(0)  # other targets: large residuals of both signs, so first-order values of both signs
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    sal = MorchSaliency(net, pca, order="first")
    vol = sal(MetaTensor(x, affine=affine), y)
    assert isinstance(vol, MetaTensor) and tuple(vol.shape) == (1, *mask.shape)
    torch.testing.assert_close(vol.affine.double(), affine)
    flat = sal.cost_changes(x, y, orders=("first",))["first"]
    assert (vol.as_tensor()[0][~mask] == 0).all()
    torch.testing.assert_close(vol.as_tensor()[0][mask], flat)
    assert (flat < 0).any() and (flat > 0).any()
    clipped = MorchSaliency(net, pca, order="first", clip_negative=True)(x, y)
    torch.testing.assert_close(clipped.as_tensor()[0][mask], flat.clamp_min(0))


def test_collated_batch_of_volumes_on_one_grid_or_a_clear_error(setup):
    """Volumes collated by a MONAI DataLoader (batched MetaTensor, one affine per volume): the map gets their shared
    affine; volumes on different grids cannot share one map and are refused by name."""
    x, _mask, y, pca, net = setup
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    items = [{"image": MetaTensor(v[None], affine=affine.clone())} for v in x]
    batch = next(iter(DataLoader(Dataset(items), batch_size=len(items))))["image"]
    assert batch.is_batch and batch.affine.shape == (len(items), 4, 4)
    sal = MorchSaliency(net, pca, order="first")
    vol = sal(batch, y)
    torch.testing.assert_close(vol.affine.double(), affine)
    torch.testing.assert_close(vol.as_tensor(), sal(x, y).as_tensor())
    shifted = affine.clone()
    shifted[:3, 3] += 1.0  # one volume one voxel-ish off the others
    items[3]["image"].affine = shifted
    moved = next(iter(DataLoader(Dataset(items), batch_size=len(items))))["image"]
    with pytest.raises(ValueError, match="different affines"):
        sal(moved, y)


def test_retraining_tiny_problem(setup):
    x, mask, y, pca, net = setup
    sal = MorchSaliency(net, pca)
    voxels = torch.tensor([0, 3, 11])
    retrained = sal.retrain(x, y, voxels)
    exact = sal.cost_changes(x, y, orders=("exact",))["exact"][voxels]
    # retraining minimises E + wd|theta|^2, so it can only do better than keeping the weights (E_c)
    assert (retrained <= exact + 1e-10).all()
    # independent reference: a separate TanhNet fitted by L-BFGS on the perturbed basis, warm-started
    ref_net = copy.deepcopy(net)
    ref_net.fit(pca(x), y, weight_decay=1e-2, optimizer="lbfgs", tol=1e-7, reinit=False)
    with torch.no_grad():
        e_ref = (y - ref_net(pca(x))).pow(2).mean()
    for n, i in enumerate(voxels.tolist()):
        b = pca.basis.clone()
        b[i] = 0
        p = copy.deepcopy(pca)
        p.basis = b
        m = copy.deepcopy(net)
        m.fit(p(x), y, weight_decay=1e-2, optimizer="lbfgs", tol=1e-7, reinit=False)
        with torch.no_grad():
            de = float((y - m(p(x))).pow(2).mean() - e_ref)
        assert abs(float(retrained[n]) - de) < 1e-6 + 1e-3 * abs(de)
    # the volume form puts values at the chosen voxels only
    vol = sal(x, y, order="retrain", voxels=voxels)
    flat = vol.as_tensor()[0][mask]
    torch.testing.assert_close(flat[voxels], retrained)
    assert (flat[[i for i in range(pca.n_voxels) if i not in voxels.tolist()]] == 0).all()


def test_retraining_generic_head_matches_tanh_closed_form(setup):
    x, _mask, y, pca, _ = setup
    net = TanhNet(pca.k, 3, seed=2)  # no biases: the generic path's penalty on all parameters is then the same
    net.fit(pca(x), y, weight_decay=1e-2)
    mlp = nn.Sequential(nn.Linear(pca.k, 3, bias=False), nn.Tanh(), nn.Linear(3, 1, bias=False)).double()
    with torch.no_grad():
        mlp[0].weight.copy_(net.weight_in)
        mlp[2].weight.copy_(net.weight_out[None])
    voxels = torch.tensor([2, 9])
    b = MorchSaliency(mlp, pca, weight_decay=1e-2).retrain(x, y, voxels)
    c = MorchSaliency(net, pca).retrain(x, y, voxels)  # weight decay taken from net.fit_result
    torch.testing.assert_close(b, c, rtol=1e-6, atol=1e-12)
    assert b.abs().min() > 1e-8


def test_bad_inputs(setup):
    x, mask, y, pca, net = setup
    sal = MorchSaliency(net, pca)
    with pytest.raises(ValueError, match="at least 2"):
        sal(x[:1], y[:1])
    with pytest.raises(ValueError, match="targets"):
        sal(x, y[:-1])
    bad = x.clone()
    bad[0][mask] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sal(bad, y)
    with pytest.raises(ValueError, match="shape"):
        sal(x[:, :-1], y)
    with pytest.raises(ValueError, match="order"):
        sal(x, y, order="third")
    with pytest.raises(ValueError, match="voxels"):
        sal(x, y, order="retrain")
    with pytest.raises(ValueError, match=r"\[0, "):
        sal.retrain(x, y, [pca.n_voxels])
    with pytest.raises(ValueError, match="hessian"):
        MorchSaliency(net, pca, hessian="newton")
    with pytest.raises(ValueError, match="not fitted"):
        MorchSaliency(net, PCAProjection())
    with pytest.raises(ValueError, match="K="):
        MorchSaliency(TanhNet(pca.k + 1, 2), pca)
    with pytest.raises(ValueError, match="one value per example"):
        MorchSaliency(nn.Linear(pca.k, 2).double(), pca)(x, y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uncentred_projection_and_input_dtype(setup, dtype):
    x, mask, y, _, _ = setup
    pca = PCAProjection(center=False).fit(x, mask)
    assert pca.k == x.shape[0]  # no centring: rank J
    net = TanhNet(pca.k, 2, seed=0)
    net.fit(pca(x), y, weight_decay=1e-2)
    xin = x.to(dtype)
    e0 = cost(pca, net, xin.double(), y, pca.basis)
    brute = []
    for i in range(pca.n_voxels):
        b = pca.basis.clone()
        b[i] = 0
        brute.append(cost(pca, net, xin.double(), y, b) - e0)
    out = MorchSaliency(net, pca, dtype=dtype).cost_changes(xin, y)
    tol = {"rtol": 1e-9, "atol": 1e-13} if dtype == torch.float64 else {"rtol": 2e-3, "atol": 1e-6}
    torch.testing.assert_close(out["exact"].double(), torch.stack(brute), **tol)
    ref = MorchSaliency(Wrapped(net), pca).cost_changes(xin.double(), y)
    for k in ("first", "second"):
        torch.testing.assert_close(out[k].double(), ref[k], **tol)


def test_generic_head_with_dropout_is_explained_in_eval_mode(setup):
    """A head with dropout left in train mode: the saliency is the eval-mode one (deterministic), flags restored."""
    x, _mask, y, pca, net = setup
    mlp = nn.Sequential(nn.Linear(pca.k, 3), nn.Tanh(), nn.Dropout(0.5), nn.Linear(3, 1)).double()
    with torch.no_grad():
        mlp[0].weight.copy_(net.weight_in)
        mlp[3].weight.copy_(net.weight_out[None])
    ref = MorchSaliency(mlp.eval(), pca, order="first", weight_decay=0.0)(x, y)
    mlp.train()
    for _ in range(2):
        torch.testing.assert_close(MorchSaliency(mlp, pca, order="first", weight_decay=0.0)(x, y), ref)
    assert mlp.training and mlp[2].training


# ---------------------------------------------------------------- heads: any differentiable module, or a capability


def _mlp_copy_of(net: TanhNet) -> nn.Sequential:
    """The same function as ``net`` (eq. 1 with both biases) as a plain nn.Sequential: no capability, autograd."""
    a, k = net.weight_in.shape
    mlp = nn.Sequential(nn.Linear(k, a), nn.Tanh(), nn.Linear(a, 1)).double()
    with torch.no_grad():
        mlp[0].weight.copy_(net.weight_in)
        mlp[0].bias.copy_(net.bias_in)
        mlp[2].weight.copy_(net.weight_out[None])
        mlp[2].bias.copy_(net.bias_out)
    return mlp


class ClosedFormTanh(nn.Module):
    """A user's eq. 1 head, not a TanhNet, that implements the TanhHead capability (``tanh_parameters()``)."""

    def __init__(self, k: int, a: int, lie: bool = False) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(k, a).double()
        self.out = nn.Linear(a, 1).double()
        self.lie = lie
        self.calls = 0

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden_layer(v)))[:, 0]

    def tanh_parameters(self):
        self.calls += 1
        w_out = self.out.weight[0].detach()
        return (
            self.hidden_layer.weight.detach(),
            -w_out if self.lie else w_out,
            self.hidden_layer.bias.detach(),
            (self.out.bias[0].detach()),
        )


@pytest.fixture(scope="module")
def biased_setup(setup):
    x, _mask, y, pca, _ = setup
    net = TanhNet(pca.k, 3, bias=True, output_bias=True, seed=3)
    assert net.fit(pca(x), y, weight_decay=1e-2).converged
    return x, y, pca, net


@pytest.mark.parametrize("hessian", HESSIANS)
def test_plain_mlp_head_equals_the_tanh_closed_form(biased_setup, hessian):
    """An nn.Sequential computing eq. 1 has no capability: it takes the autograd path and gives the closed form's
    numbers for every order."""
    x, y, pca, net = biased_setup
    mlp = _mlp_copy_of(net)
    sal = MorchSaliency(mlp, pca, hessian=hessian)
    assert not sal.closed_form
    auto = sal.cost_changes(x, y)
    closed = MorchSaliency(net, pca, hessian=hessian).cost_changes(x, y)
    for k in closed:
        torch.testing.assert_close(auto[k], closed[k], rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="tanh_parameters"):
        MorchSaliency(mlp, pca, closed_form=True)


def test_deeper_mlp_head_exact_and_first_order_against_brute_force(setup):
    """Any differentiable head: a two-hidden-layer MLP, exact cost changes against the loop that zeroes each basis
    row and re-runs the pipeline, and the first order against a central difference of phi_i at 0."""
    x, _mask, y, pca, _ = setup
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(pca.k, 4), nn.SiLU(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    out = MorchSaliency(mlp, pca).cost_changes(x, y, orders=("first", "exact"))
    e0 = cost(pca, mlp, x, y, pca.basis)
    brute = torch.stack([phi(pca, mlp, x, y, i, 1.0) - e0 for i in range(pca.n_voxels)])
    torch.testing.assert_close(out["exact"], brute, rtol=1e-9, atol=1e-13)
    h = 1e-5
    fd = torch.stack([(phi(pca, mlp, x, y, i, h) - phi(pca, mlp, x, y, i, -h)) / (2 * h) for i in range(6)])
    torch.testing.assert_close(out["first"][:6], fd, rtol=1e-5, atol=1e-12)


def test_custom_head_with_the_closed_form_capability_is_used(biased_setup):
    """A head that is not a TanhNet but implements tanh_parameters() gets the closed forms (found by the capability,
    no isinstance), with the autograd path's numbers; a head whose declared parameters do not reproduce its output
    is refused instead of giving a silently wrong map."""
    x, y, pca, net = biased_setup
    head = ClosedFormTanh(pca.k, 3)
    with torch.no_grad():
        head.hidden_layer.weight.copy_(net.weight_in)
        head.hidden_layer.bias.copy_(net.bias_in)
        head.out.weight.copy_(net.weight_out[None])
        head.out.bias.copy_(net.bias_out[None])
    sal = MorchSaliency(head, pca, hessian="exact")
    assert sal.closed_form
    head.calls = 0
    closed = sal.cost_changes(x, y)
    assert head.calls > 0  # the declared parameters were read: the closed-form path ran
    auto = MorchSaliency(head, pca, hessian="exact", closed_form=False).cost_changes(x, y)
    for k in closed:
        torch.testing.assert_close(closed[k], auto[k], rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(sal(x, y, order="exact"), MorchSaliency(net, pca)(x, y, order="exact"))
    liar = ClosedFormTanh(pca.k, 3, lie=True)
    with pytest.raises(ValueError, match="do not reproduce its output"):
        MorchSaliency(liar, pca).cost_changes(x, y, orders=("first",))
    MorchSaliency(liar, pca, closed_form=False).cost_changes(x, y, orders=("first",))  # autograd: its own output
    with pytest.raises(ValueError, match="K="):
        MorchSaliency(ClosedFormTanh(pca.k + 1, 3), pca)


def test_is_an_analysis_not_an_explainer(setup):
    from monai_saliency.methods.base import Explainer

    x, _mask, y, pca, net = setup
    sal = MorchSaliency(net, pca)
    assert not isinstance(sal, Explainer)
    with pytest.raises(TypeError):
        sal(x, y, class_idx=0)  # no class: one map per training set


class OwnObjective(nn.Module):
    """A head that is not a TanhNet but brings its own training objective (the RetrainableHead capability): here
    the TanhNet's, whose ridge spares the biases."""

    def __init__(self, net: TanhNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v)

    def flat_parameters(self) -> torch.Tensor:
        return self.net.flat_parameters()

    def objective_fn(self, v: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0):
        return self.net.objective_fn(v, y, weight_decay)


def test_retraining_uses_the_heads_own_objective(biased_setup):
    """Retraining re-minimises a RetrainableHead's own objective (found by the capability, not by the class): the
    TanhNet's numbers, not those of the generic ridge on every parameter (which also penalises the biases)."""
    x, y, pca, net = biased_setup
    voxels = torch.tensor([1, 7])
    own = MorchSaliency(OwnObjective(net), pca, weight_decay=1e-2).retrain(x, y, voxels)
    ref = MorchSaliency(net, pca, weight_decay=1e-2).retrain(x, y, voxels)
    generic = MorchSaliency(Wrapped(net), pca, weight_decay=1e-2).retrain(x, y, voxels)
    torch.testing.assert_close(own, ref, rtol=1e-9, atol=1e-14)
    assert (generic - ref).abs().max() > 1e-3 * ref.abs().max()
