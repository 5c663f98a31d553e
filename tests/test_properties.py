"""Property-based tests: any image or CSV row gives a valid result or a clear error, never anything else."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from fer_hf import FerImageProcessor
from fer_hf.data import DataError, load_fer2013_csv

PROCESSOR = FerImageProcessor()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, bool])
layouts = st.sampled_from(["HW", "HW1", "HW3", "HW4", "3HW", "1HW"])


@st.composite
def arrays(draw):
    height, width = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    dtype, layout = draw(dtypes), draw(layouts)
    shape = {"HW": (height, width), "HW1": (height, width, 1), "HW3": (height, width, 3), "HW4": (height, width, 4),
             "3HW": (3, height, width), "1HW": (1, height, width)}[layout]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    high = {np.uint8: 256, np.uint16: 65536, np.int32: 65536}.get(dtype, 2)
    if dtype in (np.float32, np.float64):
        data = rng.random(shape) * draw(st.sampled_from([1.0, 255.0]))
    else:
        data = rng.integers(0, high, shape)
    return data.astype(dtype)


@SETTINGS
@given(arrays())
def test_any_array_gives_a_normalised_face_tensor(array):
    pixel_values = PROCESSOR(array, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 48, 48)
    assert bool(np.isfinite(pixel_values.numpy()).all())
    assert -2.0 - 1e-5 <= float(pixel_values.min()) and float(pixel_values.max()) <= 2.0 + 1e-5


@SETTINGS
@given(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]),
       st.integers(1, 300), st.integers(1, 300))
def test_any_pil_mode_and_size(mode, width, height):
    image = Image.effect_noise((width, height), 50).convert("RGB").convert(mode) if mode not in ("I;16",) else \
        Image.fromarray((np.asarray(Image.effect_noise((width, height), 50)).astype(np.uint16) * 257))
    pixel_values = PROCESSOR(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 48, 48) and bool(np.isfinite(pixel_values.numpy()).all())


@st.composite
def csv_rows(draw):
    """A FER-2013 CSV row that is either valid or broken in one of the ways users meet."""
    fault = draw(st.sampled_from([None, "count", "label", "usage", "text", "range"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = [str(v) for v in rng.integers(0, 256, 2304)]
    label, usage = str(draw(st.integers(0, 6))), draw(st.sampled_from(["Training", "PublicTest", "PrivateTest"]))
    if fault == "count":
        pixels = pixels[: draw(st.integers(0, 2303))] if draw(st.booleans()) else pixels + ["0"]
    elif fault == "label":
        label = draw(st.sampled_from(["7", "-1", "happy", "", "3.0"]))
    elif fault == "usage":
        usage = draw(st.sampled_from(["Test", "training", "", "Validation"]))
    elif fault == "text":
        pixels[draw(st.integers(0, 2303))] = draw(st.sampled_from(["x", "1.5", "nan", "--"]))
    elif fault == "range":
        pixels[draw(st.integers(0, 2303))] = draw(st.sampled_from(["256", "-1", "1000"]))
    return fault, f"{label},{' '.join(pixels)},{usage}"


@SETTINGS
@given(st.lists(csv_rows(), min_size=1, max_size=4))
def test_any_csv_loads_every_row_or_names_the_first_bad_line(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(line for _, line in rows) + "\n")
    first_bad = next((i for i, (fault, _) in enumerate(rows) if fault), None)
    if first_bad is None:
        dataset = load_fer2013_csv(path)
        assert sum(len(split) for split in dataset.values()) == len(rows)
    else:
        with pytest.raises(DataError, match=rf"{path}, line {first_bad + 2}: "):
            load_fer2013_csv(path)
