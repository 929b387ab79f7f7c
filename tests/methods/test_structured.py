from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.methods.gradients import VanillaGrad
from monai_saliency.methods.structured import StructuredGradient, structured_prox
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.prox import solve_structured_exact, solve_structured_seed, structured_objective


@pytest.fixture
def x2d() -> torch.Tensor:
    return torch.randn(3, 2, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_map_is_l2_norm_of_seed_solution_on_scaled_gradient(cnn2d, x2d):
    net = cnn2d.double()
    g = VanillaGrad(net)(x2d, class_idx=1)
    m = g.abs().amax(dim=(1, 2, 3), keepdim=True)
    s = solve_structured_seed(g / m) * m
    expected = minmax_normalize(torch.linalg.vector_norm(s, dim=1, keepdim=True))
    sg = StructuredGradient(VanillaGrad(net))
    out = sg(x2d, class_idx=1)
    torch.testing.assert_close(out, expected)
    assert out.shape == (3, 1, 12, 12) and out.amax() == 1.0
    assert sg.last_info["objective"].shape == (3,)


def test_scale_convention_makes_lambdas_relative(x2d):
    """Multiplying the gradient by 10 scales the structured gradient by 10 and leaves the map unchanged."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 144, 2)).double()
    grad = lambda x, c: VanillaGrad(lin)(x, c)
    grad10 = lambda x, c: 10.0 * VanillaGrad(lin)(x, c)
    for solver in ("seed", "exact"):
        a = StructuredGradient(grad, nn_module=lin, solver=solver, output="structured")(x2d, class_idx=0)
        b = StructuredGradient(grad10, nn_module=lin, solver=solver, output="structured")(x2d, class_idx=0)
        torch.testing.assert_close(b, 10.0 * a)
    assert a.abs().sum() > 0


def test_exact_solver_has_lower_objective_than_seed(cnn2d, x2d):
    net = cnn2d.double()
    seed = StructuredGradient(VanillaGrad(net), solver="seed")
    exact = StructuredGradient(VanillaGrad(net), solver="exact", tol=1e-5, max_iter=3000)
    seed(x2d)
    exact(x2d)
    assert exact.last_info["converged"]
    assert (exact.last_info["objective"] < seed.last_info["objective"]).all()
    assert (exact.last_info["gap"] <= 1e-5 * exact.last_info["objective"]).all()


def test_batched_equals_per_item_loop(cnn2d, x2d):
    net = cnn2d.double()
    targets = torch.tensor([0, 2, 1])
    for solver in ("seed", "exact"):
        sg = StructuredGradient(VanillaGrad(net), solver=solver, tol=1e-6, max_iter=3000)
        batched = sg(x2d, class_idx=targets)
        looped = torch.cat([sg(x2d[i : i + 1], class_idx=int(targets[i])) for i in range(3)])
        torch.testing.assert_close(batched, looped, atol=1e-4, rtol=0)


def test_3d_metatensor_and_no_grad(cnn3d):
    x = MetaTensor(torch.randn(2, 1, 8, 8, 8), meta={"id": 7})
    with torch.no_grad():
        out = StructuredGradient(VanillaGrad(cnn3d), solver="exact", max_iter=50)(x)
    assert isinstance(out, MetaTensor) and out.meta["id"] == 7 and out.shape == (2, 1, 8, 8, 8)
    assert torch.isfinite(out).all()


def test_zero_gradient_gives_zero_map(x2d):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 144, 2)).double()
    with torch.no_grad():
        lin[1].weight.zero_()
    for solver in ("seed", "exact"):
        out = StructuredGradient(VanillaGrad(lin), solver=solver)(x2d)
        assert torch.equal(out, torch.zeros_like(out))


def test_structured_prox_reports_objective_of_both_solvers():
    g = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s, info = structured_prox(g, solver="exact", tol=1e-6, max_iter=4000)
    gn = g / g.abs().amax(dim=(1, 2, 3), keepdim=True)
    ref, _ = solve_structured_exact(gn, 0.05, 0.01, 0.2, tol=1e-6, max_iter=4000)
    torch.testing.assert_close(s, ref * info["scale"][:, None, None, None])
    torch.testing.assert_close(info["objective"], structured_objective(ref, gn, 0.05, 0.01, 0.2))
    _, seed_info = structured_prox(g, solver="seed")
    assert (seed_info["objective"] > info["objective"]).all()


def test_bad_options(cnn2d):
    vg = VanillaGrad(cnn2d)
    with pytest.raises(ValueError, match="lambda_grp"):
        StructuredGradient(vg, lambda_grp=-0.1)
    with pytest.raises(ValueError, match="lambda_tv"):
        StructuredGradient(vg, lambda_tv=float("nan"))
    with pytest.raises(ValueError, match="solver"):
        StructuredGradient(vg, solver="admm")
    with pytest.raises(ValueError, match="output"):
        StructuredGradient(vg, output="both")
    with pytest.raises(ValueError, match="steps"):
        StructuredGradient(vg, steps=-1)
    with pytest.raises(TypeError, match="nn_module"):
        StructuredGradient(lambda x, c: x)
    with pytest.raises(ValueError, match="NaN"):
        structured_prox(torch.full((1, 1, 3, 3), float("nan")))
