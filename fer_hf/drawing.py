"""Drawing on images: faces' boxes and captions (the demo's photos and live frames, annotated videos), and the heat
maps that show where a face's label came from (the demo's "Why?" switch, `predict --explain`)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Heat maps in matplotlib's "turbo": cool (blue) is 0, warm (red) is 1.
HEATMAP_COLOURS = "turbo"
# How much of the heat map's colour covers the face (the rest is the photo, so the face stays readable).
HEATMAP_OPACITY = 0.45


def draw_captioned_box(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    caption: str,
    colour: str,
    *,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    line: int,
    outline: int | None = None,
    text_colour: str = "black",
) -> None:
    """Draws a face's box and its caption on a filled label, above the box when there is room, else inside
    its top edge (the demo's photos and live frames, and annotated videos).

    Args:
        draw: An ImageDraw of the image, whose width keeps the label inside it.
        box: (x0, y0, x1, y1) in the image's pixels, x1 and y1 exclusive.
        caption: The label's text.
        colour: Box and label colour.
        font: The caption's font.
        line: Padding around the caption, and the box's line width unless `outline` is given.
        outline: The box's line width.
        text_colour: The caption's colour.
    """
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line if outline is None else outline)
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
    text_w, text_h = right - left + 2 * line, bottom - top + 2 * line
    tx, ty = min(x0, draw.im.size[0] - text_w), y0 - text_h if y0 >= text_h else y0
    draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
    draw.text((tx + line - left, ty + line - top), caption, fill=text_colour, font=font)


def heatmap_colours(heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 pixels (height x width x 3) of a heat map in [0, 1], in the HEATMAP_COLOURS colour map."""
    import matplotlib  # only heat maps need it

    return (matplotlib.colormaps[HEATMAP_COLOURS](np.clip(heatmap, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay_heatmap(image: Image.Image, box: tuple[int, int, int, int], heatmap: np.ndarray,
                    opacity: float = HEATMAP_OPACITY) -> Image.Image:
    """A copy of `image` (RGB) with a face's heat map blended over its box.

    Args:
        image: The photo, or a reduced copy of it.
        box: (x0, y0, x1, y1) in `image`'s pixels, x1 and y1 exclusive.
        heatmap: Values in [0, 1] (the face pipeline's "heatmap"), resized bilinearly to the box.
        opacity: How much of the colour covers the photo there.
    """
    image = image.convert("RGB")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        return image
    gray = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))  # mode "F"
    resized = gray.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    colours = Image.fromarray(heatmap_colours(np.asarray(resized)))
    region = image.crop((x0, y0, x1, y1))
    image.paste(Image.blend(region, colours, opacity), (x0, y0))
    return image


__all__ = ["HEATMAP_COLOURS", "HEATMAP_OPACITY", "draw_captioned_box", "heatmap_colours", "overlay_heatmap"]
