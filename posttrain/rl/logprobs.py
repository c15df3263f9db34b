"""Per-token log-probabilities of sampled responses under a causal LM.

Layout: prompts are left-padded to P and responses right-padded to R, so every
sequence reads [pad.. prompt | response ..pad] and the logits predicting response
token t sit at column P - 1 + t for all rows. Position ids are computed from the
attention mask so left padding does not shift positions.

Image-text models: `vision` holds the processor's pixel inputs for the batch (e.g.
`pixel_values`, `pixel_attention_mask`), passed to the model with the ids. Image tokens sit in
the (engine-expanded) prompt, so they are never in the response mask. A policy can still *sample*
an image token (a barely trained one does, at temperature 1); the engine embeds it as text, but
the model's forward would try to put an image there (`RuntimeError: Number of elements of source
< number of ones in mask` on Idefics3). So in the forward input, response image/video tokens
become the pad token; the sampled token's own log-prob is exact, and only later tokens of such
a (rare, unrewarded) response see a different embedding than the engine's.

Two layouts of pixel inputs exist: batch-first (Idefics3: `pixel_values` (B, images, C, H, W)) and
flattened patches (Qwen2-VL / Qwen2.5-VL: `pixel_values` (patches, D) with `image_grid_thw` (images,
3)). `vision_inputs` records each row's image count for the second (`_images_per_row`, never passed to
the model), so `select` can take a row's patches with it. Models with 3-D M-RoPE positions (a
`get_rope_index`) get no position ids but the media token types (`mm_token_type_ids`, as their
processor returns them): they compute the positions from those, the image grids and the attention
mask (left padding included); without them transformers falls back to 1-D positions, wrong for images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor


@dataclass
class ResponseBatch:
    input_ids: Tensor  # (B, P + R)
    attention_mask: Tensor  # (B, P + R)
    position_ids: Tensor  # (B, P + R)
    response_mask: Tensor  # (B, R)
    prompt_len: int  # P
    vision: dict[str, Tensor] = field(default_factory=dict)  # pixel inputs (image-text models; two layouts above)

    def to(self, device: torch.device | str) -> "ResponseBatch":
        return ResponseBatch(self.input_ids.to(device), self.attention_mask.to(device),
                             self.position_ids.to(device), self.response_mask.to(device), self.prompt_len,
                             {k: v.to(device) for k, v in self.vision.items()})

    def select(self, idx: Tensor | Sequence[int]) -> "ResponseBatch":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ResponseBatch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx],
                             self.response_mask[idx], self.prompt_len, select_vision(self.vision, idx))


ROW_COUNTS = "_images_per_row"  # flattened-patch layouts: images of each row (not a model input)


def select_vision(vision: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    """The pixel inputs of rows `idx`, in that order, for either layout (module docstring)."""
    if ROW_COUNTS not in vision:
        return {k: v[idx] for k, v in vision.items()}
    counts, grid = vision[ROW_COUNTS], vision["image_grid_thw"]
    first_image = torch.cumsum(counts, 0) - counts  # (B,)
    patches = grid.prod(-1)  # (images,)
    first_patch = torch.cumsum(patches, 0) - patches
    images = [torch.arange(int(first_image[i]), int(first_image[i] + counts[i])) for i in idx.tolist()]
    images = torch.cat(images) if images else torch.zeros(0, dtype=torch.long)
    rows = [torch.arange(int(first_patch[j]), int(first_patch[j] + patches[j])) for j in images.tolist()]
    rows = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    out = {ROW_COUNTS: counts[idx], "image_grid_thw": grid[images]}
    for k, v in vision.items():  # pixel_values and any other per-patch tensor
        if k not in out:
            out[k] = v[rows] if v.shape[0] == int(patches.sum()) else v
    return out


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> ResponseBatch:
    B = len(prompts)
    P = max(len(p) for p in prompts)
    R = max(1, max(len(r) for r in responses))
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + R), dtype=torch.long)
    resp_mask = torch.zeros((B, R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p):P] = torch.tensor(list(p), dtype=torch.long)
        attn[i, P - len(p):P] = 1
        if len(r):
            ids[i, P:P + len(r)] = torch.tensor(list(r), dtype=torch.long)
            attn[i, P:P + len(r)] = 1
            resp_mask[i, :len(r)] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return ResponseBatch(ids, attn, pos, resp_mask, P)


def response_logprobs(model: torch.nn.Module, batch: ResponseBatch, temperature: float = 1.0) -> Tensor:
    """log p(response_t | prefix) for each response position, (B, R); 0 where padded."""
    P, R = batch.prompt_len, batch.response_mask.shape[1]
    ids = _without_media_tokens(model, batch.input_ids, P) if batch.vision else batch.input_ids
    # the LM head runs only on the R + 1 last positions (the prompt's logits are never used)
    vision = {k: v for k, v in batch.vision.items() if k != ROW_COUNTS}
    inputs = dict(input_ids=ids, attention_mask=batch.attention_mask, use_cache=False, **vision)
    if vision and _has_mrope(model):  # the model computes its 3-D positions from the media token types
        inputs["mm_token_type_ids"] = media_token_types(model, ids)
    else:
        inputs["position_ids"] = batch.position_ids
    try:
        out = model(**inputs, logits_to_keep=R + 1)
    except TypeError:  # a model whose forward has no logits_to_keep: all logits, same slice below
        out = model(**inputs)
    logits = out.logits[:, -(R + 1):-1, :].float()  # (B, R, V): the logits at P - 1 .. P + R - 2
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch.input_ids[:, P:P + R]  # (B, R)
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return lp * batch.response_mask


def _without_media_tokens(model: torch.nn.Module, ids: Tensor, P: int) -> Tensor:
    """`ids` with image/video tokens in the response columns (>= P) replaced by the pad token."""
    cfg = getattr(model, "config", None)
    media = list(_media_tokens(model).values())
    resp = ids[:, P:]
    hit = torch.isin(resp, torch.tensor(media, dtype=ids.dtype)) if media else torch.zeros_like(resp, dtype=torch.bool)
    if not hit.any():
        return ids
    pad = getattr(cfg, "pad_token_id", None)
    pad = pad if isinstance(pad, int) else getattr(getattr(cfg, "text_config", None), "pad_token_id", 0) or 0
    out = ids.clone()
    out[:, P:] = resp.masked_fill(hit, pad)
    return out


def vision_inputs(image_processor: Any, images: Sequence[Sequence[Any]]) -> dict[str, Tensor]:
    """The image processor's pixel inputs for a batch: `images[i]` are row i's images in prompt
    order (rows with fewer images are padded, and masked, by the processor)."""
    out = image_processor([list(im) for im in images], return_tensors="pt")
    vision = {k: v for k, v in out.items() if isinstance(v, Tensor) and k not in ("rows", "cols")}
    if "image_grid_thw" in vision:  # flattened patches: remember which images are whose
        vision[ROW_COUNTS] = torch.tensor([len(im) for im in images], dtype=torch.long)
    return vision


def media_token_types(model: torch.nn.Module, ids: Tensor) -> Tensor:
    """0 text, 1 image, 2 video per position: what a Qwen2-VL-family processor returns as
    `mm_token_type_ids`, from which the model builds its M-RoPE positions."""
    types = torch.zeros_like(ids, dtype=torch.int)
    for value, token in _media_tokens(model).items():
        types[ids == token] = value
    return types


def _media_tokens(model: torch.nn.Module) -> dict[int, int]:
    """{1: image token id, 2: video token id}, for those the model's config defines."""
    cfg = getattr(model, "config", None)
    found = {1: getattr(cfg, "image_token_id", None), 2: getattr(cfg, "video_token_id", None)}
    return {kind: token for kind, token in found.items() if isinstance(token, int)}


def _has_mrope(model: torch.nn.Module) -> bool:
    """Whether the model places tokens with 3-D M-RoPE positions (Qwen2-VL family)."""
    inner = getattr(model, "model", None)
    return callable(getattr(model, "get_rope_index", None)) or callable(getattr(inner, "get_rope_index", None))
