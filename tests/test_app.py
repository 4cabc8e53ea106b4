"""The web app (python -m reenact.app) as a person uses it: through Gradio's Python client, and in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from reenact.cli.animate import options_from_config
from reenact.cli.app import animate_config, list_checkpoints
from reenact.data.video import probe_video
from reenact.utils.hydra_utils import compose_config
from tests.test_animate import fomm_ckpt  # noqa: F401  (the session's tiny trained FOMM checkpoint)

gradio = pytest.importorskip("gradio", reason="the app's extra is not installed: pip install 'reenact[app]'")
gradio_client = pytest.importorskip("gradio_client")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_ENV = "REENACT_APP_SCREENSHOT"  # set to a path to keep the browser test's screenshot (docs/app.png)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app(fomm_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    from reenact.cli.app import launch

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    cfg = OmegaConf.create({"ckpt_path": str(fomm_ckpt.parents[1]), "server_port": _free_port(), "device": "cpu",
                            "output_dir": str(tmp_path_factory.mktemp("app_out"))})
    page = launch(cfg, block=False)
    yield page
    page.close()


def _huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (a decompression bomb to PIL), a few bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 25))
                     + chunk(b"IEND", b""))


def _call(app, ckpt: Path, portrait: Path, driving: Path, **options):
    from gradio_client import Client, handle_file

    values = {"transfer": "relative", "crop": True, "paste_back": False, "smooth": 0.0, "reference": "first",
              "max_frames": None, "start": None, "end": None, **options}
    client = Client(app.local_url, verbose=False, download_files=str(Path(app.reenact_output_dir) / "client"))
    return client.predict(str(ckpt), handle_file(str(portrait)), [], handle_file(str(driving)), *values.values(),
                          api_name="/animate")


def test_app_serves_on_localhost_only(app) -> None:
    assert app.local_url.startswith("http://127.0.0.1:")
    assert not getattr(app, "share_url", None)


def test_page_values_become_the_command_lines_settings(tmp_path: Path) -> None:
    cfg = animate_config("run/last.ckpt", ["me.jpg"], "talk.mp4", tmp_path / "out.mp4", transfer="absolute",
                         crop=False, paste_back=True, smooth=2.5, reference_frame="7", max_frames=12, start=1.5,
                         end=None)
    cli = compose_config("animate", ["ckpt_path=run/last.ckpt", "source=me.jpg", "driving=talk.mp4",
                                     f"output={tmp_path / 'out.mp4'}", "transfer=absolute", "crop.source=false",
                                     "crop.driving=false", "paste_back=true", "smooth=2.5", "reference_frame=7",
                                     "max_frames=12", "start=1.5", "side_by_side=true"])
    from reenact.cli.animate import resolve_speed

    assert options_from_config(resolve_speed(cfg)) == options_from_config(resolve_speed(cli))
    options = options_from_config(resolve_speed(cfg))
    assert options.smooth == 2.5 and options.reference_frame == 7 and options.transfer == "absolute"


def test_checkpoint_picker_lists_every_run(fomm_ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    for run in ("a", "b"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        shutil.copy(fomm_ckpt, tmp_path / run / "checkpoints" / "last.ckpt")
    assert sorted(Path(p).parts[-3] for p in list_checkpoints(tmp_path)) == ["a", "b"]
    assert list_checkpoints(fomm_ckpt) == [str(fomm_ckpt)]


def test_upload_animate_download(app, fomm_ckpt: Path, faces_dir: Path) -> None:  # noqa: F811
    result, side, downloads, status = _call(app, fomm_ckpt, faces_dir / "s0.jpg", faces_dir / "d0.mp4",
                                            max_frames=6, smooth=1.0)
    assert status.startswith("done: 6 frames"), status
    for video in (result, side):
        info = probe_video(video)
        assert info.num_frames == 6 and info.fps == pytest.approx(25.0)
    assert {Path(p).name for p in downloads} == {Path(result).name, Path(side).name}


def test_bad_inputs_are_a_message_and_the_server_keeps_serving(app, fomm_ckpt: Path, faces_dir: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    *_, status = _call(app, fomm_ckpt, faces_dir / "s0.jpg", text)
    assert status.startswith("**error:**") and "cannot be decoded" in status
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 180, np.uint8)).save(blank)
    result, _, _, status = _call(app, fomm_ckpt, blank, faces_dir / "d0.mp4")
    assert result is None and "no face found" in status
    huge = tmp_path / "huge.png"
    _huge_png(huge, 30000, 30000)
    *_, status = _call(app, fomm_ckpt, huge, faces_dir / "d0.mp4")
    assert status.startswith("**error:**") and "too large" in status, status
    *_, status = _call(app, Path("/nowhere/last.ckpt"), faces_dir / "s0.jpg", faces_dir / "d0.mp4")
    assert status.startswith("**error:**") and "/nowhere/last.ckpt" in status
    *_, status = _call(app, fomm_ckpt, faces_dir / "s0.jpg", faces_dir / "d0.mp4", reference="middle")
    assert "reference frame" in status
    *_, status = _call(app, fomm_ckpt, faces_dir / "s0.jpg", faces_dir / "d0.mp4", max_frames=3)
    assert status.startswith("done: 3 frames"), status  # still serving


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Chromium and its WebDriver are not installed (apt-get install chromium chromium-driver; "
                           ".ci/run installs them)")
def test_in_headless_chromium(app, faces_dir: Path, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (reenact[app-test])")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1700", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(app.local_url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#portrait input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(str(faces_dir / "s0.jpg"))
        driver.find_element(By.CSS_SELECTOR, "#driving input[type=file]").send_keys(str(faces_dir / "d0.mp4"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#driving video"))  # the upload is on the page
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#crop_preview img"))
        max_frames = driver.find_element(By.CSS_SELECTOR, "#max_frames input")
        max_frames.clear()
        max_frames.send_keys("8")
        driver.find_element(By.ID, "animate").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result video[src]")
                                         or "error" in d.find_element(By.ID, "status").text)
        assert "error" not in driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "status").text
        video = driver.find_element(By.CSS_SELECTOR, "#result video[src]")
        src = video.get_attribute("src")
        assert src and "result.mp4" in src
        # playable: the browser loads its data and knows its length (8 frames at 25 fps)
        ready = WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const v = document.querySelector('#result video'); return v.readyState >= 2 ? v.duration : null;"))
        assert ready == pytest.approx(8 / 25, abs=0.1)
        status = driver.find_element(By.ID, "status").text
        assert "done: 8 frames" in status
        time.sleep(1)  # the side-by-side player settles before the picture is taken
        target = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "app.png")
        driver.save_screenshot(str(target))
        assert target.stat().st_size > 10_000
    finally:
        driver.quit()
