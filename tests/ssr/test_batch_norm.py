"""The row-view BatchNorm (ssr/method/batch_norm.py) against PyTorch's, on a two-thread CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ssr.method.batch_norm as bn_module
from ssr.method.batch_norm import batch_norm, row_groups
from ssr.method.ops import BN_EPS


@pytest.fixture
def two_threads(monkeypatch):
    """Two threads, and the row path at the tests' small sizes."""
    monkeypatch.setattr(bn_module, "MIN_ROWS", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _pair(c: int, seed: int = 0) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=BN_EPS)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn, copy.deepcopy(bn)


def _input(c: int, dtype: torch.dtype, hw: tuple[int, int] = (12, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, c, *hw, generator=g) * 3 + 5  # mean far from 0: statistics in fp32
    return x.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_(True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("width", [None, 44])
def test_row_batch_norm_matches_pytorch(two_threads, dtype, tol, width):
    bn, ref = _pair(60)
    c = width or 60
    x = _input(c, dtype)
    x_ref = x.detach().clone().requires_grad_(True)
    scale = torch.rand(c, requires_grad=True)
    scale_ref = scale.detach().clone().requires_grad_(True)
    assert row_groups(x, True) == 4
    y = batch_norm(bn, x, scale, width)
    # PyTorch's own kernel: the same call with the row path switched off (NCHW input)
    y_ref = batch_norm(ref, x_ref.contiguous(), scale_ref, width)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, y_ref) < tol
    g = torch.randn_like(y_ref)
    y.backward(g.contiguous(memory_format=torch.channels_last))
    y_ref.backward(g)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert _rel(x.grad, x_ref.grad) < tol
    assert _rel(scale.grad, scale_ref.grad) < tol
    for p, q in ((bn.weight, ref.weight), (bn.bias, ref.bias)):
        assert _rel(p.grad[:c], q.grad[:c]) < tol
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 1


def test_row_batch_norm_under_bf16_autocast_takes_an_nchw_gradient(two_threads):
    bn, ref = _pair(60)
    x = _input(60, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = batch_norm(bn, x)
        y_ref = ref(x.detach().contiguous())
    assert y.dtype == torch.bfloat16
    assert _rel(y, y_ref) < 1e-2
    y.float().square().sum().backward()  # an NCHW-or-any-layout gradient is accepted
    assert torch.isfinite(x.grad).all() and x.grad.is_contiguous(memory_format=torch.channels_last)


def test_row_path_only_where_pytorch_shares_cache_lines(two_threads):
    cl = torch.channels_last
    assert row_groups(torch.zeros(2, 60, 4, 4).contiguous(memory_format=cl), True) == 4
    assert row_groups(torch.zeros(2, 100, 4, 4).contiguous(memory_format=cl), True) == 4
    assert row_groups(torch.zeros(2, 120, 4, 4).contiguous(memory_format=cl), True) == 2
    assert row_groups(torch.zeros(2, 13, 4, 4).contiguous(memory_format=cl), True) == 16
    assert row_groups(torch.zeros(2, 64, 4, 4).contiguous(memory_format=cl), True) == 0
    assert row_groups(torch.zeros(2, 60, 4, 4).contiguous(memory_format=cl), False) == 0
    assert row_groups(torch.zeros(2, 60, 4, 4), True) == 0  # NCHW
    assert row_groups(torch.zeros(2, 60, 1, 1), True) == 0  # both layouts: PyTorch's is fine
    assert row_groups(torch.zeros(1, 13, 3, 5).contiguous(memory_format=cl), True) == 0  # 15 rows
    torch.set_num_threads(1)
    assert row_groups(torch.zeros(2, 60, 4, 4).contiguous(memory_format=cl), True) == 0


def test_row_path_only_from_min_rows_pixels(two_threads, monkeypatch):
    monkeypatch.setattr(bn_module, "MIN_ROWS", 16384)
    cl = torch.channels_last
    assert row_groups(torch.zeros(2, 60, 64, 128).contiguous(memory_format=cl), True) == 4
    assert row_groups(torch.zeros(2, 60, 32, 64).contiguous(memory_format=cl), True) == 0


def test_eval_mode_is_pytorch_batch_norm(two_threads):
    bn, ref = _pair(60)
    bn.eval(), ref.eval()
    x = _input(60, torch.float32)
    torch.testing.assert_close(batch_norm(bn, x), ref(x))
