"""Thresholding, guidance and schedule against the paper's definitions on hand-made tensors."""
import torch

from imagen.guidance import guide
from imagen.schedule import alpha_sigma, q_sample, to_x0_eps, training_target
from imagen.thresholding import dynamic_threshold, static_threshold, threshold


def test_dynamic_threshold_leaves_x0_unchanged_when_s_le_1():
    x0 = torch.tensor([[[[0.5, -0.9], [0.99, -0.2]]]])
    assert torch.equal(dynamic_threshold(x0, 0.995), x0)


def test_dynamic_threshold_clips_and_rescales_when_s_gt_1():
    # 100 values; |x| = 0.1..10.0; the 0.9 quantile of |x| is s
    vals = torch.linspace(0.1, 10.0, 100)
    x0 = (vals * torch.tensor([1.0, -1.0]).repeat(50)).view(1, 1, 10, 10)
    s = torch.quantile(vals, 0.9)
    out = dynamic_threshold(x0, 0.9)
    expected = x0.clamp(-s, s) / s
    assert s > 1
    torch.testing.assert_close(out, expected)
    assert out.abs().max() <= 1.0 + 1e-6
    # values below s are only divided by s, not clipped
    small = x0.abs() < s
    torch.testing.assert_close(out[small], x0[small] / s)


def test_dynamic_threshold_is_per_sample():
    a = torch.full((1, 1, 4, 4), 0.5)
    b = torch.full((1, 1, 4, 4), 4.0)
    out = dynamic_threshold(torch.cat([a, b]), 0.995)
    assert torch.equal(out[0], a[0])
    torch.testing.assert_close(out[1], torch.ones(1, 4, 4))


def test_static_threshold_clips():
    x = torch.tensor([-3.0, -0.5, 0.2, 7.0])
    assert torch.equal(static_threshold(x), torch.tensor([-1.0, -0.5, 0.2, 1.0]))
    assert torch.equal(threshold(x, "none"), x)


def test_guidance_w1_equals_conditional_and_formula():
    c, u = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(guide(c, u, 1.0), c)
    assert torch.equal(guide(c, None, 7.0), c)
    torch.testing.assert_close(guide(c, u, 3.0), u + 3.0 * (c - u))
    w = torch.tensor([1.0, 2.0, 5.0])
    out = guide(c, u, w)
    torch.testing.assert_close(out[0], c[0])
    torch.testing.assert_close(out[2], u[2] + 5 * (c[2] - u[2]))


def test_cosine_schedule_and_predictions_round_trip():
    t = torch.linspace(0, 1, 11)
    a, s = alpha_sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones(11))
    assert a[0] > 0.999 and a[-1] < 0.02 and torch.all(a[1:] <= a[:-1])
    x0, eps = torch.randn(11, 3, 4, 4), torch.randn(11, 3, 4, 4)
    tt = t.clamp(0.05, 0.95)
    x_t = q_sample(x0, tt, eps)
    for pred in ("eps", "v"):
        x0_hat, eps_hat = to_x0_eps(training_target(x0, eps, tt, pred), x_t, tt, pred)
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)
