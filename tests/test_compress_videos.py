"""`python -m etchat.data.compress_videos`: E.T. Bench's compression (3 fps, short side 224, H.264) on PyAV."""

import os
from fractions import Fraction

import av
import numpy as np
import pytest
from video_utils import decode_frame_index, write_test_video

from etchat.data import compress_videos
from etchat.data.compress_videos import CompressOptions, compress_video, output_size, pick_frames
from etchat.data.video import decord_available, load_video

BACKENDS = ["pyav"] + (["decord"] if decord_available() else [])


def frame_codes(clip) -> list[int]:
    return [decode_frame_index(frame.numpy()) for frame in clip.frames]


@pytest.mark.parametrize(
    "width, height, keep_aspect, expected",
    [
        (1280, 720, False, (398, 224)),  # 224 * 16 / 9 = 398.2
        (641, 480, False, (298, 224)),  # 299.1 truncated to even
        (480, 480, False, (224, 224)),
        (720, 1280, False, (224, 126)),  # the published filter squashes portrait frames: 224 * 9 / 16 = 126
        (720, 1280, True, (224, 398)),
    ],
)
def test_output_size_follows_the_published_scale_filter(width, height, keep_aspect, expected):
    assert output_size(width, height, 224, keep_aspect) == expected


def test_pick_frames_takes_the_nearest_input_frame():
    times_30fps = [Fraction(i, 30) for i in range(35)]
    assert pick_frames(times_30fps, Fraction(3), 4) == [0, 10, 20, 30]
    times_2fps = [Fraction(i, 2) for i in range(4)]  # slower than the output: frames repeat
    assert pick_frames(times_2fps, Fraction(3), 6) == [0, 1, 1, 2, 3, 3]  # 1/3 s is nearer 0.5 than 0; 1.0 tie
    uneven = [Fraction(0), Fraction(1, 10), Fraction(9, 10)]
    assert pick_frames(uneven, Fraction(3), 3) == [0, 1, 2]  # 2/3 s: 0.9 is nearer than 0.1


@pytest.mark.parametrize("rate, num_frames", [(30, 125), (25, 101), (Fraction(30000, 1001), 120), (2, 9)])
def test_outputs_read_at_1_fps_like_their_inputs(tmp_path, rate, num_frames):
    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_test_video(source, num_frames, rate, size=(48, 64))
    compress_video(source, target, CompressOptions(size=32, mode="pyav"))  # the lag-free mode
    for backend in BACKENDS:
        original, compressed = load_video(source, backend=backend), load_video(target, backend=backend)
        assert compressed.tags == original.tags
        assert frame_codes(compressed) == frame_codes(original)  # the same pictures at each time
        assert compressed.avg_fps == 3.0
        assert 0 <= compressed.duration - original.duration < 1 / 3 + 1e-3
    with av.open(str(target)) as container:
        (stream,) = container.streams
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 42, 32)  # 32 * 4 / 3 = 42.7
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_default_is_3_fps_and_short_side_224(tmp_path):
    write_test_video(tmp_path / "in.mp4", 12, 6, size=(48, 64))
    compress_video(tmp_path / "in.mp4", tmp_path / "out.mp4", CompressOptions(mode="pyav"))
    clip = load_video(tmp_path / "out.mp4", fps=3, backend="pyav")
    assert clip.frames.shape == (6, 224, 298, 3)  # 2 s at 3 fps; 224 * 4 / 3 = 298.7
    assert frame_codes(clip) == [0, 2, 4, 6, 8, 10]


def write_video_with_audio(path, seconds: int) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(10 * seconds):
            pixels = np.zeros((48, 64, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels + i, format="rgb24")))
        container.mux(video.encode(None))
        for i in range(16 * seconds):  # 1024-sample frames of silence
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


@pytest.fixture
def video_tree(tmp_path):
    """videos/a/x.mp4 (with audio), videos/a/b/y.mkv, videos/broken.mp4, videos/notes.txt."""
    root = tmp_path / "videos"
    (root / "a" / "b").mkdir(parents=True)
    write_video_with_audio(root / "a" / "x.mp4", 2)
    write_test_video(root / "a" / "b" / "y.mkv", 8, 4, size=(32, 32))
    (root / "broken.mp4").write_bytes(b"not a video at all")
    (root / "notes.txt").write_text("not a video")
    return root


def test_tree_keeps_folders_drops_audio_lists_broken_inputs_and_resumes(video_tree, tmp_path, capsys):
    out = tmp_path / "videos_compressed"
    assert compress_videos.main([str(video_tree), str(out), "--size", "32", "--workers", "2"]) == 1
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert produced == ["a/b/y.mp4", "a/x.mp4"]
    with av.open(str(out / "a" / "x.mp4")) as container:
        assert [s.type for s in container.streams] == ["video"]
    captured = capsys.readouterr()
    assert "1 of 3 videos could not be compressed" in captured.out
    assert "FAILED" in captured.err and "broken.mp4" in captured.err

    # A rerun skips finished outputs and ignores a leftover partial file of a killed run.
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    (out / "broken.mp4.part").write_bytes(b"half a video")
    (video_tree / "broken.mp4").unlink()
    write_test_video(video_tree / "broken.mp4", 6, 3, size=(32, 32))
    assert compress_videos.main([str(video_tree), str(out), "--size", "32", "--workers", "0"]) == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["broken.mp4", "x.mp4", "y.mp4"]
    assert frame_codes(load_video(out / "broken.mp4", fps=3)) == [0, 1, 2, 3, 4, 5]


def test_a_failed_encode_leaves_no_file(tmp_path, monkeypatch):
    write_test_video(tmp_path / "in.mp4", 6, 3, size=(32, 32))

    def fail(*args, **kwargs):
        open(str(tmp_path / "out.mp4") + ".part", "wb").close()
        raise RuntimeError("disk full")

    monkeypatch.setattr(compress_videos, "_encode", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        compress_video(tmp_path / "in.mp4", tmp_path / "out.mp4", CompressOptions(mode="pyav"))
    assert os.listdir(tmp_path) == ["in.mp4"]


def test_inputs_that_would_write_the_same_output_fail_both(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_test_video(root / "v.mp4", 3, 3, size=(32, 32))
    write_test_video(root / "v.mkv", 3, 3, size=(32, 32))
    outcomes = compress_videos.compress_tree(root, tmp_path / "out", CompressOptions(size=32), workers=0)
    statuses = sorted((os.path.basename(o.source), o.status) for o in outcomes)
    assert statuses == [("v.mkv", "failed"), ("v.mp4", "failed")]


def test_output_folder_must_differ(tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        compress_videos.find_videos(tmp_path, tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# The published command (--mode ffmpeg, the default) and the published flag names
# --------------------------------------------------------------------------------------------------------------------


def published_command(ffmpeg: str, source, target, fps: int = 3, size: int = 224) -> str:
    """The command line of E.T. Bench's compress_videos.py, as a shell runs it."""
    scale = f"scale='if(gt(a,1),trunc(oh*a/2)*2,{size})':'if(gt(a,1),{size},trunc(ow*a/2)*2)'"
    return f'{ffmpeg} -y -i {source} -filter:v "{scale}" -map 0:v -r {fps} {target}'


def all_frame_codes(path) -> list[int]:
    with av.open(str(path)) as container:
        return [decode_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.mark.parametrize("rate, num_frames", [(30, 60), (Fraction(30000, 1001), 50), (24, 40)])
def test_ffmpeg_mode_gives_the_published_commands_frames(tmp_path, rate, num_frames):
    import subprocess

    source = tmp_path / "in.mp4"
    write_test_video(source, num_frames, rate, size=(48, 64))
    compress_video(source, tmp_path / "ours.mp4", CompressOptions(size=32))
    ffmpeg = compress_videos.ffmpeg_binary()
    subprocess.run(published_command(ffmpeg, source, tmp_path / "published.mp4", size=32), shell=True, check=True,
                   capture_output=True)  # fmt: skip
    ours, published = all_frame_codes(tmp_path / "ours.mp4"), all_frame_codes(tmp_path / "published.mp4")
    assert ours == published
    # ffmpeg's -r keeps a frame while it is less than 1.1 output frames late: its output lags the source.
    exact = [round(n * rate / 3) for n in range(len(ours))]
    assert any(code < expected for code, expected in zip(ours, exact))
    lag_free = tmp_path / "pyav.mp4"
    compress_video(source, lag_free, CompressOptions(size=32, mode="pyav"))
    assert all_frame_codes(lag_free) == [min(e, num_frames - 1) for e in exact[: len(all_frame_codes(lag_free))]]


def test_published_flag_names_and_default_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    write_test_video(tmp_path / "videos" / "a.mp4", 6, 3, size=(32, 32))
    assert compress_videos.main(["--size", "32", "--workers", "0"]) == 0  # videos -> videos_compressed
    assert [p.name for p in (tmp_path / "videos_compressed").iterdir()] == ["a.mp4"]
    out = tmp_path / "other"
    assert compress_videos.main(["--src_dir", "videos", "--tgt_dir", str(out), "--size", "32", "--mode", "pyav"]) == 0
    assert frame_codes(load_video(out / "a.mp4", fps=3)) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(SystemExit):
        compress_videos.main(["videos", "x", "--tgt_dir", "y"])


# --------------------------------------------------------------------------------------------------------------------
# One run per target folder, workers that end with the run, Ctrl-C
# --------------------------------------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_target_refuses_in_one_line(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    write_test_video(tmp_path / "videos" / "a.mp4", 3, 3, size=(32, 32))
    out = tmp_path / "out"
    with compress_videos.target_lock(out):
        assert compress_videos.main([str(tmp_path / "videos"), str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("compress_videos: another compress_videos run (pid ") and str(out) in err[-1]
    assert not (out / "a.mp4").exists()
    assert compress_videos.main([str(tmp_path / "videos"), str(out), "--workers", "0", "--size", "32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]  # the lock file is gone after the run


def processes_with(marker: str) -> list[int]:
    """Ids of the live processes whose environment holds ``marker`` (the run under test and its children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
                with open(f"/proc/{entry}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if marker.encode() in environ and not zombie:
                found.append(int(entry))
    return found


def start_run(tmp_path, marker: str):
    """`python -m etchat.data.compress_videos` with 2 workers on videos that take a while, started once a worker
    writes its first output."""
    import signal
    import subprocess
    import sys
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_test_video(videos / f"v{i}.mp4", 600, 30, size=(240, 320), codec="mpeg4")
    out = tmp_path / "out"
    env = {**os.environ, "TEST_MARKER": marker, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "etchat.data.compress_videos", str(videos), str(out), "--workers", "2"]
    # As from a terminal: Ctrl-C at its default. A shell without job control starts background commands with SIGINT
    # ignored, and a Python started so keeps ignoring it (as it should); a test run in such a job would pass that on.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.part")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    return process, out


def wait_until_gone(marker: str, seconds: float = 20) -> list[int]:
    import time

    deadline = time.monotonic() + seconds
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_with(marker)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the workers")
def test_ctrl_c_ends_the_run_in_one_line_and_takes_the_workers_along(tmp_path):
    import signal

    marker = f"ctrl-c-{os.getpid()}-{tmp_path.name}"
    process, out = start_run(tmp_path, marker)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == compress_videos.EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("compress_videos: interrupted")
    assert wait_until_gone(marker) == []
    assert not list(out.rglob("*.part"))  # no half-written file left by a worker


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the workers")
def test_workers_do_not_outlive_a_killed_run(tmp_path):
    import signal
    import time

    marker = f"kill-{os.getpid()}-{tmp_path.name}"
    process, out = start_run(tmp_path, marker)
    done_before = set(out.rglob("*.mp4"))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert wait_until_gone(marker, seconds=5) == []  # workers and their ffmpeg, not only the parent
    time.sleep(1)
    assert set(out.rglob("*.mp4")) == done_before  # nothing finished behind a rerun's back
