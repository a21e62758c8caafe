"""Grey-scale images for the demos: a source image (an sklearn digit or a generated pattern) and PNG output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from anode_lab.experiments.context import RunContext

SIZE = 32
DISPLAY_SCALE = 4


def digit(index: int, size: int = SIZE) -> Tensor:
    """Digit ``index`` (mod 1797) of scikit-learn's 8×8 digits, scaled to [0, 1] and upsampled bilinearly to
    ``size × size``; shape ``(1, 1, size, size)``, float64. Needs scikit-learn (its data ship with it)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError(
            "image 'digit' needs scikit-learn (pip install scikit-learn); or set `image` to 'pattern'"
        ) from None
    images = load_digits().images
    small = torch.tensor(images[index % len(images)] / 16.0, dtype=torch.float64)[None, None]
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def pattern(size: int = SIZE) -> Tensor:
    """A generated test card: a ring, a bar and a checkered corner, values in [0, 1]; ``(1, 1, size, size)``."""
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    radius = torch.sqrt((x - 0.38) ** 2 + (y - 0.4) ** 2)
    ring = ((radius > 0.16) & (radius < 0.26)).double()
    bar = ((x > 0.72) & (x < 0.84) & (y > 0.15) & (y < 0.85)).double()
    checks = ((x < 0.45) & (y > 0.72)).double() * ((torch.floor(x * size / 2) + torch.floor(y * size / 2)) % 2)
    return torch.clamp(ring + 0.7 * bar + checks, 0.0, 1.0)[None, None]


def to_image(values: Tensor, scale: int = DISPLAY_SCALE) -> Image.Image:
    """A ``(…, H, W)`` tensor as an 8-bit grey image, clipped to [0, 1] for display (NaN shown black) and
    enlarged ``scale`` times without smoothing."""
    pixels = torch.nan_to_num(values.detach().double().reshape(values.shape[-2:]).cpu(), nan=0.0)
    pixels = (pixels.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    image = Image.fromarray(pixels.numpy())
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def save_png(ctx: RunContext, name: str, values: Tensor) -> None:
    to_image(values).save(ctx.artifact_path(name))


def save_panel(ctx: RunContext, name: str, panels: list[Tensor], labels: list[str], gap: int = 8) -> None:
    """The images side by side on a white strip, left to right in the order given, each labelled underneath."""
    from PIL import ImageDraw, ImageFont

    if len(labels) != len(panels):
        raise ValueError(f"`labels` must name each of the {len(panels)} panels; got {len(labels)}")
    tiles = [to_image(p) for p in panels]
    font = ImageFont.load_default(size=14)
    text_height = 24
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    strip = Image.new("L", (width, max(t.height for t in tiles) + text_height), color=255)
    draw = ImageDraw.Draw(strip)
    left = 0
    for tile, label in zip(tiles, labels, strict=True):
        strip.paste(tile, (left, 0))
        draw.text((left + tile.width / 2, tile.height + 4), label, fill=0, font=font, anchor="ma")
        left += tile.width + gap
    strip.save(ctx.artifact_path(name))


def relative_error(estimate: Tensor, truth: Tensor) -> float:
    """``‖estimate − truth‖ / ‖truth‖`` in float64; ``inf`` if the estimate is not finite."""
    diff = (estimate.double() - truth.double()).norm().item()
    return diff / truth.double().norm().item() if math.isfinite(diff) else math.inf
