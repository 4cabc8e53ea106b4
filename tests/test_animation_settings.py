"""The one list of animation settings (reenact.animation.settings) and the transfer modes every caller goes through:
the Python API, the command line (``transfer=``, a family's own options by their names) and the older ``relative``
flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reenact.animation.errors import AnimationInputError
from reenact.animation.pipeline import animate_frames, resolve_settings
from reenact.animation.settings import AnimationSettings
from reenact.animation.video_job import AnimationOptions
from reenact.cli.animate import family_option_overrides
from reenact.families.base import TransferModeError
from reenact.utils.hydra_utils import compose_config
from tests.test_animate import fomm

REPO = Path(__file__).resolve().parents[1]


def test_settings_refuse_bad_values_in_one_line() -> None:
    for bad in ({"reference_frame": "middle"}, {"precision": "fp8"}, {"batch_size": 0}, {"max_frames": 0},
                {"best_frame_by": "eyes"}):
        with pytest.raises(AnimationInputError) as error:
            AnimationSettings(**bad)
        assert "\n" not in str(error.value) and next(iter(bad)) in str(error.value)


def test_file_options_extend_the_settings() -> None:
    options = AnimationOptions(transfer="absolute", paste_back=True)
    assert isinstance(options, AnimationSettings) and options.transfer == "absolute" and options.paste_back


def test_keywords_resolve_into_settings_and_family_options() -> None:
    settings = resolve_settings(None, {"relative": False, "batch_size": 3, "adapt_movement_scale": True})
    assert settings.transfer == "absolute" and settings.batch_size == 3
    assert settings.transfer_options == {"adapt_movement_scale": True}
    assert resolve_settings(None, {"relative": True, "transfer": "absolute"}).transfer == "absolute"
    assert resolve_settings(None, {}).transfer is None  # the family's default


def test_default_mode_is_the_familys_first_and_options_get_their_defaults() -> None:
    network = fomm()
    assert AnimationSettings().check(network) == ("relative", {"adapt_movement_scale": False})
    assert AnimationSettings(transfer="absolute").check(network)[0] == "absolute"
    with pytest.raises(TransferModeError, match=r"'fomm' family transfers motion by relative \| absolute"):
        AnimationSettings(transfer="avd").check(network)
    with pytest.raises(TransferModeError, match="no transfer option 'stitching'"):
        AnimationSettings(transfer_options={"stitching": True}).check(network)


def test_animate_frames_by_mode_and_option() -> None:
    torch.manual_seed(0)
    network = fomm()
    source, driving = torch.rand(3, 64, 64), torch.rand(4, 3, 64, 64)
    default = animate_frames(network, source, driving)
    relative = animate_frames(network, source, driving, relative=True)
    absolute = animate_frames(network, source, driving, transfer="absolute")
    assert torch.equal(default, relative) and not torch.equal(relative, absolute)
    scaled = animate_frames(network, source, driving, adapt_movement_scale=True)
    assert scaled.shape == default.shape
    assert animate_frames(network, source, driving, max_frames=2).shape[0] == 2
    with pytest.raises(TransferModeError):
        animate_frames(network, source, driving, transfer="sideways")


def test_family_options_are_accepted_by_name_on_the_command_line() -> None:
    args = ["ckpt_path=x", "adapt_movement_scale=true", "transfer=absolute", "crop.increase=0.2", "relative=false"]
    rewritten = family_option_overrides(args, "animate")
    assert rewritten == ["ckpt_path=x", "+transfer_options.adapt_movement_scale=true", "transfer=absolute",
                         "crop.increase=0.2", "relative=false"]
    cfg = compose_config("animate", rewritten)
    from reenact.cli.animate import options_from_config

    options = options_from_config(cfg)
    assert options.transfer == "absolute" and options.transfer_options == {"adapt_movement_scale": True}
    older = options_from_config(compose_config("animate", ["relative=false"]))
    assert older.transfer == "absolute" and older.transfer_options == {}
    assert options_from_config(compose_config("animate", [])).transfer is None


def test_a_mode_the_family_lacks_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    from tests.test_animate import _train_tiny

    ckpt = _train_tiny(tmp_path / "run", tmp_path / "cache", ["model=correlation_small", "trainer.max_epochs=1"])
    from reenact.data.video_writer import write_video

    image = tmp_path / "source.png"
    frames = (torch.rand(3, 64, 64, 3) * 255).byte().numpy()
    from PIL import Image

    Image.fromarray(frames[0]).save(image)
    write_video(tmp_path / "drive.mp4", frames, fps=10)
    command = [sys.executable, "-m", "reenact.animate", f"ckpt_path={ckpt}", f"source={image}",
               f"driving={tmp_path / 'drive.mp4'}", f"output={tmp_path / 'out.mp4'}", "crop.source=false",
               "crop.driving=false", "transfer=relative", "device=cpu", f"hydra.run.dir={tmp_path / 'h'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the 'correlation' family transfers motion by absolute; got transfer='relative'"]
    assert not (tmp_path / "out.mp4").exists()
    default_mode = [c for c in command if c != "transfer=relative"]
    done = subprocess.run([*default_mode, "adapt_movement_scale=true"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "no transfer option 'adapt_movement_scale'" in done.stderr
    done = subprocess.run(default_mode, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr  # its default mode: absolute
    assert (tmp_path / "out.mp4").exists()
