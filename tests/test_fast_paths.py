"""The speed switches keep the math: channels-last, bf16 autocast, fused Adam and compiling give the fp32 eager loss
terms (within float or bf16 tolerance) on a fixed batch, the animator encodes a source once and renders what the
per-frame path renders, and the CPU precision is bf16 only where the CPU has bfloat16 arithmetic.

How fast each switch is belongs to ``benchmarks/train_step.py`` and ``benchmarks/animate_fps.py``
(experiments/2026-12-01_performance.md), not to these tests.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate

from reenact.animation.pipeline import Animator, encode_frames
from reenact.families.motion import select_motion
from reenact.losses.terms import LossContext
from reenact.utils.hydra_utils import compose_config
from reenact.utils.memory_format import to_channels_last
from reenact.utils.nnpack import nnpack_runs, use_nnpack

SIZE = 64
# the FOMM CPU preset with the perceptual pyramid and Jacobian equivariance of the vox-256 recipe, at 64x64
FOMM_TERMS = [
    "model=fomm",
    "model.channels_last=false",
    "+model.objective.terms.perceptual={_target_: reenact.losses.photometric.PerceptualPyramid, weight: 1.0, "
    "scales: [1.0, 0.5], vgg_pretrained: false}",
]


def _task(overrides: list[str]) -> torch.nn.Module:
    cfg = compose_config("train", [*FOMM_TERMS, *overrides, "paths.root_dir=/tmp", "paths.output_dir=/tmp/fast"])
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"source": torch.rand(2, 3, SIZE, SIZE, generator=generator),
            "driving": torch.rand(2, 3, SIZE, SIZE, generator=generator)}


def _losses(task: torch.nn.Module, batch: dict[str, torch.Tensor], bf16: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)  # the equivariance transform draws the same deformation in every run
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output = task.network.training_forward(batch)
        return {k: v.float() for k, v in task.objective(LossContext(task.network, batch, output)).items()}


@pytest.fixture(scope="module")
def reference() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    task = _task([])
    return task, _losses(task, _batch())


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float) -> None:
    assert set(got) == set(want)
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=rtol, atol=rtol * 1e-2), (name, got[name], want[name])


def test_reference_has_every_term(reference) -> None:  # noqa: ANN001
    _, losses = reference
    assert {"perceptual", "equivariance_value", "reconstruction_l1"} <= set(losses)
    assert all(value.item() > 0 for value in losses.values())


def test_channels_last_gives_the_same_loss_terms(reference) -> None:  # noqa: ANN001
    task, want = reference
    fast = copy.deepcopy(task)
    to_channels_last(fast.network)
    assert fast.network.generator.final.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_close(_losses(fast, _batch()), want, rtol=1e-4)


def test_bf16_autocast_gives_the_loss_terms_within_bf16_tolerance(reference) -> None:  # noqa: ANN001
    task, want = reference
    got = _losses(task, _batch(), bf16=True)
    _assert_close(got, want, rtol=5e-2)
    # and it did run in bf16: an fp32 run would match to float precision
    assert any(not torch.allclose(got[name], want[name], rtol=1e-5) for name in want)


needs_nnpack = pytest.mark.skipif(not nnpack_runs(), reason="NNPACK does not run on this machine")


class CountNNPACKCalls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        convolution = torch._nnpack_spatial_convolution

        def counted(*args):  # noqa: ANN002, ANN202
            self.calls += 1
            return convolution(*args)

        monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counted)


@needs_nnpack
def test_nnpack_layers_give_the_convolution_and_its_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1),  # routed
        torch.nn.ReLU(),
        torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(16, 16, 3, padding=1)),  # routed
        torch.nn.Conv2d(16, 16, 3, padding=1, bias=False),  # routed
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1),  # stride 2: not routed
        torch.nn.Conv2d(16, 4, 1),  # 1x1 and 4 channels: not routed
    ).eval()
    fast = copy.deepcopy(plain)
    assert use_nnpack(fast, min_channels=8, min_pixels=100) == 3
    assert use_nnpack(fast, min_channels=8, min_pixels=100) == 3  # idempotent
    assert fast.state_dict().keys() == plain.state_dict().keys()
    calls = CountNNPACKCalls(monkeypatch)
    x = torch.randn(2, 8, 13, 18)  # sizes that are not multiples of a Winograd tile
    grad = torch.randn(2, 4, 7, 9)
    outputs, gradients = [], []
    for network in (plain, fast):
        inp = x.clone().requires_grad_()
        out = network(inp)
        outputs.append(out)
        gradients.append(torch.autograd.grad(out, [inp, *network.parameters()], grad))
    # forward: 3 layers x 2 samples; backward: the input gradients of the same layers
    assert calls.calls == 12
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for got, want in zip(gradients[1], gradients[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # and the comparison can fail: a wrong kernel is far off
    with torch.no_grad():
        fast[0].weight.mul_(-1)
    assert not torch.allclose(fast(x), outputs[0].detach(), atol=1e-2)


@needs_nnpack
def test_nnpack_layers_keep_their_own_path_where_nnpack_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    use_nnpack(conv, min_channels=8, min_pixels=100)
    calls = CountNNPACKCalls(monkeypatch)
    x = torch.randn(1, 8, 12, 12)
    want = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last)), want, rtol=1e-5, atol=1e-6)
    small = x[..., :9, :9].contiguous()  # 81 pixels < 100
    torch.testing.assert_close(conv(small), torch.nn.functional.conv2d(small, conv.weight, conv.bias, padding=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    assert calls.calls == 0
    conv(x)
    assert calls.calls == 1


def test_without_nnpack_the_switch_says_so_in_one_line_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import reenact.utils.nnpack as nnpack_module

    monkeypatch.setattr(nnpack_module, "nnpack_runs", lambda: False)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    with caplog.at_level("WARNING", logger="reenact.utils.nnpack"):
        assert use_nnpack(conv) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["nnpack: NNPACK does not run on this machine; the convolutions stay as they are"]
    assert "forward" not in conv.__dict__


@needs_nnpack
def test_the_default_thresholds_route_the_large_layers_only() -> None:
    network = torch.nn.ModuleDict({
        "wide": torch.nn.Conv2d(64, 128, 3, padding=1),
        "narrow": torch.nn.Conv2d(32, 64, 3, padding=1),
    })
    assert use_nnpack(network) == 1
    assert "forward" in network["wide"].__dict__ and "forward" not in network["narrow"].__dict__


@needs_nnpack
def test_the_nnpack_switch_gives_the_same_loss_terms(reference) -> None:  # noqa: ANN001
    _, want = reference
    task = _task(["model.nnpack=true"])
    task.setup("fit")
    vgg = task.objective.terms["perceptual"].loss.vgg
    routed = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d) and "forward" in m.__dict__]
    assert len(routed) >= 2  # the perceptual VGG's 64-channel convolutions at 64x64 at least
    _assert_close(_losses(task, _batch()), want, rtol=1e-4)
    with pytest.raises(Exception, match="model.nnpack must be true or false"):
        _task(["model.nnpack=fast"])


def test_fused_adam_steps_like_the_default_adam() -> None:
    # a network without BatchNorm: a conv bias followed by BatchNorm has a gradient of pure rounding noise, which
    # Adam normalises to +-lr, so any two implementations differ there by design
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 2, 3))
    results = []
    for options in ({}, {"fused": True}):
        model = copy.deepcopy(start)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), **options)
        for step in range(3):
            torch.manual_seed(step)
            optimizer.zero_grad()
            model(torch.rand(2, 3, 16, 16)).square().sum().backward()
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-8)
    assert not torch.allclose(results[0], torch.cat([p.detach().flatten() for p in start.parameters()]))


def test_compile_switch_compiles_networks_and_the_perceptual_vgg() -> None:
    task = _task(["model.compile=true"])
    modules = task.compiled_modules()
    assert task.network.kp_detector in modules and task.network.generator in modules
    assert task.objective.terms["perceptual"].loss.vgg in modules
    assert all(next(module.parameters(), None) is not None for module in modules)
    with pytest.raises(Exception, match="model.compile must be true or false"):  # wrapped by instantiate
        _task(["model.compile=fast"])


@pytest.mark.slow
def test_compiled_networks_give_the_same_loss_terms(reference) -> None:  # noqa: ANN001
    task, want = reference
    fast = copy.deepcopy(task)
    for module in fast.compiled_modules():
        module.compile()
    _assert_close(_losses(fast, _batch()), want, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- animation


@pytest.mark.parametrize("preset", ["fomm", "liveportrait_small"])
def test_animator_encodes_the_source_once_and_renders_like_the_per_frame_path(preset: str) -> None:
    cfg = compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/fast"])
    torch.manual_seed(0)
    network = instantiate(cfg.model.network).eval()
    generator = torch.Generator().manual_seed(3)
    source = torch.rand(3, SIZE, SIZE, generator=generator)
    driving = torch.rand(5, 3, SIZE, SIZE, generator=generator)
    calls = []
    encode = network.encode_source
    network.encode_source = lambda image: calls.append(image.shape[0]) or encode(image)
    animator = Animator(network, source)
    motion = encode_frames(network, driving)
    reference = select_motion(animator.source_motion, 0)
    with torch.no_grad():
        batches = [animator.render(select_motion(motion, slice(i, i + 2)), reference)["prediction"]
                   for i in range(0, 5, 2)]
        assert calls == [1]  # once, for the one source, whatever the number of frames and batches
        animator.source_encoding = None  # the per-frame path: the source rendered from its image every time
        per_frame = animator.render(motion, reference)["prediction"]
    assert torch.allclose(torch.cat(batches), per_frame, atol=1e-5)


@needs_nnpack
@pytest.mark.parametrize("preset", ["fomm", "liveportrait_small"])
def test_an_animator_on_nnpack_layers_renders_the_frames_of_the_plain_network(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the thresholds are lowered so that most of a CPU preset's 3x3 layers (spectral-normed SPADE ones included)
    # take the NNPACK path at 64x64; the defaults select the layers of the 256x256 presets
    cfg = compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp/fast"])
    torch.manual_seed(0)
    plain = instantiate(cfg.model.network).eval()
    fast = copy.deepcopy(plain)
    assert use_nnpack(fast, min_channels=8, min_pixels=16 * 16) >= 4
    calls = CountNNPACKCalls(monkeypatch)
    generator = torch.Generator().manual_seed(3)
    source = torch.rand(3, SIZE, SIZE, generator=generator)
    driving = torch.rand(3, 3, SIZE, SIZE, generator=generator)
    frames = []
    with torch.no_grad():
        for network in (plain, fast):
            animator = Animator(network, source)
            reference = select_motion(animator.source_motion, 0)
            frames.append(animator.render(encode_frames(network, driving), reference)["prediction"])
    assert calls.calls > 0
    torch.testing.assert_close(frames[1], frames[0], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------- precision


def test_cpu_bf16_check_reads_the_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    from reenact.utils.hydra_utils import cpu_computes_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_computes_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_computes_bf16() is True


# ----------------------------------------------------------------------------------------------- data loading


def test_batches_are_pinned_exactly_when_training_on_cuda() -> None:
    from types import SimpleNamespace

    from reenact.data.datamodule import ReenactDataModule

    data = ReenactDataModule(synthetic={})
    assert data.pins_memory is False  # no trainer yet
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert data.pins_memory is False
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert data.pins_memory is True
    assert ReenactDataModule(synthetic={}, pin_memory=False).pins_memory is False


# ------------------------------------------------------------------------------------- benchmarks/conv_peak.py


def test_the_conv_peak_benchmark_prints_its_tables(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "conv_peak.py"
    spec = importlib.util.spec_from_file_location("conv_peak", script)
    conv_peak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv_peak)
    conv_peak.main(["--shapes", "1x8x12", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "NNPACK" in out and "| 1024x1024 fp32 |" in out
    row = next(line for line in out.splitlines() if line.startswith("| 1x8x12 |"))
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    assert len(cells) == 7 and all(cells)
    if nnpack_runs():
        assert float(cells[-1]) < 1e-4  # NNPACK's error relative to the largest output
