"""Rows with images and video become engine prompts.

A row's placeholders are read in text order: each `<image>` takes the row's next image, and
`<video>` becomes the clip's SlowFast encoding (core/video.plan_video, the one planner rollouts,
SFT rows and the SlowFast benchmark share): a marker and an image slot per planned image, frames
resized to their planned sizes, or fast frames packed into mosaics on a fixed-size encoder. The
processor's chat template writes each image slot in the model's own markup and the prompt's
token ids keep it unexpanded (one image token per image); the engine expands each into the
model's placeholder run (vLLM's `multi_modal_data`), and the rollout carries the expanded ids
back for the trainer.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from PIL import Image

from posttrain.core.data import chat_prompt_ids, prompt_messages
from posttrain.core.media import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, has_media, load_image, load_video
from posttrain.core.video import mosaic, plan_video, processor_token_counter
from rollouts.types import Media, PromptInput

_SLOT = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})")

def flat_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The row's messages with content parts flattened to text with placeholders."""
    out = []
    for m in prompt_messages(row):
        c = m["content"]
        if not isinstance(c, str):
            c = "".join(IMAGE_PLACEHOLDER if p["type"] == "image" else VIDEO_PLACEHOLDER if p["type"] == "video"
                        else p["text"] for p in c)
        out.append({"role": m["role"], "content": c})
    return out


def expand_media(row: dict[str, Any], count_tokens: Callable[[int, int], int] | None = None,
                 video_budget: int | None = None, text_tokens: Callable[[str], int] | None = None,
                 threshold: float = 0.95) -> tuple[list[dict[str, Any]], Media | None]:
    """(messages as content parts, `<video>` spelled out as a marker and an image per frame; the
    prompt's images in slot order). The processor's chat template then writes each image part in
    the model's own markup (`<image>` for Idefics3, a vision-start/pad/end run for Qwen2.5-VL)."""
    if not has_media(row):
        return flat_messages(row), None
    images = iter(row.get("images") or [])
    paths: list[str | tuple[str, ...]] = []
    sizes: list[tuple[int, int]] = []
    grid = [2]  # the clip's mosaic grid (plan_video)

    def slot(kind: str) -> list[dict[str, Any]]:
        if kind == IMAGE_PLACEHOLDER:
            path = next(images)
            paths.append(path)
            with Image.open(path) as im:
                sizes.append((im.height, im.width))
            return [{"type": "image"}]
        video = row["video"]
        if "frames" not in video:
            raise ValueError(f"row {row['id']!r}: rollouts take a video as frames ({{'frames': [...], 'fps': ...}}); "
                             "decode the file to frames first")
        if count_tokens is None:
            raise ValueError(f"row {row['id']!r} has a video: pass count_tokens (the processor's) to plan its frames")
        frames, times = load_video(video)
        plan = plan_video(frames, times, count_tokens, video_budget, threshold, text_tokens=text_tokens)
        grid[0] = plan.grid
        for im in plan.images:
            fs = [video["frames"][i] for i in im.frames]
            paths.append(tuple(fs) if im.mosaic else fs[0])
            sizes.append((im.height, im.width))
        return [p for im in plan.images for p in ({"type": "text", "text": im.marker}, {"type": "image"})]

    messages = []
    for m in flat_messages(row):
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(_SLOT.split(m["content"])):
            if i % 2:
                parts += slot(piece)
            elif piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": m["role"], "content": parts})
    return messages, Media(tuple(paths), tuple(sizes), grid[0])


def encode_media_rows(processor: Any, rows: Sequence[dict[str, Any]], video_budget: int | None = None,
                      threshold: float = 0.95) -> list[PromptInput]:
    """Each row through the chat template of `processor` (a transformers processor with a
    `tokenizer`), with its media; rows without media are plain text prompts."""
    tokenizer = processor.tokenizer
    counter = processor_token_counter(processor) if any(r.get("video") for r in rows) else None

    def text_tokens(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    out = []
    for r in rows:
        messages, media = expand_media(r, counter, video_budget, text_tokens, threshold)
        if media is None:
            out.append(PromptInput(r["id"], chat_prompt_ids(tokenizer, messages)))
            continue
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(PromptInput(r["id"], list(tokenizer(text, add_special_tokens=False)["input_ids"]), media))
    return out


def load_media(media: Media) -> list[Image.Image]:
    """The prompt's images as RGB, each resized to its planned size when that differs; a tuple of
    paths becomes the mosaic of those frames."""
    out = []
    for i, path in enumerate(media.images):
        img = load_image(path) if isinstance(path, str) else mosaic([load_image(p) for p in path], media.grid)
        if i < len(media.sizes) and (img.height, img.width) != tuple(media.sizes[i]):
            h, w = media.sizes[i]
            img = img.resize((w, h), Image.BICUBIC)
        out.append(img)
    return out
