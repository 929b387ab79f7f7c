from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from skimage.restoration import denoise_tv_chambolle

from monai_saliency.ops.prox import (
    divergence,
    forward_diff,
    group_shrink,
    soft_threshold,
    solve_structured_exact,
    solve_structured_seed,
    sparse_group_prox,
    structured_objective,
    tv_diffusion_step,
    tv_norm,
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_soft_threshold_closed_form():
    x = _rand(4, 3, 5)
    ref = np.sign(x.numpy()) * np.maximum(np.abs(x.numpy()) - 0.3, 0)
    np.testing.assert_allclose(soft_threshold(x, 0.3).numpy(), ref)
    assert torch.equal(soft_threshold(x, 0.0), x)


def test_group_shrink_closed_form_and_zero_group():
    x = _rand(2, 3, 4, 4)
    x[0, :, 1, 1] = 0.0
    out = group_shrink(x, 0.7)
    a = x.numpy()
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    ref = np.where(norm > 0, a * np.maximum(1 - 0.7 / np.where(norm > 0, norm, 1), 0), 0)
    np.testing.assert_allclose(out.numpy(), ref)
    assert torch.isfinite(out).all() and (out[0, :, 1, 1] == 0).all()
    # groups below the threshold vanish entirely; kept groups keep their direction
    small = torch.linalg.vector_norm(x, dim=1) <= 0.7
    assert (out.permute(0, 2, 3, 1)[small] == 0).all()


def test_sparse_group_prox_is_the_prox_by_brute_force():
    """Closed form vs numerical minimisation of 1/2||s - v||^2 + l1 ||s||_1 + lg ||s||_2 for single groups."""
    rng = np.random.default_rng(0)
    l1, lg = 0.2, 0.5
    for _ in range(6):
        v = rng.normal(size=3) * 1.5
        closed = sparse_group_prox(torch.from_numpy(v)[None, :, None], l1, lg)[0, :, 0].numpy()

        def f(s, v=v):
            return 0.5 * np.sum((s - v) ** 2) + l1 * np.abs(s).sum() + lg * np.linalg.norm(s)

        best = min(
            (
                minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
                for x0 in (v, np.zeros(3), closed + 0.1)
            ),
            key=lambda r: r.fun,
        )
        assert f(closed) <= best.fun + 1e-9
        np.testing.assert_allclose(closed, best.x, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (1, 2, 4, 5, 3), (2, 1, 9)])
def test_divergence_is_negative_adjoint_of_forward_diff(shape):
    x = _rand(*shape)
    nd = len(shape) - 2
    p = _rand(shape[0], shape[1], nd, *shape[2:], seed=1)
    lhs = (forward_diff(x) * p).sum()
    rhs = -(x * divergence(p)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_forward_diff_and_tv_norm_against_numpy():
    x = _rand(2, 3, 5, 6)
    a = x.numpy()
    gy = np.concatenate([np.diff(a, axis=2), np.zeros((2, 3, 1, 6))], axis=2)
    gx = np.concatenate([np.diff(a, axis=3), np.zeros((2, 3, 5, 1))], axis=3)
    np.testing.assert_allclose(forward_diff(x).numpy(), np.stack([gy, gx], 2))
    np.testing.assert_allclose(tv_norm(x).numpy(), np.sqrt(gy**2 + gx**2).sum(axis=(1, 2, 3)))


def test_tv_diffusion_step_is_a_gradient_step_on_tv():
    x = _rand(1, 2, 6, 6).requires_grad_(True)
    (grad,) = torch.autograd.grad(tv_norm(x).sum(), x)
    step = tv_diffusion_step(x.detach(), 0.1, eps=0.0 + 1e-300)
    torch.testing.assert_close(step, x.detach() - 0.1 * grad)


def test_exact_with_zero_tv_is_sparse_group_prox():
    g = _rand(3, 4, 6, 5)
    s, info = solve_structured_exact(g, lam_grp=0.3, lam_l1=0.1, lam_tv=0.0)
    torch.testing.assert_close(s, sparse_group_prox(g, 0.1, 0.3))
    assert info["converged"]


@pytest.mark.parametrize("shape", [(2, 2, 12, 14), (1, 2, 6, 7, 8)])
def test_exact_pure_tv_matches_skimage_chambolle(shape):
    g = _rand(*shape, seed=3)
    s, info = solve_structured_exact(g, 0.0, 0.0, 0.25, tol=1e-7, max_iter=5000)
    assert info["converged"]
    for b in range(shape[0]):
        ref = denoise_tv_chambolle(g[b].numpy(), weight=0.25, eps=1e-12, max_num_iter=5000, channel_axis=0)
        # primal error <= sqrt(2 gap) (1-strong convexity) plus skimage's own error
        bound = float(np.sqrt(2 * info["gap"][b])) + 1e-3
        assert np.linalg.norm(s[b].numpy() - ref) <= bound


def test_exact_beats_seed_and_is_optimal_to_tolerance():
    g = _rand(2, 3, 16, 16, seed=4)
    g = g / g.abs().amax(dim=(1, 2, 3), keepdim=True)
    lam = {"lam_grp": 0.05, "lam_l1": 0.01, "lam_tv": 0.2}
    s, info = solve_structured_exact(g, **lam, tol=1e-5, max_iter=5000)
    obj = structured_objective(s, g, **lam)
    torch.testing.assert_close(obj, info["objective"])
    assert info["converged"] and (info["gap"] <= 1e-5 * obj).all()
    seed = solve_structured_seed(g, 0.05, 0.01)
    assert (obj < structured_objective(seed, g, **lam)).all()
    # no random perturbation (of any scale) decreases the objective by more than the certified gap
    gen = torch.Generator().manual_seed(9)
    for scale in (1e-1, 1e-2, 1e-3):
        for _ in range(5):
            d = scale * torch.randn(s.shape, generator=gen, dtype=s.dtype)
            assert (structured_objective(s + d, g, **lam) >= obj - info["gap"] - 1e-12).all()


def test_seed_cycle_against_numpy_reference():
    """Literal numpy transcription of the seed's cycle (2D), eps = 1e-8."""
    g = _rand(1, 2, 7, 8, seed=5)
    g = g / g.abs().max()
    lg, l1, eta, eps = 0.05, 0.01, 0.15, 1e-8

    def div(px, py):
        dx = np.concatenate([px[..., :, :1], px[..., :, 1:-1] - px[..., :, :-2], -px[..., :, -2:-1]], axis=-1)
        dy = np.concatenate([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]], axis=-2)
        return dx + dy

    s = g[0].numpy().copy()
    for _ in range(12):
        n = np.linalg.norm(s, axis=0, keepdims=True)
        s = s * np.maximum(1 - lg / (n + eps), 0)
        for _ in range(5):
            gy = np.concatenate([np.diff(s, axis=1), np.zeros((2, 1, 8))], axis=1)
            gx = np.concatenate([np.diff(s, axis=2), np.zeros((2, 7, 1))], axis=2)
            m = np.sqrt(gx**2 + gy**2) + eps
            s = s + eta * div(gx / m, gy / m)
        s = np.sign(s) * np.maximum(np.abs(s) - l1, 0)
    np.testing.assert_allclose(solve_structured_seed(g)[0].numpy(), s, atol=1e-12)


def test_negative_weights_rejected():
    g = _rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="lambda_tv"):
        solve_structured_exact(g, 0.1, 0.1, -0.1)
    with pytest.raises(ValueError, match=">= 0"):
        soft_threshold(g, -1)
    with pytest.raises(ValueError, match="lambda_grp"):
        solve_structured_seed(g, lam_grp=-0.5)


def test_exact_items_get_the_result_they_get_alone():
    """An item's solution does not depend on the other items of the batch: two items that stop at different
    iterations alone keep, batched together, the results they have alone."""
    smooth = torch.linspace(0, 1, 16).reshape(1, 1, 16, 1).expand(1, 2, 16, 16).contiguous().double()
    rough = _rand(1, 2, 16, 16, seed=5)
    lam = {"lam_grp": 0.05, "lam_l1": 0.01, "lam_tv": 0.2}
    alone = [solve_structured_exact(g, **lam, tol=1e-4, max_iter=3000) for g in (smooth, rough)]
    its = [info["iterations"] for _, info in alone]
    assert its[0] != its[1]  # the premise: different stopping points
    s, info = solve_structured_exact(torch.cat([smooth, rough]), **lam, tol=1e-4, max_iter=3000)
    for b, (s_alone, info_alone) in enumerate(alone):
        torch.testing.assert_close(s[b : b + 1], s_alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(info["gap"][b : b + 1], info_alone["gap"], rtol=1e-12, atol=1e-15)
    assert info["item_iterations"].tolist() == its
    assert info["iterations"] == max(its) and info["converged"]
