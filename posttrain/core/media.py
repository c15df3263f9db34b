"""Images and video in dataset rows: the media half of the JSONL contract.

A row may carry `images: [path, ...]` and `video: {"frames": [path, ...], "fps": float}` or
`video: {"file": path, "fps": float (optional: sample rate)}` (a file the installed OpenCV
decodes). The prompt holds one `<image>` per image and one `<video>` when there is a video,
in the prompt string, a message's string content, or as content parts
(`{"type": "image"}`, `{"type": "video"}`, `{"type": "text", "text": ...}`), the form
transformers' chat templates take.

Paths resolve relative to the JSONL file and are rewritten absolute in the loaded row, so a
stage that writes rows elsewhere (RFT samples, filter output) keeps pointing at the media.
Every problem is a MediaError whose message names the media; data.validate_row prefixes the
file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER = "<image>", "<video>"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class MediaError(ValueError):
    """A missing or unreadable media file, or prompt placeholders that do not match the media."""


def count_placeholders(prompt: Any) -> tuple[int, int]:
    """(`<image>` slots, `<video>` slots) in a prompt string or chat message list."""
    texts, n_img, n_vid = [], 0, 0
    for content in ([prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt]):
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            kind = part.get("type") if isinstance(part, dict) else None
            n_img += kind == "image"
            n_vid += kind == "video"
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
    joined = "\n".join(texts)
    return n_img + len(re.findall(re.escape(IMAGE_PLACEHOLDER), joined)), \
        n_vid + len(re.findall(re.escape(VIDEO_PLACEHOLDER), joined))


def valid_content_parts(content: Any) -> bool:
    """A message's content as a list of text/image/video parts (the chat-template form)."""
    return isinstance(content, list) and bool(content) and all(
        isinstance(p, dict) and (p.get("type") in ("image", "video")
                                 or (p.get("type") == "text" and isinstance(p.get("text"), str)))
        for p in content)


def has_media(row: dict[str, Any]) -> bool:
    return bool(row.get("images")) or row.get("video") is not None


def _resolve(value: Any, base: Path, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MediaError(f"{what} must be a non-empty path string, got {value!r}")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise MediaError(f"{what} {value!r}: no such file ({path})")
    return str(path.resolve())


def check_image(path: str, what: str) -> None:
    """Open the header: a file PIL cannot identify is an error now, not in an engine later."""
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MediaError(f"{what} {path!r} is not a readable image ({type(e).__name__}: {e})") from None


def check_media(row: dict[str, Any], base: Path) -> dict[str, Any]:
    """Validate and resolve (in place) a row's `images` and `video` against its prompt."""
    images = row.get("images")
    if images is not None:
        if not isinstance(images, list):
            raise MediaError(f"field 'images' must be a list of paths, got {type(images).__name__}")
        row["images"] = [_resolve(p, base, f"images[{i}]") for i, p in enumerate(images)]
        for i, p in enumerate(row["images"]):
            check_image(p, f"images[{i}]")
    video = row.get("video")
    if video is not None:
        row["video"] = _check_video(video, base)
    n_img, n_vid = count_placeholders(row["prompt"])
    if n_img != len(row.get("images") or []):
        raise MediaError(f"the prompt has {n_img} {IMAGE_PLACEHOLDER} placeholder(s) but the row has "
                         f"{len(row.get('images') or [])} image(s); they must match one to one")
    if n_vid != (video is not None):
        raise MediaError(f"the prompt has {n_vid} {VIDEO_PLACEHOLDER} placeholder(s) but the row has "
                         f"{int(video is not None)} video; a row holds at most one video and names it once")
    return row


def _check_video(video: Any, base: Path) -> dict[str, Any]:
    if not isinstance(video, dict) or ("frames" in video) == ("file" in video):
        raise MediaError("field 'video' must be {\"frames\": [paths], \"fps\": number} or {\"file\": path}")
    fps = video.get("fps")
    if ("frames" in video or fps is not None) and not (isinstance(fps, (int, float)) and fps > 0):
        raise MediaError(f"video fps must be a positive number, got {fps!r}")
    out = dict(video)
    if "file" in video:
        out["file"] = _resolve(video["file"], base, "video file")
        if decode_video_file(out["file"], probe=True) == ([], []):
            raise MediaError(f"video file {out['file']!r}: OpenCV could not decode a frame")
        return out
    frames = video["frames"]
    if not isinstance(frames, list) or not frames:
        raise MediaError("video 'frames' must be a non-empty list of image paths")
    out["frames"] = [_resolve(p, base, f"video frames[{i}]") for i, p in enumerate(frames)]
    for i, p in enumerate(out["frames"]):
        check_image(p, f"video frames[{i}]")
    return out


def load_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def load_video(video: dict[str, Any]) -> tuple[list[np.ndarray], list[float]]:
    """(frames as (H, W, 3) uint8 arrays, their times in seconds) of a checked `video` field."""
    if "file" in video:
        return decode_video_file(video["file"], fps=video.get("fps"))
    frames = [np.asarray(load_image(p)) for p in video["frames"]]
    return frames, [i / float(video["fps"]) for i in range(len(frames))]


def frames_in_dir(directory: str | Path) -> list[str]:
    """The image files of a frames directory, in name order."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{directory}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [str(p) for p in files]


def decode_video_file(path: str, fps: float | None = None, probe: bool = False
                      ) -> tuple[list[np.ndarray], list[float]]:
    """Frames (RGB uint8) and times of a video file, sampled at `fps` (default: every frame).
    `probe` reads only the first frame. Needs OpenCV (cv2), an optional dependency."""
    try:
        import cv2  # optional: video files only; frame lists need only PIL
    except ImportError:
        raise MediaError(f"video file {path!r}: OpenCV (cv2) is not installed; pass the frames as images "
                         "(video: {\"frames\": [...], \"fps\": ...}) or install opencv-python-headless") from None
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    times: list[float] = []
    native = cap.get(cv2.CAP_PROP_FPS) or 0.0
    i = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            t = i / native if native > 0 else float(i)
            i += 1
            if fps is None or t + 1e-9 >= len(times) / fps:  # the k-th sample is the first frame at >= k/fps
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                times.append(t)
            if probe:
                break
    finally:
        cap.release()
    return frames, times
