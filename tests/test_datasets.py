"""Pair/video datasets, augmentation and the data module on a tiny synthetic set."""

from __future__ import annotations

import itertools
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reenact.data.augmentation import IBUG68_FLIP_PERMUTATION, Augmentation
from reenact.data.datamodule import ReenactDataModule, split_identities
from reenact.data.datasets import DatasetError, PairDataset, VideoDataset, normalise_landmarks
from reenact.data.synthetic import (
    LANDMARK_FLIP_PERMUTATION,
    Canvas,
    Identity,
    Motion,
    ensure_synthetic_dataset,
    render_frame,
)
from reenact.data.video_writer import write_frame_folder, write_video

SPEC = dict(resolution=64, num_train_identities=3, num_test_identities=2, clips_per_identity=2, num_frames=12)
NO_AUGMENTATION = Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("cache"), **SPEC)


def frame_of(pose: torch.Tensor, clip_pose: np.ndarray) -> int:
    """Which frame of the clip a returned pose label belongs to (labels differ between frames)."""
    matches = np.flatnonzero(np.abs(clip_pose - pose.numpy()).max(1) < 1e-5)
    assert len(matches) == 1
    return int(matches[0])


def test_pair_items(data: Path) -> None:
    dataset = PairDataset(data / "train", frame_size=64)
    assert len(dataset) == 3 and PairDataset(data / "train", 64, id_sampling=False, num_repeats=2).__len__() == 12
    torch.manual_seed(3)
    for index in range(6):
        item = dataset[index]
        assert set(item) == {"source", "driving", "source_landmarks", "driving_landmarks", "source_pose",
                             "driving_pose"}
        for key in ("source", "driving"):
            assert item[key].shape == (3, 64, 64) and item[key].dtype == torch.float32
            assert 0 <= item[key].min() and item[key].max() <= 1
        assert item["source_landmarks"].shape == (16, 2) and item["source_landmarks"].abs().max() <= 1
        # The pair comes from one clip of identity `index % 3`, source not later than driving, and the labels
        # belong to exactly those frames.
        identity = dataset.identities[index % 3]
        owners = [c for c in dataset.by_identity[identity]
                  if (np.abs(np.load(c.pose) - item["source_pose"].numpy()).max(1) < 1e-5).any()]
        assert len(owners) == 1
        clip_pose, clip_landmarks = np.load(owners[0].pose), np.load(owners[0].landmarks)
        first, second = frame_of(item["source_pose"], clip_pose), frame_of(item["driving_pose"], clip_pose)
        assert first <= second
        expected = 2 * clip_landmarks[[first, second]] / 63 - 1  # align_corners=True normalisation
        assert torch.allclose(torch.stack([item["source_landmarks"], item["driving_landmarks"]]),
                              torch.from_numpy(expected), atol=1e-5)


def test_resized_landmarks_follow_the_image(data: Path) -> None:
    item = PairDataset(data / "train", frame_size=32)[0]
    assert item["source"].shape == (3, 32, 32)
    points = np.array([[0.0, 0.0], [63.0, 63.0], [31.5, 31.5]])
    assert torch.allclose(normalise_landmarks(points, 64, 64, 32), torch.tensor([[-1.0153, -1.0153], [1.0153, 1.0153],
                                                                               [0.0, 0.0]]), atol=1e-3)


def test_workers_draw_different_pairs(data: Path) -> None:
    single = PairDataset(data / "train", 64, id_sampling=False, num_repeats=8, identities=["id0000"])
    single[0]  # decoding in the parent first: forked workers must not inherit a stuck scaler context
    loader = DataLoader(single, batch_size=1, num_workers=2, shuffle=False, timeout=60)
    draws = [tuple(b["source_pose"][0].tolist() + b["driving_pose"][0].tolist()) for b in loader]
    assert draws[0::2] != draws[1::2]  # worker 0 and worker 1 are not seeded alike


def test_broken_clips_are_skipped_with_a_count(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "clips"
    shutil.copytree(data / "train", folder)
    good = folder / "id0000#000.mp4"
    (folder / "empty#000.mp4").write_bytes(b"")
    (folder / "text#000.mp4").write_text("not a video\n" * 20)
    (folder / "cut#000.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write_video(folder / "short#000.mp4", [np.zeros((64, 64, 3), np.uint8)], fps=25)
    (folder / "notes.txt").write_text("ignored: not a clip")
    with caplog.at_level(logging.WARNING, logger="reenact.data.datasets"):
        dataset = PairDataset(folder, 64)
    assert len(dataset.clips) == 6 and len(dataset.identities) == 3
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "skipped 4 of 10 clips (3 unreadable, 1 shorter than 2 frames)" in lines[0]
    # A clip that breaks after the scan is skipped at item time and counted, not a crash.
    for clip in dataset.by_identity["id0001"]:
        clip.path.write_bytes(b"\x00" * 4096)
    torch.manual_seed(0)
    item = dataset[1]  # identity id0001, whose clips are now all broken: another clip is drawn
    assert item["source"].shape == (3, 64, 64) and dataset.decode_failures >= 1


def test_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"no usable video clips in {tmp_path}"):
        PairDataset(tmp_path, 64)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        VideoDataset(tmp_path / "missing", 64)


def test_frame_folders_and_video_dataset(data: Path, tmp_path: Path) -> None:
    frames = (np.random.default_rng(0).random((5, 48, 48, 3)) * 255).astype(np.uint8)
    write_frame_folder(tmp_path / "b#000.mp4", frames)
    write_frame_folder(tmp_path / "a#000.mp4", frames[:3])
    pair = PairDataset(tmp_path, 48, augmentation=NO_AUGMENTATION)[0]
    assert set(pair) == {"source", "driving"}  # no side files, no label keys
    assert any(torch.equal(pair["source"], torch.from_numpy(f).permute(2, 0, 1) / 255) for f in frames)
    videos = VideoDataset(tmp_path, 32, max_frames=4)
    assert [videos[i]["name"] for i in range(len(videos))] == ["a#000", "b#000"]
    assert videos[0]["video"].shape == (3, 3, 32, 32) and videos[1]["video"].shape == (4, 3, 32, 32)
    test_videos = VideoDataset(data / "test", 64, max_frames=5, max_videos=3)
    assert len(test_videos) == 3
    item = test_videos[0]
    assert item["video"].shape == (5, 3, 64, 64) and item["landmarks"].shape == (5, 16, 2)
    assert item["pose"].shape == (5, 3)


def mirrored(motion: Motion) -> Motion:
    shift, gaze = motion.shift.copy(), motion.gaze.copy()
    shift[:, 0], gaze[:, 0] = -shift[:, 0], -gaze[:, 0]
    return replace(motion, yaw=-motion.yaw, roll=-motion.roll, shift=shift, gaze=gaze)


def test_horizontal_flip_matches_a_mirrored_rendering() -> None:
    identity = Identity.sample(np.random.default_rng([0, 7, 0]))
    motion = Motion.sample(np.random.default_rng(11), 8, 25.0)
    background = np.full((64, 64, 3), 0.5, np.float32)
    light = np.array([0.0, 0.0, 1.0])

    def sample(m: Motion) -> dict[str, torch.Tensor]:
        out = {}
        for key, frame in (("source", 1), ("driving", 6)):
            image, points = render_frame(Canvas(background), identity, m, frame, light)
            out[key] = torch.from_numpy(image).permute(2, 0, 1).float() / 255
            out[f"{key}_landmarks"] = normalise_landmarks(points, 64, 64, 64)
            out[f"{key}_pose"] = torch.tensor([m.yaw[frame], m.pitch[frame], m.roll[frame]], dtype=torch.float32)
        return out

    flip = Augmentation(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, landmark_flip_permutation=LANDMARK_FLIP_PERMUTATION)
    flipped, expected = flip(sample(motion), torch.Generator().manual_seed(0)), sample(mirrored(motion))
    for key in ("source_landmarks", "driving_landmarks", "source_pose", "driving_pose"):
        assert torch.allclose(flipped[key], expected[key], atol=1e-4), key
    assert torch.equal(flipped["source"], sample(motion)["source"].flip(-1))


def test_time_flip_skips_horizontal_flip_and_jitter_is_shared() -> None:
    image = torch.rand(3, 8, 8)
    sample = {"source": image, "driving": image.roll(1, -1), "source_pose": torch.tensor([1.0, 2.0, 3.0]),
              "driving_pose": torch.tensor([4.0, 5.0, 6.0])}
    swapped = Augmentation(1.0, 1.0, 0.0, 0.0, 0.0, 0.0)(sample, torch.Generator())
    assert torch.equal(swapped["source"], sample["driving"]) and torch.equal(swapped["driving_pose"],
                                                                             sample["source_pose"])
    same = {"source": image, "driving": image.clone()}
    jitter = Augmentation(0.0, 0.0, 0.1, 0.1, 0.1, 0.1)
    out = jitter(same, torch.Generator().manual_seed(4))
    assert torch.equal(out["source"], out["driving"]) and not torch.allclose(out["source"], image, atol=1e-3)
    again = jitter(same, torch.Generator().manual_seed(4))
    assert torch.equal(out["source"], again["source"])  # deterministic for a given generator


def test_shape_jitter_moves_every_frame_and_its_landmarks_alike_and_is_off_by_default() -> None:
    """One random axis-aligned map per sample: a dot drawn at a landmark is found where the moved landmark says, the
    source and every extra source move exactly as the driving frame, and with the defaults nothing is resampled."""
    image = torch.zeros(3, 64, 64)
    image[:, 20, 40] = 1.0  # a dot at row 20, column 40
    point = torch.tensor([[2 * 40 / 63 - 1, 2 * 20 / 63 - 1]])  # normalised (x, y), align_corners=True
    sample = {"source": image, "driving": image.clone(), "sources": torch.stack([image, image.clone()]),
              "source_landmarks": point, "driving_landmarks": point.clone(),
              "source_pose": torch.tensor([1.0, 2.0, 3.0]), "driving_pose": torch.tensor([1.0, 2.0, 3.0])}
    jitters = [Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, shape_scale=0.2, shape_shift=0.2),
               Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, shape_zoom=0.5)]
    zooms = []
    for shape, seed in itertools.product(jitters, range(4)):
        out = shape(sample, torch.Generator().manual_seed(seed))
        assert torch.equal(out["source"], out["driving"]) and torch.equal(out["sources"][1], out["driving"])
        moved = (out["driving_landmarks"][0] + 1) / 2 * 63  # pixels (x, y)
        if not shape.shape_zoom:
            assert (moved - torch.tensor([40.0, 20.0])).abs().max() > 0.5  # it did move
        dot = out["driving"][0]
        rows, cols = torch.arange(64.0)[:, None], torch.arange(64.0)[None]
        found = torch.stack([(dot * cols).sum() / dot.sum(), (dot * rows).sum() / dot.sum()])
        assert (found - moved).abs().max() < 0.5, (seed, found, moved)
        torch.testing.assert_close(out["source_landmarks"], out["driving_landmarks"])
        assert torch.equal(out["driving_pose"], sample["driving_pose"])
        if shape.shape_zoom:  # a zoom alone scales both axes alike, within [1 / 1.5, 1.5]
            zoom = out["driving_landmarks"][0] / point[0]
            assert abs(zoom[0] - zoom[1]) < 1e-5 and 1 / 1.5 <= zoom[0] <= 1.5
            zooms.append(zoom[0].item())
    assert max(zooms) - min(zooms) > 0.2  # it did zoom, by different amounts
    plain = Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)(sample, torch.Generator().manual_seed(0))
    assert all(torch.equal(plain[k], sample[k]) for k in sample)
    with pytest.raises(ValueError, match="shape_scale"):
        Augmentation(shape_scale=0.7)
    with pytest.raises(ValueError, match="shape_zoom"):
        Augmentation(shape_zoom=1.5)


def test_flip_permutations_are_validated() -> None:
    Augmentation(landmark_flip_permutation=IBUG68_FLIP_PERMUTATION)
    assert IBUG68_FLIP_PERMUTATION[36] == 45 and IBUG68_FLIP_PERMUTATION[48] == 54
    with pytest.raises(ValueError, match="involution"):
        Augmentation(landmark_flip_permutation=[1, 2, 0])
    with pytest.raises(ValueError, match="hue"):
        Augmentation(hue=0.7)


def test_datamodule_synthetic_batches(tmp_path: Path) -> None:
    synthetic = dict(SPEC, cache_dir=str(tmp_path))
    module = ReenactDataModule(synthetic=synthetic, frame_size=64, batch_size=2, num_workers=0, val_videos=2,
                               val_max_frames=6)
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["source"].shape == (2, 3, 64, 64) and batch["driving_landmarks"].shape == (2, 16, 2)
    assert module.train_dataloader().drop_last  # 3 identities > batch of 2
    video = next(iter(module.val_dataloader()))
    assert video["video"].shape == (1, 6, 3, 64, 64) and len(module.val_dataloader()) == 2
    assert "3 identities" in module.describe() and module.hparams["synthetic"]["cache_dir"] == str(tmp_path)
    assert module.train_set.augmentation.landmark_flip_permutation.tolist() == list(LANDMARK_FLIP_PERMUTATION)


def test_datamodule_folder_split_and_errors(data: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for clip in sorted((data / "train").glob("*.mp4")) + sorted((data / "test").glob("*.mp4")):
        shutil.copy(clip, flat / clip.name)
        np.save(flat / f"{clip.stem}.landmarks.npy", np.full((12, 68, 2), 30.0, np.float32))  # dlib layout
    module = ReenactDataModule(root=str(flat), frame_size=32, batch_size=8, num_workers=0)
    module.setup("fit")
    assert module.train_set.augmentation.landmark_flip_permutation.tolist() == list(IBUG68_FLIP_PERMUTATION)
    assert module.train_set[0]["source_landmarks"].shape == (68, 2) and not module.train_set.with_pose
    train_ids, val_ids = set(module.train_set.identities), {c.identity for c in module.val_set.clips}
    assert len(train_ids) == 4 and len(val_ids) == 1 and not train_ids & val_ids
    assert not module.train_dataloader().drop_last  # 4 pairs per epoch do not fill a batch of 8
    assert split_identities(["a", "b", "c", "d", "e"]) == split_identities(["e", "d", "c", "b", "a"])
    with pytest.raises(DatasetError, match=str(tmp_path / "nowhere")):
        ReenactDataModule(root=str(tmp_path / "nowhere")).prepare_data()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable video clips"):
        ReenactDataModule(root=str(tmp_path / "empty"), num_workers=0).setup("fit")
    with pytest.raises(ValueError, match="exactly one"):
        ReenactDataModule()


def test_colour_jitter_matches_torchvision_chain() -> None:
    from torchvision.transforms.v2 import functional as TF

    from reenact.data.augmentation import colour_jitter

    # mid-range colours, so that no intermediate value is clamped and the folded map must equal the chain
    pair = 0.3 + 0.4 * torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    settings = {"brightness": 1.08, "contrast": 0.93, "saturation": 1.1, "hue": 0.0}
    reference_ops = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
                     "saturation": TF.adjust_saturation}
    for order in (["brightness", "contrast", "saturation"], ["saturation", "contrast", "brightness"],
                  ["contrast", "brightness", "saturation"]):
        expected = []
        for image in pair:
            for name in order:
                image = reference_ops[name](image, settings[name])
            expected.append(image)
        assert torch.allclose(colour_jitter(pair, settings, order + ["hue"]), torch.stack(expected), atol=1e-5)
    saturated = torch.ones(1, 3, 4, 4)
    assert torch.equal(colour_jitter(saturated, dict(settings, brightness=1.1), ["brightness"]), saturated)


def test_hue_rotation_moves_like_an_hsv_shift() -> None:
    from torchvision.transforms.v2 import functional as TF

    from reenact.data.augmentation import colour_jitter

    def rotate_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
        return colour_jitter(image[None], {"hue": shift}, ["hue"])[0]

    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    grey = torch.full((3, 4, 4), 0.4)
    assert torch.allclose(rotate_hue(grey, 0.1), grey, atol=1e-6)  # no chroma, nothing to rotate
    assert torch.allclose(rotate_hue(image, 0.0), image, atol=1e-6)
    for shift in (0.05, -0.1):
        reference = TF.adjust_hue(image, shift)
        error = (rotate_hue(image, shift) - reference).abs().mean()
        assert error < 0.5 * (rotate_hue(image, -shift) - reference).abs().mean()  # same direction as HSV
        change, reference_change = (rotate_hue(image, shift) - image).abs().mean(), (reference - image).abs().mean()
        assert 0.5 < change / reference_change < 2  # and a similar strength


def test_decoded_clip_cache_returns_the_same_items_within_its_budget(data: Path) -> None:
    plain = PairDataset(data / "train", 64, num_repeats=2, augmentation=NO_AUGMENTATION)
    cached = PairDataset(data / "train", 64, num_repeats=2, augmentation=NO_AUGMENTATION, cache_mb=64)
    for index in range(len(plain)):
        a, b = plain[index], cached[index]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    clip_bytes = [c.num_frames * c.height * c.width * 3 for c in cached.clips]
    assert 0 < cached._cached_bytes <= sum(clip_bytes)
    assert all(v is not None for v in cached._cache.values())
    # a budget smaller than one clip caches nothing and still reads every item
    tiny = PairDataset(data / "train", 64, augmentation=NO_AUGMENTATION, cache_mb=min(clip_bytes) / 2**20 / 2)
    torch.testing.assert_close(tiny[0]["source"], plain[0]["source"], rtol=0, atol=0)
    assert tiny._cached_bytes == 0 and not tiny._cache
