"""Drawing faces' boxes and captions on images: the demo's photos and live frames, and annotated videos."""

from __future__ import annotations

from PIL import ImageDraw, ImageFont


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


__all__ = ["draw_captioned_box"]
