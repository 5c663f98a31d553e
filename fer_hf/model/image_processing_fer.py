"""Image processor of the FER CNN: any image in, a normalised grayscale 48x48 tensor out.

Travels with saved models as remote code: imports only NumPy, Pillow and transformers. fer_hf's
image reader (fer_hf.model.images) and fast CPU runtime (fer_hf.inference) use its converters and its
`fer_pixel_values`, so that every path turns pixels into model inputs the same way.
"""

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

# PIL modes with more than 8 bits a pixel: Pillow's convert() clips them instead of scaling them.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# PIL modes with an alpha channel; an image with a "transparency" entry in its info has one too.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_uint8(array: np.ndarray, wide_mode: str | None = None) -> np.ndarray:
    """Scales pixels of any numeric dtype to uint8.

    bool -> 0/255; uint16 (and PIL's I;16 modes, named by `wide_mode`) -> /257; other integers
    clipped to 0..255 unless they exceed 255, then taken as 16-bit; floats as 0..1 when they fit,
    else clipped to 0..255 (NaN as 0).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(values * scale, 0, 255).round().astype(np.uint8)
    sixteen_bit = array.dtype == np.uint16 or (wide_mode or "").startswith("I;16") or array.max(initial=0) > 255
    if sixteen_bit:
        return np.clip(array.astype(np.float64) / 257.0, 0, 255).round().astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def array_to_pil(array: np.ndarray) -> Image.Image:
    """HxW, HxWxC or CxHxW arrays (C in 1, 3, 4) of bool/int/float to an L, RGB or RGBA image.

    Raises:
        ValueError: for a shape that is not an image or a dtype that is not numeric.
    """
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as torch tensors come
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got an array of shape {array.shape}.")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"unsupported dtype {array.dtype}.")
    return Image.fromarray(np.ascontiguousarray(to_uint8(array)))  # HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA


def to_8_bit(image: Image.Image) -> Image.Image:
    """Any PIL image with 8-bit pixels and no alpha: wide modes scaled to "L", alpha composited on white
    as "RGB"; any other image is returned as it is."""
    if image.mode in WIDE_MODES:
        return Image.fromarray(to_uint8(np.asarray(image), wide_mode=image.mode))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image


def to_grayscale_uint8(image) -> np.ndarray:
    """Converts a PIL image, NumPy array or torch tensor of any common mode/dtype to an HxW uint8 array.

    Every path goes through Pillow's "L" conversion (ITU-R 601-2 luma), so a NumPy RGB array and the
    PIL image it came from give the same pixels. Transparent pixels are composited on white.

    Raises:
        ValueError: for an array whose shape is not an image or whose dtype is not numeric.
    """
    if hasattr(image, "detach"):  # a torch tensor; avoids importing torch here
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected a PIL image, NumPy array or torch tensor, got {type(image).__name__}.")
    return np.asarray(to_8_bit(image).convert("L"), dtype=np.uint8)


def fer_pixel_values(
    images, size: tuple[int, int], resample, do_resize: bool, do_rescale: bool, rescale_factor: float,
    do_normalize: bool, image_mean, image_std,
) -> np.ndarray:
    """The model input of 1xHxW uint8 gray images: an N x 1 x height x width float32 array.

    Each image is resized with Pillow when its size differs from `size` (height, width), then the
    batch is rescaled and normalised in one vectorised pass: the per-image NumPy calls of the generic
    backend cost more than the model itself for 48x48 faces.
    """
    if do_resize:
        images = [
            image if image.shape[1:] == tuple(size)
            else np.asarray(Image.fromarray(image[0]).resize(tuple(size)[::-1], resample=resample))[None]
            for image in images
        ]
    pixel_values = np.stack(images).astype(np.float32)
    if do_rescale:
        pixel_values *= np.float32(rescale_factor)
    if do_normalize:
        mean = np.asarray(image_mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(image_std, dtype=np.float32).reshape(1, -1, 1, 1)
        pixel_values = (pixel_values - mean) / std
    return pixel_values


class FerImageProcessor(PilBackend):
    r"""Makes FER CNN inputs: grayscale, resized to `size`, scaled to [0, 1] and normalised.

    Accepts PIL images in any mode (L, RGB, RGBA, P, I;16, CMYK, ...), NumPy arrays and torch
    tensors (HxW, HxWxC or CxHxW; uint8, uint16, float or bool), one or a list of them.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"height": 48, "width": 48}
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    # Roughly the pixel mean and std of the FER-2013 training faces.
    image_mean = [0.5]
    image_std = [0.25]

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        # transformers' generic flattening guesses "one image or a batch" from array shapes and
        # rejects 2-D (HxW) grayscale arrays; ours are one image, a flat list, or an NxHxWxC/NxCxHxW batch.
        if isinstance(images, (list, tuple)):
            return list(images)
        if getattr(images, "ndim", 0) == 4:
            return list(images)
        return [images]

    def process_image(self, image, **kwargs) -> np.ndarray:
        """Converts one input to the 1xHxW uint8 array that `_preprocess` works on."""
        return to_grayscale_uint8(image)[None]

    def _preprocess(
        self, images, do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
        return_tensors=None, **kwargs,
    ) -> BatchFeature:
        pixel_values = fer_pixel_values(images, (size.height, size.width), resample, do_resize, do_rescale,
                                        rescale_factor, do_normalize, image_mean, image_std)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["FerImageProcessor", "array_to_pil", "fer_pixel_values", "to_8_bit", "to_grayscale_uint8", "to_uint8"]
