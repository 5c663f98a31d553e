"""Image processor of the FER CNN: any image in, a normalised grayscale 48x48 tensor out.

Travels with saved models as remote code: imports only NumPy, Pillow and transformers.
"""

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling


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
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected a PIL image, NumPy array or torch tensor, got {type(image).__name__}.")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Wide modes: Pillow's convert("L") clips them instead of scaling, so scale to 0..255 here.
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F" and array.max() <= 1.0:
            high = 1.0
        return np.clip(array * (255.0 / high), 0, 255).round().astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """Turns HxW, HxWxC or CxHxW arrays (C in 1, 3, 4) of bool/int/float into a PIL image."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"Cannot read an image from an array of shape {array.shape}.")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        # Floats are taken as 0..1 when they fit, else as 0..255, the two conventions in use.
        finite = np.nan_to_num(array.astype(np.float64))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        array = np.clip(finite * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        array = np.clip(array.astype(np.float64) / 257.0, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"Cannot read an image from an array of dtype {array.dtype}.")
    return Image.fromarray(np.ascontiguousarray(array))


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
        target = (size.height, size.width)
        if do_resize:
            images = [
                image if image.shape[1:] == target
                else np.asarray(Image.fromarray(image[0]).resize(target[::-1], resample=resample))[None]
                for image in images
            ]
        # One vectorised pass over the whole batch: the per-image NumPy calls of the generic backend
        # cost more than the model itself for 48x48 faces.
        pixel_values = np.stack(images).astype(np.float32)
        if do_rescale:
            pixel_values *= np.float32(rescale_factor)
        if do_normalize:
            mean = np.asarray(image_mean, dtype=np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(image_std, dtype=np.float32).reshape(1, -1, 1, 1)
            pixel_values = (pixel_values - mean) / std
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["FerImageProcessor", "to_grayscale_uint8"]
