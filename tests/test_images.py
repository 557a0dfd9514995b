import base64
import io

import numpy as np
import pytest
from PIL import Image

from vlm_judge.images import ImageError, load_image, to_data_url


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), "RGB")


def test_rgb_png_loads_unchanged(tmp_path, rgb):
    path = tmp_path / "a.png"
    rgb.save(path)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (80, 64)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(rgb))
    assert loaded.format == "PNG" and loaded.name == str(path)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    loaded = load_image(_png_bytes(rgba))
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    assert load_image(half).image.getpixel((5, 5)) == (127, 127, 127)


def test_palette_cmyk_grey_and_16_bit_become_rgb():
    palette = Image.new("RGB", (32, 32), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_image(_png_bytes(palette)).image.getpixel((1, 1)) == (10, 200, 30)
    cmyk = Image.new("CMYK", (32, 32), (0, 0, 0, 0))
    assert load_image(_png_bytes(cmyk, "JPEG")).image.getpixel((1, 1))[0] > 250
    grey16 = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))
    assert grey16.mode.startswith("I;16")
    assert load_image(_png_bytes(grey16)).image.getpixel((1, 1)) == (255, 255, 255)
    assert load_image(Image.new("L", (32, 32), 7)).image.getpixel((0, 0)) == (7, 7, 7)


def test_exif_orientation_is_applied(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png_bytes(rgb, "JPEG", exif=exif.tobytes())
    assert load_image(data).image.size == (64, 80)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_text("not an image at all"), "not an image"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(_png_bytes(Image.new("RGB", (10, 10)))), "too small: 10x10"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_files_give_named_errors(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_missing_truncated_and_huge(tmp_path, rgb):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    data = _png_bytes(rgb.resize((256, 256)))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png.*truncated"):
        load_image(truncated)
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=5000)
    with pytest.raises(ImageError, match="unsupported input type"):
        load_image(12345)


def test_data_url_keeps_original_bytes_of_plain_rgb(tmp_path, rgb):
    path = tmp_path / "a.png"
    rgb.save(path)
    url = to_data_url(path)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == path.read_bytes()
    jpeg = tmp_path / "a.jpg"
    rgb.save(jpeg, quality=90)
    assert base64.b64decode(to_data_url(jpeg).split(",", 1)[1]) == jpeg.read_bytes()


def test_data_url_normalises_alpha_and_other_formats(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    url = to_data_url(_png_bytes(rgba))
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)
    bmp = _png_bytes(Image.new("RGB", (32, 32), (1, 2, 3)), "BMP")
    assert to_data_url(bmp).startswith("data:image/png;base64,")
