"""What is special about the implicit warping family: attention through SDPA, extra tokens and token dropout, several
source images (order-free, several-source data, validation and animation), and one-source families refusing more."""

from __future__ import annotations

import pytest
import torch

from reenact.data.augmentation import Augmentation
from reenact.families.base import ReenactmentFamily, SeveralSourcesError
from reenact.families.implicit_warping import ImplicitWarpingModel
from reenact.families.implicit_warping.cross_modal_attention import CrossModalAttention, attend, attention_weights
from reenact.families.implicit_warping.decoder import ImageDecoder
from reenact.families.implicit_warping.feature_unet import FeatureUNet
from reenact.families.implicit_warping.keypoint_detector import KeypointDetector
from reenact.families.implicit_warping.keypoint_representation import SpatialKeypointRepresentation
from reenact.families.implicit_warping.value_encoder import ValueEncoder

SIZE = 32


def tiny_model(dropout: float = 0.0) -> ImplicitWarpingModel:
    """32x32 frames, queries at 16x16, keys and values at 8x8 per source."""
    torch.manual_seed(0)
    return ImplicitWarpingModel(
        keypoint_detector=KeypointDetector(num_kp=4, block_expansion=8, max_features=32, num_blocks=2,
                                           scale_factor=0.5),
        keypoint_representation=SpatialKeypointRepresentation(num_kp=4, embedding_dim=8, kp_variance=0.02),
        query_encoder=FeatureUNet(8, out_features=16, block_expansion=8, num_blocks=2, max_features=32),
        key_encoder=FeatureUNet(11, out_features=16, block_expansion=8, num_blocks=2, max_features=32),
        value_encoder=ValueEncoder(block_expansion=8, num_down_blocks=2, max_features=16),
        attention=CrossModalAttention(dim=16, value_dim=16, num_extra_tokens=2, source_token_dropout=dropout,
                                      mlp_hidden=16, num_frequencies=3),
        decoder=ImageDecoder(in_features=16, block_expansion=8, max_features=16, num_up_blocks=1,
                             num_bottleneck_blocks=1),
    )


def smooth(batch: int, seed: int) -> torch.Tensor:
    """Smooth random images (B, 3, SIZE, SIZE): a coarse field upsampled."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def attention_inputs(seed: int = 0, sources: int = 2):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(2, 16, 8, 8, generator=generator)
    keys = torch.randn(2, sources, 16, 4, 4, generator=generator)
    values = torch.randn(2, sources, 16, 4, 4, generator=generator)
    pixels = torch.rand(2, sources, 3, 4, 4, generator=generator)
    return query, keys, values, pixels


# ------------------------------------------------------------------------------------------------ attention
def test_sdpa_path_equals_naive_softmax_attention() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, n, c, generator=generator) for n, c in ((50, 16), (70, 16), (70, 24)))
    keep = torch.rand(3, 70, generator=generator) > 0.3
    keep[:, -1] = True
    for mask in (None, keep):
        naive = attention_weights(q, k, mask) @ v
        torch.testing.assert_close(attend(q, k, v, mask), naive, atol=1e-5, rtol=1e-5)


def test_attention_rows_sum_to_one_including_the_extra_tokens() -> None:
    torch.manual_seed(0)
    layer = CrossModalAttention(dim=16, value_dim=16, num_extra_tokens=3, source_token_dropout=0.0, mlp_hidden=8,
                                num_frequencies=3).eval()
    with torch.no_grad():
        layer.extra_keys.normal_()  # extra tokens that attract some attention
        q, k, v, keep = layer.tokens(*attention_inputs())
    weights = attention_weights(q, k, keep)  # (B, q, 2 * 16 + 3)
    assert weights.shape[-1] == 2 * 16 + 3
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-6, rtol=0)
    assert (weights[..., -3:] > 0).all(), "the extra tokens take part in every row"
    out = layer(*attention_inputs())
    # the mass per source plus the extra tokens' mass is the whole row
    extra_mass = weights[..., -3:].sum(-1).view(2, 8, 8)
    torch.testing.assert_close(out["mass"].sum(1) + extra_mass, torch.ones(2, 8, 8), atol=1e-5, rtol=0)


def test_with_every_source_token_dropped_only_the_extra_tokens_are_used() -> None:
    torch.manual_seed(0)
    layer = CrossModalAttention(dim=16, value_dim=16, num_extra_tokens=2, source_token_dropout=0.0, mlp_hidden=8,
                                num_frequencies=3).eval()
    none_kept = torch.zeros(2, 2 * 16, dtype=torch.bool)
    query, keys, values, pixels = attention_inputs(0)
    first = layer(query, keys, values, pixels, keep=none_kept)
    other = layer(query, *attention_inputs(5)[1:], keep=none_kept)  # different sources entirely
    assert all(torch.isfinite(t).all() for t in first.values())
    assert first["mass"].abs().max() == 0
    torch.testing.assert_close(first["features"], other["features"], atol=1e-6, rtol=0)

    # the same through the whole model, by dropout during training
    model = tiny_model(dropout=1.0).train()
    sources = torch.stack([smooth(2, 1), smooth(2, 2)], dim=1)
    out = model.forward_sources(sources, smooth(2, 3))
    assert torch.isfinite(out["prediction"]).all() and out["occlusion_map"].abs().max() == 0


def test_extra_tokens_need_a_place_to_go_when_sources_can_be_dropped() -> None:
    with pytest.raises(ValueError, match="num_extra_tokens"):
        CrossModalAttention(dim=8, value_dim=8, num_extra_tokens=0, source_token_dropout=0.1)


# ------------------------------------------------------------------------------------------------ several sources
def test_the_order_of_the_sources_does_not_matter() -> None:
    model = tiny_model().eval()
    a, b, driving = smooth(2, 1), smooth(2, 2), smooth(2, 3)
    with torch.no_grad():
        model.query_encoder.projection.weight.normal_(0, 0.2)  # keypoint-dependent attention, not PE alone
        model.key_encoder.projection.weight.normal_(0, 0.2)
        ab = model.forward_sources(torch.stack([a, b], 1), driving)["prediction"]
        ba = model.forward_sources(torch.stack([b, a], 1), driving)["prediction"]
    torch.testing.assert_close(ab, ba, atol=1e-5, rtol=0)


def test_the_driving_frame_among_the_sources_brings_the_prediction_closer() -> None:
    """One of two sources *is* the driving frame (so its keypoints coincide with the driving keypoints): the
    prediction is closer to the driving frame than from the other source alone."""
    model = tiny_model().eval()
    driving, other = smooth(2, 3), smooth(2, 4)
    with torch.no_grad():
        alone = model.forward_sources(other[:, None], driving)["prediction"]
        both = model.forward_sources(torch.stack([other, driving], 1), driving)["prediction"]
    assert (both - driving).abs().mean() < 0.8 * (alone - driving).abs().mean()


def test_one_source_and_several_sources_forms_agree() -> None:
    model = tiny_model().eval()
    source, driving = smooth(2, 1), smooth(2, 2)
    with torch.no_grad():
        one = model(source, driving)["prediction"]
        several = model.forward_sources(source[:, None], driving)["prediction"]
        motion_s, motion_d = model.encode_motion(source), model.encode_motion(driving)
        rendered = model.render_sources(source[:, None], [motion_s], motion_d)["prediction"]
    torch.testing.assert_close(one, several)
    torch.testing.assert_close(one, rendered)


class OneSourceFamily(ReenactmentFamily):
    """The contract's defaults: one source image."""

    family = "test_one_source"

    def forward(self, source: torch.Tensor, driving: torch.Tensor):
        return {"prediction": source}


def test_the_decoder_returns_d_untrained_and_blends_it_with_its_painting_when_asked() -> None:
    """Logit mode: a zero correction returns the warped source D. Blend mode: a constant mask of 1 returns D, a
    constant mask of 0 the decoder's own painting, which does not depend on D."""
    torch.manual_seed(0)
    features, skips = torch.randn(2, 16, 8, 8), [torch.randn(2, 8, 16, 16)]
    warped, other = smooth(2, 1)[..., :16, :16], smooth(2, 2)[..., :16, :16]
    plain = ImageDecoder(in_features=16, block_expansion=8, max_features=16, num_up_blocks=1, num_bottleneck_blocks=1)
    with torch.no_grad():
        torch.testing.assert_close(plain(features, skips, warped), warped, atol=2e-3, rtol=0)  # logit clamp 1e-3
    blended = ImageDecoder(in_features=16, block_expansion=8, max_features=16, num_up_blocks=1,
                           num_bottleneck_blocks=1, blend_warped_source=True).eval()
    torch.nn.init.zeros_(blended.blend.head.weight)
    with torch.no_grad():
        blended.blend.head.bias.fill_(30.0)  # V = 1
        torch.testing.assert_close(blended(features, skips, warped), warped, atol=1e-6, rtol=0)
        blended.blend.head.bias.fill_(-30.0)  # V = 0
        painted = blended(features, skips, warped)
        torch.testing.assert_close(blended(features, skips, other), painted, atol=1e-6, rtol=0)
        assert (painted - warped).abs().mean() > 0.05


def test_a_one_source_family_refuses_several_sources_in_one_line() -> None:
    family = OneSourceFamily()
    frames = torch.rand(1, 2, 3, 8, 8)
    with pytest.raises(SeveralSourcesError, match="renders from at most 1 source image; got 2") as error:
        family.forward_sources(frames, frames[:, 0])
    assert "\n" not in str(error.value)
    assert family.forward_sources(frames[:, :1], frames[:, 0])["prediction"] is not None
    batch = {"source": frames[:, 0], "driving": frames[:, 0], "sources": frames}
    with pytest.raises(SeveralSourcesError):
        family.training_forward(batch)


# ------------------------------------------------------------------------------------------------ data
def test_augmentation_treats_every_source_alike() -> None:
    sources = torch.rand(3, 3, 8, 8)
    sample = {"source": sources[0].clone(), "driving": torch.rand(3, 8, 8), "sources": sources}
    generator = torch.Generator().manual_seed(0)
    flipped = Augmentation(time_flip_p=0, horizontal_flip_p=1, brightness=0, contrast=0, saturation=0, hue=0)(
        sample, generator)
    torch.testing.assert_close(flipped["sources"], sources.flip(-1))
    swapped = Augmentation(time_flip_p=1, brightness=0.5, contrast=0, saturation=0, hue=0)(sample, generator)
    assert torch.equal(swapped["sources"][0], swapped["source"])
    # one brightness factor for all: every frame scaled alike
    ratio = swapped["sources"][1:] / sources[1:]
    assert torch.allclose(ratio[ratio.isfinite() & (sources[1:] > 0.05) & (swapped["sources"][1:] < 1)],
                          (swapped["source"] / sample["driving"]).median(), atol=1e-4)


def test_several_sources_per_pair_keep_the_pair_of_one_source(tmp_path) -> None:
    """data.num_sources draws the pair one source would (same frames, same augmentation) plus more source frames of
    the same clip, the source first."""
    from reenact.data.datasets import PairDataset
    from reenact.data.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(tmp_path, resolution=32, num_train_identities=2, num_test_identities=1,
                                    clips_per_identity=1, num_frames=6) / "train"
    one, three = PairDataset(root, 32, seed=0), PairDataset(root, 32, seed=0, num_sources=3)
    one.augmentation = three.augmentation = Augmentation()
    for key in range(4):
        a, b = one[key], three[key]
        assert "sources" not in a and b["sources"].shape == (3, 3, 32, 32)
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])
        assert torch.equal(b["sources"][0], b["source"])
    with pytest.raises(ValueError, match="num_sources"):
        PairDataset(root, 32, num_sources=0)


def test_training_with_two_sources_validates_with_one_and_two(tmp_path) -> None:
    """data.num_sources=2 through the training entry point: batches carry two sources, validation logs both
    errors, and the checkpoint animates from two source images through the API."""
    import reenact
    from reenact.cli.train import run as train
    from tests.helpers.configs import train_config

    cfg = train_config(tmp_path / "run", tmp_path / "cache", [
        "model=implicit_warping_small", "data.num_sources=2", "data.batch_size=2", "trainer.limit_train_batches=1",
        "data.val_videos=1", "data.val_max_frames=4", "callbacks.reconstruction_visualizer.num_frames=2"])
    metrics, _ = train(cfg)
    assert {"val/l1", "val/l1_two_sources"} <= set(metrics)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = reenact.load_pretrained(checkpoint)
    sources, driving = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    frames = model.animate(sources, driving)
    assert frames.shape == (3, 3, 64, 64) and torch.isfinite(frames).all()

    # the animate entry point with a list of source images: one video
    import numpy as np
    from PIL import Image

    from reenact.data.video_writer import write_video
    from tests.test_animate import animate

    paths = []
    for i, image in enumerate(sources):
        paths.append(tmp_path / f"source{i}.png")
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(paths[-1])
    video = tmp_path / "driving.mp4"
    write_video(video, (driving.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), fps=10)
    results = animate(checkpoint, f"[{paths[0]},{paths[1]}]", video, tmp_path / "out" / "two.mp4",
                      "crop.source=false", "crop.driving=false")
    assert len(results) == 1 and results[0].num_frames == 3 and (tmp_path / "out" / "two.mp4").is_file()
