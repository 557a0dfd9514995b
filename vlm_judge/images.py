"""Image loading and validation, written once: the data guard, training, the client, scoring and eval use it.

Every failure is an ImageError whose message names the image and the problem.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageSource = str | Path | bytes | Image.Image

# A judge input is one 1024x1024 generation; these bounds only reject what cannot be a sensible input.
MIN_SIDE = 28  # one 2x2 block of 14-px patches: the smallest image Qwen2-VL can see
MAX_PIXELS = 8192 * 8192  # decompression-bomb guard (PIL's own limit warns at ~89 MP)
# Formats a vLLM server (PIL behind it) decodes: such bytes are sent as they are, without re-encoding.
PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageError(ValueError):
    """An input image that cannot be judged; the message names the image and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"image {source!r}: {reason}")


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    raw: bytes  # the file's original bytes ("" for in-memory PIL images)
    format: str | None  # PIL format name of the original, e.g. "PNG"
    name: str
    original_mode: str = "RGB"  # PIL mode before conversion to RGB
    orientation: int = 1  # EXIF orientation of the original (1 = as stored)

    @property
    def sha256(self) -> str:
        data = self.raw or self.image.tobytes()
        return hashlib.sha256(data).hexdigest()


def describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL {source.mode} {source.width}x{source.height}>"
    return f"<{type(source).__name__}>"


def _read_bytes(source: ImageSource, name: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if not path.exists():
        raise ImageError(name, "file does not exist")
    if path.is_dir():
        raise ImageError(name, "is a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(name, "file is empty")
    return data


def to_rgb(image: Image.Image, name: str = "<image>") -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, palette/CMYK converted, 16-bit/float rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            array = array / 257.0
        elif mode == "I":
            array = array / 257.0 if array.max(initial=0) > 255 else array
        else:  # float images are conventionally in [0, 1]
            array = array * 255.0 if array.max(initial=0) <= 1.0 else array
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(name, f"colour mode {mode} cannot be converted to RGB ({exc})") from None


def load_image(
    source: ImageSource,
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> LoadedImage:
    """Decode and validate one image: RGB, EXIF-rotated, fully decoded (truncation is an error), size-checked."""
    name = name or describe(source)
    if isinstance(source, Image.Image):
        image, raw, fmt = source, b"", source.format
    elif isinstance(source, (str, Path, bytes)):
        raw = _read_bytes(source, name)
        try:
            image = Image.open(io.BytesIO(raw))
        except UnidentifiedImageError:
            raise ImageError(name, "not an image (cannot identify the file format)") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(name, f"cannot be decoded ({exc})") from None
        fmt = image.format
    else:
        raise ImageError(name, f"unsupported input type {type(source).__name__} (path, bytes or PIL image)")

    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(name, f"too large: {width}x{height} exceeds {max_pixels} pixels")
    try:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never silently grey
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        text = str(exc)
        reason = "truncated file" if "truncated" in text.lower() else "cannot be decoded"
        raise ImageError(name, f"{reason} ({text})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous

    original_mode = image.mode
    orientation = 1
    with contextlib.suppress(Exception):  # a broken EXIF block must not make a decodable image unusable
        orientation = int(image.getexif().get(0x0112, 1) or 1)
        image = ImageOps.exif_transpose(image)
    image = to_rgb(image, name)
    if min(image.size) < min_side:
        raise ImageError(name, f"too small: {image.width}x{image.height}, each side must be >= {min_side} px")
    return LoadedImage(
        image=image, raw=raw, format=fmt, name=name, original_mode=original_mode, orientation=orientation
    )


def _needs_reencode(loaded: LoadedImage) -> bool:
    if not loaded.raw or loaded.format not in PASSTHROUGH_FORMATS:
        return True
    # Another mode would be converted by the server its own way, and a rotation ignored: send what training saw.
    return loaded.original_mode != "RGB" or loaded.orientation != 1


def to_data_url(source: ImageSource | LoadedImage, **load_kwargs) -> str:
    """A data URL for an OpenAI-compatible request.

    Plain RGB JPEG/PNG/WebP files go as their original bytes (no decode/re-encode loss); anything else
    (alpha, palette, CMYK, 16-bit, EXIF-rotated, other formats) is normalised by load_image and sent as PNG,
    so the server sees the same pixels training did."""
    loaded = source if isinstance(source, LoadedImage) else load_image(source, **load_kwargs)
    if _needs_reencode(loaded):
        buffer = io.BytesIO()
        loaded.image.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    else:
        data, mime = loaded.raw, PASSTHROUGH_FORMATS[loaded.format]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
