"""3x3 convolutions by NNPACK's Winograd algorithm on CPUs, forward and input gradient.

PyTorch ships NNPACK, whose 3x3 convolutions use the Winograd minimal-filtering algorithm F(6x6, 3x3): 5x fewer
multiplications than a direct convolution, with a relative error of about 1e-5 in fp32. PyTorch's own dispatch ran
every convolution of the presets through oneDNN (profiler, experiments/2026-12-01_performance.md), so
:func:`use_nnpack` routes chosen ``nn.Conv2d`` layers through NNPACK explicitly:

- forward: ``torch._nnpack_spatial_convolution``;
- input gradient: for a stride-1 convolution, the convolution of the output gradient with the kernel flipped in space
  and transposed in channels, padded by ``k - 1 - p``, so NNPACK again;
- weight and bias gradients: PyTorch's own ``convolution_backward`` (NNPACK has none in PyTorch).

A layer takes this path only where NNPACK can run it and wins: a CPU fp32 tensor in NCHW layout (not channels-last,
not under bf16 autocast), a 3x3 kernel with stride 1, dilation 1, one group, zero padding below the kernel size, at
least ``min_channels`` input and output channels and at least ``min_pixels`` pixels per channel. On a 2-core AVX2
CPU NNPACK won from 64 channels at 64x64 on (forward 0.43-0.79x the oneDNN time, forward and backward 0.67-0.97x)
and gained nothing at 32x32 (``benchmarks/conv_peak.py``; at 16x16 it was slower). Every other call runs the layer's
own forward. Parameters and state dicts are those of the plain layer: the switch changes how a layer computes, not
what.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


@functools.cache
def nnpack_runs() -> bool:
    """True where PyTorch has NNPACK and it runs on this CPU. ``_nnpack_available`` also initialises NNPACK, which
    ``_nnpack_spatial_convolution`` does not do itself (it fails until then)."""
    if not torch.backends.nnpack.is_available():
        return False
    try:
        torch._nnpack_spatial_convolution(torch.ones(1, 2, 8, 8), torch.ones(2, 2, 3, 3), None, [1, 1])
    except RuntimeError:
        return False
    return True


def _nnpack_convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        padding: list[int]) -> torch.Tensor:
    """NNPACK one sample at a time: PyTorch calls NNPACK's inference routine for a batch of one and its batched
    "output" routine otherwise. At batch 2 on a 2-core AVX2 CPU the batched routine took 1.8x the oneDNN forward time
    at 256 channels on 64x64, where one sample at a time took 0.62x (experiments/2026-12-01_performance.md)."""
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, padding)
    return torch.cat([torch._nnpack_spatial_convolution(sample, weight, bias, padding) for sample in x.split(1)])


class _NNPACKConvolution(torch.autograd.Function):
    """conv2d(x, weight, bias, padding) with stride 1; forward and input gradient by NNPACK."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # noqa: ANN001
                padding: list[int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return _nnpack_convolution(x, weight, bias, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous()  # (C_in, C_out, kh, kw)
            padding = [weight.shape[2] - 1 - ctx.padding[0], weight.shape[3] - 1 - ctx.padding[1]]
            grad_x = _nnpack_convolution(grad, flipped, None, padding)
        wants_weight, wants_bias = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if wants_weight or wants_bias:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], ctx.padding, [1, 1], False,
                [0, 0], 1, [False, wants_weight, wants_bias],
            )
        return grad_x, grad_weight, grad_bias, None


def _eligible_layer(conv: nn.Conv2d, min_channels: int) -> bool:
    kh, kw = conv.kernel_size
    padding = conv.padding
    return (
        (kh, kw) == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(padding, str)
        and padding[0] < kh
        and padding[1] < kw
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


def _nnpack_forward(conv: nn.Conv2d, min_pixels: int, x: torch.Tensor) -> torch.Tensor:
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.dim() != 4
        or x.shape[-2] * x.shape[-1] < min_pixels
        or not x.is_contiguous()
        or torch.is_autocast_enabled("cpu")
    ):
        return conv._conv_forward(x, conv.weight, conv.bias)
    weight = conv.weight  # read once: a parametrized weight (spectral norm) is computed on each read
    if weight.dtype != torch.float32 or not weight.is_contiguous():
        return conv._conv_forward(x, weight, conv.bias)
    return _NNPACKConvolution.apply(x, weight, conv.bias, list(conv.padding))


def use_nnpack(module: nn.Module, min_channels: int = 64, min_pixels: int = 64 * 64) -> int:
    """Route every eligible ``nn.Conv2d`` of ``module`` through NNPACK (see the module docstring); returns how many
    layers were routed. Where NNPACK does not run on this CPU, one warning line says so and nothing changes.
    Idempotent."""
    if not nnpack_runs():
        log.warning("nnpack: NNPACK does not run on this machine; the convolutions stay as they are")
        return 0
    routed = 0
    for layer in module.modules():
        # nn.Conv2d and its parametrized forms (spectral norm), not subclasses with a forward of their own
        if not isinstance(layer, nn.Conv2d) or type(layer).forward is not nn.Conv2d.forward:
            continue
        if not _eligible_layer(layer, min_channels):
            continue
        if "forward" not in layer.__dict__:
            layer.forward = functools.partial(_nnpack_forward, layer, min_pixels)
        routed += 1
    return routed
