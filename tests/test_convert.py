"""Importing official FOMM / LivePortrait weights (python -m reenact.convert).

The official files cannot be downloaded here, so the fixtures below write state dicts in the official key layout
(enumerated from the original releases' architecture descriptions, not from our modules; their parameter
counts must equal the reference counts) with random values. The tests check that every key maps and every
tensor of our model is filled and matters, that bad files fail with one clear error, that the conventions which
decide the outputs (58-grid soft-argmax, first-order motion, bin offset, transposed rotation, t_z = 0, legacy
grid sampling, spectral norm) hold through a conversion, and that a converted FOMM fine-tunes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from reenact.api import load_pretrained, read_checkpoint
from reenact.cli.convert import main as convert_cli
from reenact.cli.train import run
from reenact.convert import ConversionError
from reenact.convert.keymap import SPECTRAL_NORM_RENAMES, ConversionReport, convert_state
from reenact.convert.sources import load_state_file
from reenact.families.fomm.convert import convert_fomm, convert_fomm_object
from reenact.families.liveportrait.convert import convert_liveportrait, convert_liveportrait_states
from reenact.families.liveportrait.warping_network import WarpingNetwork
from reenact.layers.geometry import make_coordinate_grid
from reenact.utils.hydra_utils import compose_config, to_plain
from tests.helpers.configs import train_config

Layout = dict[str, tuple[int, ...]]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "weight_u", "weight_v")


# --- official layouts, from the reference descriptions ------------------------------------------------------
def conv(lay: Layout, name: str, cin: int, cout: int, k: int, dims: int = 2, bias: bool = True, sn: bool = False,
         groups: int = 1) -> None:
    weight = (cout, cin // groups) + (k,) * dims
    if sn:  # torch.nn.utils.spectral_norm's keys
        lay.update({f"{name}.weight_orig": weight, f"{name}.weight_u": (cout,), f"{name}.weight_v": (cin * k**dims,)})
    else:
        lay[f"{name}.weight"] = weight
    if bias:
        lay[f"{name}.bias"] = (cout,)


def norm(lay: Layout, name: str, c: int, batch: bool = True) -> None:
    names = ("weight", "bias", "running_mean", "running_var") if batch else ("weight", "bias")
    lay.update({f"{name}.{n}": (c,) for n in names})
    if batch:
        lay[f"{name}.num_batches_tracked"] = ()


def hourglass(lay: Layout, name: str, be: int, cin: int, blocks: int, maxf: int, dims: int = 2) -> int:
    width = [min(maxf, be * 2**i) for i in range(blocks + 1)]
    for i in range(blocks):
        conv(lay, f"{name}.encoder.down_blocks.{i}.conv", cin if i == 0 else width[i], width[i + 1], 3, dims)
        norm(lay, f"{name}.encoder.down_blocks.{i}.norm", width[i + 1])
    for j, i in enumerate(reversed(range(blocks))):
        conv(lay, f"{name}.decoder.up_blocks.{j}.conv", (1 if i == blocks - 1 else 2) * width[i + 1], width[i], 3, dims)
        norm(lay, f"{name}.decoder.up_blocks.{j}.norm", width[i])
    if dims == 3:  # LivePortrait's 3D decoder ends with conv-BN-ReLU
        conv(lay, f"{name}.decoder.conv", be + cin, be + cin, 3, 3)
        norm(lay, f"{name}.decoder.norm", be + cin)
    return be + cin


def blur_kernel(channels: int, scale: float) -> torch.Tensor:
    sigma = (1 / scale - 1) / 2
    size = 2 * round(4 * sigma) + 1
    g = torch.exp(-((torch.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).expand(channels, 1, size, size).clone()


def fomm_layout(m: dict) -> tuple[Layout, dict[str, torch.Tensor]]:
    kp, g, d = m["network"]["kp_detector"], m["network"]["generator"], m["discriminator"]
    dm, c, k = g["dense_motion"], kp["num_channels"], kp["num_kp"]
    lay: Layout = {}
    out = hourglass(lay, "kp_detector.predictor", kp["block_expansion"], c, kp["num_blocks"], kp["max_features"])
    conv(lay, "kp_detector.kp", out, k, 7)
    conv(lay, "kp_detector.jacobian", out, 4 * k, 7)
    out = hourglass(lay, "generator.dense_motion_network.hourglass", dm["block_expansion"], (k + 1) * (c + 1),
                    dm["num_blocks"], dm["max_features"])
    conv(lay, "generator.dense_motion_network.mask", out, k + 1, 7)
    conv(lay, "generator.dense_motion_network.occlusion", out, 1, 7)
    width = [min(g["max_features"], g["block_expansion"] * 2**i) for i in range(g["num_down_blocks"] + 1)]
    conv(lay, "generator.first.conv", c, width[0], 7)
    norm(lay, "generator.first.norm", width[0])
    for i in range(g["num_down_blocks"]):
        conv(lay, f"generator.down_blocks.{i}.conv", width[i], width[i + 1], 3)
        norm(lay, f"generator.down_blocks.{i}.norm", width[i + 1])
    for i in range(g["num_down_blocks"]):
        conv(lay, f"generator.up_blocks.{i}.conv", width[-1 - i], width[-2 - i], 3)
        norm(lay, f"generator.up_blocks.{i}.norm", width[-2 - i])
    for i in range(g["num_bottleneck_blocks"]):
        for j in (1, 2):
            norm(lay, f"generator.bottleneck.r{i}.norm{j}", width[-1])
            conv(lay, f"generator.bottleneck.r{i}.conv{j}", width[-1], width[-1], 3)
    conv(lay, "generator.final", width[0], c, 7)
    for scale in d["scales"]:
        name, cin = "discriminator.discs." + f"{scale:g}".replace(".", "-"), c
        for i in range(d["num_blocks"]):
            cout = min(d["max_features"], d["block_expansion"] * 2 ** (i + 1))
            conv(lay, f"{name}.down_blocks.{i}.conv", cin + (k if i == 0 and d["use_kp"] else 0), cout, 4, sn=d["sn"])
            if i:
                norm(lay, f"{name}.down_blocks.{i}.norm", cout, batch=False)
            cin = cout
        conv(lay, f"{name}.conv", cin, 1, 1, sn=d["sn"])
    fixed = {"kp_detector.down.weight": blur_kernel(c, kp["scale_factor"]),
             "generator.dense_motion_network.down.weight": blur_kernel(c, dm["scale_factor"])}
    return lay, fixed


def liveportrait_layout(m: dict) -> dict[str, Layout]:
    f, mo, w, g = (m["network"][n] for n in ("appearance_feature_extractor", "motion_extractor", "warping_network",
                                               "spade_decoder"))
    F: Layout = {}
    be, maxf = f["block_expansion"], f["max_features"]
    conv(F, "first.conv", f["image_channel"], be, 3)
    norm(F, "first.norm", be)
    for i in range(f["num_down_blocks"]):
        conv(F, f"down_blocks.{i}.conv", min(maxf, be * 2**i), min(maxf, be * 2 ** (i + 1)), 3)
        norm(F, f"down_blocks.{i}.norm", min(maxf, be * 2 ** (i + 1)))
    rc, depth = f["reshape_channel"], f["reshape_depth"]
    conv(F, "second", min(maxf, be * 2 ** f["num_down_blocks"]), rc * depth, 1)
    for i in range(f["num_resblocks"]):
        for j in (1, 2):
            norm(F, f"resblocks_3d.3dr{i}.norm{j}", rc)
            conv(F, f"resblocks_3d.3dr{i}.conv{j}", rc, rc, 3, 3)
    M: Layout = {}
    dims = mo["dims"]
    conv(M, "detector.downsample_layers.0.0", mo["image_channel"], dims[0], 4)
    norm(M, "detector.downsample_layers.0.1", dims[0], batch=False)
    for i in range(1, len(dims)):
        norm(M, f"detector.downsample_layers.{i}.0", dims[i - 1], batch=False)
        conv(M, f"detector.downsample_layers.{i}.1", dims[i - 1], dims[i], 2)
    for i, (blocks, dim) in enumerate(zip(mo["depths"], dims, strict=True)):
        for j in range(blocks):
            p = f"detector.stages.{i}.{j}"
            conv(M, f"{p}.dwconv", dim, dim, 7, groups=dim)
            norm(M, f"{p}.norm", dim, batch=False)
            M.update({f"{p}.pwconv1.weight": (4 * dim, dim), f"{p}.pwconv1.bias": (4 * dim,),
                      f"{p}.grn.gamma": (1, 1, 1, 4 * dim), f"{p}.grn.beta": (1, 1, 1, 4 * dim),
                      f"{p}.pwconv2.weight": (dim, 4 * dim), f"{p}.pwconv2.bias": (dim,)})
    norm(M, "detector.norm", dims[-1], batch=False)
    kp, bins = mo["num_kp"], mo["num_bins"]
    for head, n in (("kp", 3 * kp), ("scale", 1), ("pitch", bins), ("yaw", bins), ("roll", bins), ("t", 3),
                    ("exp", 3 * kp)):
        M.update({f"detector.fc_{head}.weight": (n, dims[-1]), f"detector.fc_{head}.bias": (n,)})
    W: Layout = {}
    dmp, kp = w["dense_motion_params"], w["num_kp"]
    out = hourglass(W, "dense_motion_network.hourglass", dmp["block_expansion"], (kp + 1) * (dmp["compress"] + 1),
                    dmp["num_blocks"], dmp["max_features"], dims=3)
    conv(W, "dense_motion_network.mask", out, kp + 1, dmp["mask_kernel_size"], 3)
    conv(W, "dense_motion_network.compress", w["reshape_channel"], dmp["compress"], 1, 3)
    norm(W, "dense_motion_network.norm", dmp["compress"])
    conv(W, "dense_motion_network.occlusion", out * dmp["reshape_depth"], 1, 7)
    wout = min(w["max_features"], w["block_expansion"] * 2 ** w["num_down_blocks"])
    conv(W, "third.conv", w["reshape_channel"] * dmp["reshape_depth"], wout, 3)
    norm(W, "third.norm", wout)
    conv(W, "fourth", wout, wout, 1)
    G: Layout = {}
    ic, hidden = min(g["max_features"], g["block_expansion"] * 2 ** g["num_down_blocks"]), g["spade_hidden"]

    def spade_block(name: str, fin: int, fout: int) -> None:
        mid = min(fin, fout)
        conv(G, f"{name}.conv_0", fin, mid, 3, sn=True)
        conv(G, f"{name}.conv_1", mid, fout, 3, sn=True)
        parts = [("norm_0", fin), ("norm_1", mid)] + ([("norm_s", fin)] if fin != fout else [])
        if fin != fout:
            conv(G, f"{name}.conv_s", fin, fout, 1, bias=False, sn=True)
        for part, nc in parts:
            conv(G, f"{name}.{part}.mlp_shared.0", ic, hidden, 3)
            conv(G, f"{name}.{part}.mlp_gamma", hidden, nc, 3)
            conv(G, f"{name}.{part}.mlp_beta", hidden, nc, 3)

    conv(G, "fc", ic, 2 * ic, 3)
    for i in range(g["num_middle_blocks"]):
        spade_block(f"G_middle_{i}", 2 * ic, 2 * ic)
    width = 2 * ic  # the release has two up blocks: 2*ic -> ic, then ic -> out_channels
    blocks = g["num_down_blocks"]
    for i in range(blocks):
        inner = min(g["max_features"], g["block_expansion"] * 2 ** (blocks - i))
        fout = g["out_channels"] if i == blocks - 1 else inner
        spade_block(f"up_{i}", width, fout)
        width = fout
    up = g["upscale"]
    conv(G, "conv_img.0" if up > 1 else "conv_img", g["out_channels"], 3 * up * up, 3)
    return {"appearance_feature_extractor": F, "motion_extractor": M, "warping_module": W, "spade_generator": G}


def n_params(lay: Layout) -> int:
    return sum(math.prod(s) for k, s in lay.items() if k.rsplit(".", 1)[-1] not in BUFFERS)


def fill(lay: Layout, gen: torch.Generator, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random values that keep a network numerically tame (fan-in scaled weights, positive variances)."""
    out = {}
    for key, shape in lay.items():
        leaf = key.rsplit(".", 1)[-1]
        if device == "meta":
            out[key] = torch.empty(shape, device="meta", dtype=torch.int64 if leaf == BUFFERS[2] else None)
        elif leaf == "num_batches_tracked":
            out[key] = torch.tensor(1000)
        elif leaf == "running_var":
            out[key] = 0.5 + torch.rand(shape, generator=gen)
        elif leaf in ("weight_u", "weight_v"):
            out[key] = nn.functional.normalize(torch.randn(shape, generator=gen), dim=0)
        elif len(shape) >= 2 and leaf in ("weight", "weight_orig"):
            out[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        elif leaf == "weight":
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=gen)
    return out


def model_dict(preset: str, overrides: Sequence[str] = ()) -> dict:
    return to_plain(compose_config("train", [f"model={preset}", "paths.root_dir=/tmp", "paths.output_dir=/tmp",
                                             *overrides]).model)


def fomm_fixture(preset: str, overrides: Sequence[str] = (), seed: int = 0) -> dict:
    lay, fixed = fomm_layout(model_dict(preset, overrides))
    tensors = {**fill(lay, torch.Generator().manual_seed(seed)), **fixed}
    # Jacobians near the identity keep J_d invertible, as trained detectors do
    tensors["kp_detector.jacobian.weight"] *= 0.01
    tensors["kp_detector.jacobian.bias"] = 0.05 * tensors["kp_detector.jacobian.bias"] + torch.tensor(
        [1.0, 0.0, 0.0, 1.0]).repeat(len(tensors["kp_detector.jacobian.bias"]) // 4)
    parts = {p: {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(p + ".")}
             for p in ("kp_detector", "generator", "discriminator")}
    return {**parts, "optimizer_generator": {"state": {}, "param_groups": [{"lr": 2e-6, "params": [0]}]},
            "optimizer_kp_detector": {"state": {}, "param_groups": []}, "epoch": 99}


def ours(key: str) -> str:
    """The documented mapping: official key -> reenact state-dict key."""
    for old, new in (("weight_orig", "parametrizations.weight.original"), ("weight_u", "parametrizations.weight.0._u"),
                     ("weight_v", "parametrizations.weight.0._v")):
        key = re.sub(rf"\.{old}$", f".{new}", key)
    for old, new in (("kp_detector.", "network.kp_detector."), ("generator.", "network.generator."),
                     ("appearance_feature_extractor.", "network.appearance_feature_extractor."),
                     ("motion_extractor.detector.fc_", "network.motion_extractor.fc_"),
                     ("motion_extractor.", "network.motion_extractor."),
                     ("warping_module.", "network.warping_network."), ("spade_generator.", "network.spade_decoder.")):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def liveportrait_folder(
    folder: Path, preset: str = "liveportrait_small", edit: Callable[[dict], None] | None = None
) -> dict[str, dict]:
    states = {stem: fill(lay, torch.Generator().manual_seed(i))
              for i, (stem, lay) in enumerate(liveportrait_layout(model_dict(preset)).items())}
    states["motion_extractor"]["detector.fc_scale.bias"] = torch.ones(1)
    if edit:
        edit(states)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, state in states.items():
        if stem == "warping_module":  # one file as .safetensors, as community re-uploads ship them
            save_file(state, folder / f"{stem}.safetensors")
        else:
            torch.save(state, folder / f"{stem}.pth")
    return states


def flat(out: object) -> torch.Tensor:
    """Every tensor of a (nested) model output as one float vector."""
    if isinstance(out, torch.Tensor):
        return out.flatten().float()
    items = [v for _, v in sorted(out.items())] if isinstance(out, dict) else list(out)
    return torch.cat([flat(v) for v in items if v is not None])


def assert_every_tensor_matters(module: nn.Module, forward: Callable[[], torch.Tensor]) -> None:
    """Deterministic, and no converted tensor is silently unused: every parameter gets a gradient; every
    persistent buffer (BatchNorm statistics, spectral-norm u and v) belongs to a module whose parameters matter
    and which runs in eval mode, where it reads them; perturbing the first buffer of each kind confirms that."""
    module.eval()
    with torch.no_grad():
        base = forward()
    module.zero_grad(set_to_none=True)
    out = forward()
    assert torch.equal(out.detach(), base)  # deterministic
    (out * torch.randn(base.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    used = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert not [n for n, _ in module.named_parameters() if n not in used]
    persistent = module.state_dict()
    buffers = {n: b for n, b in module.named_buffers() if n in persistent and not n.endswith("num_batches_tracked")}
    owners = {n: n.rsplit(".", 1)[0].split(".parametrizations.")[0] for n in buffers}
    assert all(any(p.startswith(owner + ".") for p in used) for owner in owners.values())
    assert not any(m.training for m in module.modules())
    for kind in ("running_mean", "running_var", "_u", "_v"):
        name = next((n for n in buffers if n.endswith("." + kind)), None)
        if name is None:
            continue
        saved = buffers[name].clone()
        with torch.no_grad():
            buffers[name].mul_(1.5).add_(0.05)
            changed = not torch.allclose(forward(), base, rtol=0, atol=1e-6)
            buffers[name].copy_(saved)
        assert changed, name


@pytest.fixture(scope="module")
def fomm_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("fomm")
    obj = fomm_fixture("fomm")
    torch.save(obj, folder / "vox-cpk.pth.tar", _use_new_zipfile_serialization=False)  # the 2019 file format
    report = convert_fomm(folder / "vox-cpk.pth.tar", folder / "fomm.ckpt", preset="fomm", frame_size=64)
    assert "optimizer_generator" in report.dropped
    return folder / "fomm.ckpt", obj


@pytest.fixture(scope="module")
def liveportrait_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("liveportrait")
    states = liveportrait_folder(root / "pretrained_weights" / "liveportrait" / "base_models")
    # the HuggingFace download folder itself: the converter finds liveportrait/base_models inside
    assert convert_cli(["liveportrait", str(root / "pretrained_weights"), str(root / "lp.ckpt"),
                        "--preset", "liveportrait_small", "--frame-size", "64"]) == 0
    return root / "lp.ckpt", states


# --- mapping ------------------------------------------------------------------------------------------------
def test_official_layouts_have_the_reference_parameter_counts() -> None:
    lay, _ = fomm_layout(model_dict("fomm_vox256"))
    counts = {p: n_params({k: v for k, v in lay.items() if k.startswith(p)})
              for p in ("kp_detector.", "generator.", "generator.dense_motion_network.", "discriminator.")}
    assert counts == {"kp_detector.": 14_215_368, "generator.": 45_575_391,
                      "generator.dense_motion_network.": 37_730_268, "discriminator.": 2_758_849}
    lp = liveportrait_layout(model_dict("liveportrait"))
    assert {stem: n_params(lay) for stem, lay in lp.items()} == {
        "appearance_feature_extractor": 836_224, "motion_extractor": 28_118_728,
        "warping_module": 45_529_829, "spade_generator": 55_365_388}
    assert n_params({k: v for k, v in lp["warping_module"].items() if k.startswith("dense_motion")}) == 44_283_621


def test_full_size_files_map_every_key_onto_our_models() -> None:
    # shapes only (meta tensors), except FOMM's blur kernels, which must equal the ones we compute
    lay, fixed = fomm_layout(model_dict("fomm_vox256"))
    tensors = {**fill(lay, torch.Generator(), "meta"), **fixed}
    obj = {p: {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(p + ".")}
           for p in ("kp_detector", "generator", "discriminator")}
    state, cfg, report = convert_fomm_object({**obj, "epoch": 99}, "vox-cpk.pth.tar")
    assert set(state) == {ours(k) for k in lay} and sorted(report.copied) == sorted(lay)
    assert sorted(report.checked_equal) == sorted(fixed) and not report.defaulted
    assert cfg.discriminator.sn is True and cfg.discriminator.use_kp is False

    layouts = liveportrait_layout(model_dict("liveportrait"))
    states = {stem: fill(lay, torch.Generator(), "meta") for stem, lay in layouts.items()}
    state, cfg, report = convert_liveportrait_states(states, "base_models")
    source_keys = [f"{stem}.{k}" for stem, lay in layouts.items() for k in lay]
    assert set(state) == {ours(k) for k in source_keys} and sorted(report.copied) == sorted(source_keys)
    assert cfg.network.warping_network.dense_motion_params.align_corners is False


def test_fomm_round_trip_fills_every_tensor(fomm_small: tuple[Path, dict]) -> None:
    path, obj = fomm_small
    checkpoint = read_checkpoint(path)
    assert {"epoch", "global_step", "pytorch-lightning_version"} <= set(checkpoint)
    meta = checkpoint["reenact"]
    assert meta["family"] == "fomm" and meta["data_config"] == {"frame_size": 64}
    assert meta["model_config"] == model_dict("fomm", ["model.network.generator.blend_warped_source=false",
                                                       "model.discriminator.sn=true"])
    source = {f"{p}.{k}": v for p in ("kp_detector", "generator", "discriminator") for k, v in obj[p].items()}
    stored = {ours(k) for k in source if not k.endswith("down.weight")}
    assert set(checkpoint["state_dict"]) == stored
    model = load_pretrained(path)
    loaded = {f"network.{k}": v for k, v in model.network.state_dict().items()}
    assert set(loaded) == {k for k in stored if k.startswith("network.")}
    for key, value in source.items():
        if not key.endswith("down.weight"):
            target = loaded if key.startswith(("kp_detector", "generator")) else checkpoint["state_dict"]
            assert torch.equal(target[ours(key)], value), key


def test_converted_fomm_is_deterministic_and_uses_every_tensor(fomm_small: tuple[Path, dict]) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    model = load_pretrained(fomm_small[0])
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    small = images[:, :, ::2, ::2]  # 32 x 32 frames keep the many forward passes cheap
    assert_every_tensor_matters(model.network, lambda: flat(model.network(small[:1], small[1:])))
    checkpoint = read_checkpoint(fomm_small[0])
    disc = instantiate(OmegaConf.create(checkpoint["reenact"]["model_config"]["discriminator"]))()
    disc.load_state_dict({k.split(".", 1)[1]: v for k, v in checkpoint["state_dict"].items()
                          if k.startswith("discriminator.")})
    assert_every_tensor_matters(disc, lambda: flat(disc(images)))


def test_liveportrait_round_trip_fills_and_uses_every_tensor(liveportrait_small: tuple[Path, dict]) -> None:
    path, states = liveportrait_small
    meta = read_checkpoint(path)["reenact"]
    assert meta["family"] == "liveportrait" and meta["data_config"] == {"frame_size": 64}
    assert meta["model_config"]["network"]["warping_network"]["dense_motion_params"]["align_corners"] is False
    model = load_pretrained(path)
    loaded = {f"network.{k}": v for k, v in model.network.state_dict().items()}
    source = {f"{stem}.{k}": v for stem, state in states.items() for k, v in state.items()}
    assert set(loaded) == {ours(k) for k in source}
    for key, value in source.items():
        assert torch.equal(loaded[ours(key)], value), key
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # 32 x 32 keeps it cheap
    assert_every_tensor_matters(model.network, lambda: flat(model.network(images[:1], images[1:])))


# --- errors -------------------------------------------------------------------------------------------------
def test_bad_files_fail_with_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    obj = fomm_fixture("fomm")
    del obj["generator"]["bottleneck.r0.conv1.weight"]
    obj["kp_detector"]["extra.weight"] = torch.zeros(1)
    obj["generator"]["final.bias"] = torch.zeros(5)
    with pytest.raises(ConversionError) as error:
        convert_fomm_object(obj, "cpk.pth.tar", "fomm")
    message = str(error.value)
    assert "\n" not in message and "'fomm' preset" in message
    assert re.search(r"missing 1 \[generator\.bottleneck\.r0\.conv1\.weight\]", message)
    assert re.search(r"unexpected 1 \[kp_detector\.extra\.weight\]", message)
    assert "generator.final.bias (5,) vs ours (3,)" in message

    obj = fomm_fixture("fomm")
    obj["kp_detector"]["down.weight"] = obj["kp_detector"]["down.weight"] * 1.01
    with pytest.raises(ConversionError, match=r"kp_detector\.down\.weight differs from the fixed buffer"):
        convert_fomm_object(obj, "cpk.pth.tar", "fomm")
    with pytest.raises(ConversionError, match=r"missing entries \['generator'\]"):
        convert_fomm_object({"kp_detector": {}}, "cpk.pth.tar", "fomm")

    folder = tmp_path / "lp"
    liveportrait_folder(folder)
    (folder / "spade_generator.pth").unlink()
    assert convert_cli(["liveportrait", str(folder), str(tmp_path / "x.ckpt"), "--preset",
                                      "liveportrait_small"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "spade_generator{.pth,.safetensors}" in err and "\n" not in err
    torch.save({"net": nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # code, not data: refused
    assert convert_cli(["fomm", str(tmp_path / "pickled.pth"), str(tmp_path / "y.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read ") and "pickled.pth" in err and "\n" not in err
    assert "refuses to unpickle code" in err and "weights_only=True" in err


def test_unreadable_safetensors_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "lp"
    states = liveportrait_folder(folder)
    good = folder / "warping_module.safetensors"
    assert all(torch.equal(t, states["warping_module"][k]) for k, t in load_state_file(good).items())
    valid = good.read_bytes()
    torch.save(states["warping_module"], tmp_path / "state.pth")
    header = b"{not json"
    bad = {
        "empty": b"",
        "truncated": valid[: len(valid) - 100],
        "pickle": (tmp_path / "state.pth").read_bytes(),
        "bad_header": len(header).to_bytes(8, "little") + header,
    }
    for name, data in bad.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ConversionError, match=r"cannot read .* as a safetensors file: ") as error:
            load_state_file(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value), name
    with pytest.raises(ConversionError, match="file not found"):
        load_state_file(tmp_path / "absent.safetensors")

    good.write_bytes(bad["truncated"])
    assert convert_cli(["liveportrait", str(folder), str(tmp_path / "x.ckpt"), "--preset",
                                      "liveportrait_small"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read ") and "warping_module.safetensors" in err and "\n" not in err
    assert not (tmp_path / "x.ckpt").exists()


def test_discriminator_variant_is_read_from_the_file() -> None:
    # vox-adv-256: keypoint heatmaps as extra input channels, no spectral norm
    overrides = ["model.discriminator.use_kp=true", "model.discriminator.sn=false"]
    lay, fixed = fomm_layout(model_dict("fomm", overrides))
    tensors = {**fill(lay, torch.Generator().manual_seed(0)), **fixed}
    obj = {p: {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(p + ".")}
           for p in ("kp_detector", "generator", "discriminator")}
    state, cfg, _ = convert_fomm_object(obj, "vox-adv-cpk.pth.tar", "fomm")
    assert cfg.discriminator.use_kp is True and cfg.discriminator.sn is False
    assert state["discriminator.discs.1.down_blocks.0.conv.weight"].shape[1] == 3 + 10


# --- conventions --------------------------------------------------------------------------------------------
def test_spectral_norm_renaming_is_exact_including_pre_1_0_files() -> None:
    old = nn.utils.spectral_norm(nn.Conv2d(4, 6, 3))  # the API the official files were written with
    for _ in range(3):  # power iterations move u and v away from their initial values
        old(torch.randn(1, 4, 8, 8))
    old.eval()
    x = torch.randn(2, 4, 8, 8)
    holder = nn.Module()
    holder.conv = nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 6, 3))
    report = ConversionReport("test", "conv", "none")
    state = convert_state({f"conv.{k}": v for k, v in old.state_dict().items()}, holder, SPECTRAL_NORM_RENAMES, report)
    holder.load_state_dict(state)
    holder.eval()
    torch.testing.assert_close(holder.conv(x), old(x), atol=1e-6, rtol=0)
    legacy = {f"conv.{k}": v for k, v in old.state_dict().items() if k != "weight_v"}
    legacy["conv.weight"] = old.weight.detach().clone()  # pre-1.0 files kept W / sigma instead of v
    holder.load_state_dict(convert_state(legacy, holder, SPECTRAL_NORM_RENAMES, report))
    torch.testing.assert_close(holder.conv(x), old(x), atol=1e-5, rtol=0)
    assert report.derived == ["conv.weight"]


class FixedFeatures(nn.Module):
    """Stands in for the detector's hourglass, so the converted heads see a known feature map."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.expand(x.shape[0], -1, -1, -1)


VOX_NARROW = ["model.network.kp_detector.block_expansion=8", "model.network.kp_detector.max_features=32",
              "model.network.generator.block_expansion=8", "model.network.generator.max_features=16",
              "model.network.generator.num_bottleneck_blocks=1", "model.discriminator.max_features=16",
              "model.network.generator.dense_motion.block_expansion=8",
              "model.network.generator.dense_motion.max_features=32"]


def test_fomm_keypoints_jacobians_deformation_and_occlusion_hand_computed() -> None:
    from hydra.utils import instantiate

    # vox-256 geometry (256 input, 1/4 scale, 7x7 heads without padding) at narrow widths
    obj = fomm_fixture("fomm_vox256", VOX_NARROW)
    kd, dm, k, logit = obj["kp_detector"], obj["generator"], 10, 1.0
    peaks = [(3 * i + 1, 57 - 5 * i) for i in range(k)]  # (row, col) on the 58 x 58 heatmap
    kd["kp.weight"].zero_(), kd["kp.bias"].zero_(), kd["jacobian.weight"].zero_()
    a, b = torch.tensor([0.5, -0.2, 0.3, 0.1]), torch.tensor([1.0, 0.1, -0.1, 1.2])
    kd["jacobian.bias"] = b.repeat(k)
    for i in range(k):
        kd["kp.weight"][i, i, 3, 3] = logit
        kd["jacobian.weight"][4 * i : 4 * i + 4, i, 3, 3] = a
    dm["dense_motion_network.mask.weight"].zero_(), dm["dense_motion_network.occlusion.weight"].zero_()
    dm["dense_motion_network.mask.bias"] = torch.zeros(k + 1).index_fill(0, torch.tensor([4]), 50.0)
    dm["dense_motion_network.occlusion.bias"] = torch.tensor([0.7])
    state, cfg, _ = convert_fomm_object(obj, "vox-cpk.pth.tar", "fomm_vox256", VOX_NARROW)
    net = instantiate(cfg.network).eval()
    net.load_state_dict({n.split(".", 1)[1]: v for n, v in state.items() if n.startswith("network.")})

    features = torch.zeros(1, 8 + 3, 64, 64)  # one-hot features under each 7x7 window's centre
    for i, (r, c) in enumerate(peaks):
        features[0, i, r + 3, c + 3] = 1.0
    net.kp_detector.predictor = FixedFeatures(features)
    with torch.no_grad():
        kp = net.encode_motion(torch.rand(1, 3, 256, 256))
    assert kp["heatmap"].shape == (1, k, 58, 58)
    e = math.exp(logit / 0.1)  # temperature 0.1; every other cell has logit 0 and the grid sums to 0
    for i, (r, c) in enumerate(peaks):
        expected = torch.tensor([2 * c / 57 - 1, 2 * r / 57 - 1]) * (e - 1) / (e + 58 * 58 - 1)
        torch.testing.assert_close(kp["value"][0, i], expected, atol=1e-5, rtol=0)  # float32 sum of 3364 cells
        # the same float32 sum times a of up to ~1.5: its rounding depends on the CPU's kernels and thread count
        torch.testing.assert_close(kp["jacobian"][0, i].flatten(), b + a * e / (e + 58 * 58 - 1), atol=2e-5, rtol=0)

    # part 4 (keypoint 3) takes all mask weight: the deformation is its first-order motion everywhere
    kp_d = {"value": torch.rand(1, k, 2) - 0.5, "jacobian": torch.eye(2).repeat(1, k, 1, 1)}
    kp_s = {"value": torch.rand(1, k, 2) - 0.5, "jacobian": torch.eye(2).repeat(1, k, 1, 1)}
    kp_d["value"][0, 3], kp_d["jacobian"][0, 3] = torch.tensor([0.2, -0.1]), torch.tensor([[2.0, 0], [0, 1]])
    kp_s["value"][0, 3], kp_s["jacobian"][0, 3] = torch.tensor([-0.3, 0.4]), torch.tensor([[1.0, 1], [0, 1]])
    with torch.no_grad():
        out = net.render(torch.rand(1, 3, 256, 256), source_motion=kp_s, driving_motion=kp_d)
    deformation = out["deformation"][0]  # (64, 64, 2), (x, y)
    # z -> kp_s + J_s J_d^-1 (z - kp_d) with J_s J_d^-1 = [[0.5, 1], [0, 1]]
    torch.testing.assert_close(deformation[0, 0], torch.tensor([-1.8, -0.5]), atol=1e-6, rtol=0)  # z = (-1, -1)
    torch.testing.assert_close(deformation[0, -1], torch.tensor([-0.8, -0.5]), atol=1e-6, rtol=0)  # z = (1, -1)
    z = make_coordinate_grid((64, 64))
    expected = torch.stack([0.5 * (z[..., 0] - 0.2) + (z[..., 1] + 0.1) - 0.3, z[..., 1] + 0.1 + 0.4], dim=-1)
    torch.testing.assert_close(deformation, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["occlusion_map"], torch.full((1, 1, 64, 64), 1 / (1 + math.exp(-0.7))))
    assert out["prediction"].shape == (1, 3, 256, 256)


def test_liveportrait_keypoint_transform_through_converted_heads(tmp_path: Path) -> None:
    def heads(states: dict) -> None:
        m = states["motion_extractor"]
        for name in ("kp", "exp", "pitch", "yaw", "roll", "t", "scale"):
            m[f"detector.fc_{name}.weight"].zero_()
        bins = {"pitch": (32, 33), "yaw": (62, 63), "roll": (62, 63)}  # expectations 32.5, 62.5 -> 0, 90 degrees
        for name, (i, j) in bins.items():
            m[f"detector.fc_{name}.bias"] = torch.full((66,), -100.0).index_fill(0, torch.tensor([i, j]), 0.0)
        m["detector.fc_kp.bias"] = torch.tensor([0.1, 0.2, 0.3]).repeat(10)
        m["detector.fc_exp.bias"] = torch.tensor([0.01, 0.02, 0.03]).repeat(10)
        m["detector.fc_t.bias"] = torch.tensor([0.1, -0.2, 5.0])  # t_z must be ignored
        m["detector.fc_scale.bias"] = torch.tensor([1.5])

    liveportrait_folder(tmp_path, edit=heads)
    convert_liveportrait(tmp_path, tmp_path / "lp.ckpt", preset="liveportrait_small")
    net = load_pretrained(tmp_path / "lp.ckpt").network
    with torch.no_grad():
        kp = net.encode_motion(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(torch.stack([kp["pitch"], kp["yaw"], kp["roll"]], 1),
                               torch.tensor([[0.0, 90.0, 90.0]] * 2), atol=1e-4, rtol=0)
    # Rz(90) Ry(90) takes (a, b, c) to (-b, c, -a): (-0.2, 0.3, -0.1); + exp, * 1.5, + (0.1, -0.2, 0)
    expected = torch.tensor([-0.185, 0.28, -0.105]).expand(2, 10, 3)
    torch.testing.assert_close(kp["value"], expected, atol=1e-5, rtol=0)


def legacy_interpolation(n: int) -> torch.Tensor:
    """(n, n) weights of grid_sample(align_corners=False) at the corner-aligned grid: voxel i reads the input at
    i * n / (n - 1) - 0.5, linearly, with zeros outside."""
    position = torch.arange(n, dtype=torch.float64) * n / (n - 1) - 0.5
    return (1 - (position[:, None] - torch.arange(n, dtype=torch.float64)[None, :]).abs()).clamp(min=0).float()


def test_liveportrait_legacy_grid_sampling(liveportrait_small: tuple[Path, dict]) -> None:
    ramp = (torch.arange(4.0) + 1).expand(1, 1, 4, 4, 4).contiguous()  # value x + 1, constant in y and z
    identity = make_coordinate_grid((4, 4, 4)).unsqueeze(0)
    sampled = WarpingNetwork.deform_input(ramp, identity, align_corners=False)[0, 0]
    edge = torch.tensor([0.5, 1.0, 1.0, 0.5])  # half of an edge voxel's footprint lies in the zero padding
    along_x = torch.tensor([0.5, 1 + 5 / 6, 3 + 1 / 6, 2.0])
    torch.testing.assert_close(sampled, edge[:, None, None] * edge[None, :, None] * along_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(WarpingNetwork.deform_input(ramp, identity), ramp)  # our convention: exact

    w = load_pretrained(liveportrait_small[0]).network.warping_network
    assert w.align_corners is False and w.dense_motion_network.align_corners is False
    volume = torch.randn(1, 8, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    kp = torch.rand(1, 10, 3) - 0.5
    with torch.no_grad():
        out = w(volume, kp, kp)
        legacy = torch.einsum("zd,yh,xw,bcdhw->bczyx", legacy_interpolation(4), legacy_interpolation(16),
                              legacy_interpolation(16), volume)
        expected = w.fourth(w.third(legacy.reshape(1, 32, 16, 16))) * out["occlusion_map"]
        w.dense_motion_network.align_corners = True
        masks_true = w.dense_motion_network(volume, kp, kp + 0.2)["mask"]
        w.dense_motion_network.align_corners = False
        masks_false = w.dense_motion_network(volume, kp, kp + 0.2)["mask"]
    torch.testing.assert_close(out["deformation"], make_coordinate_grid((4, 16, 16))[None])
    torch.testing.assert_close(out["out"], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masks_true, masks_false)  # the sparse warps use the flag too


# --- fine-tuning ----------------------------------------------------------------------------------------------
def test_converted_fomm_fine_tunes(tmp_path: Path, fomm_small: tuple[Path, dict]) -> None:
    path = fomm_small[0]
    cfg = train_config(tmp_path / "run", tmp_path / "cache", ["model=fomm", f"model.init_from={path}",
                                                               "model.network.generator.blend_warped_source=false",
                                                               "model.lr.kp_detector=2e-4", "model.lr.generator=2e-4",
                                                               "trainer.limit_val_batches=0",
                                                               "callbacks.reconstruction_visualizer.every_n_epochs=100"])
    _, objects = run(cfg)
    converted = {k.split(".", 1)[1]: v for k, v in read_checkpoint(path)["state_dict"].items()
                 if k.startswith("network.")}
    params = dict(objects["task"].network.named_parameters())
    drift = max((p.detach().cpu() - converted[name]).abs().max().item() for name, p in params.items())
    assert 0 < drift < 2e-3  # two Adam steps (lr 2e-4) away from the converted weights, not from a fresh init
    trainer = objects["trainer"]
    assert trainer.global_step == 4  # 2 batches x 2 optimisers (keypoint detector, generator)
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))
