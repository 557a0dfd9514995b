"""What the judge server accepts as an image (the request gate's checks, vlm_judge.serving.gate): inline data URLs
whose header names a readable image within the size limits, and links only to the hosts the operator allowed.
A refused image is a Rejection: the HTTP status and a message that names the image and the problem."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024  # a 1024x1024 PNG is 1-3 MB
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # 16x a 1024x1024 generation; PIL's own bomb check starts at ~89 M
HEADER_BASE64_CHARS = 1 << 18  # 192 KiB of image bytes: past any PNG/JPEG/WebP header that declares the size


@dataclass
class MediaPolicy:
    allowed_media_domains: list[str] = field(default_factory=list)  # empty: inline images only
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


class Rejection(Exception):
    """A request refused before vLLM sees it: the HTTP status and the message for the client."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def image_urls(body: Any) -> list[str]:
    """Every image URL of a chat-shaped request body (`messages[*].content[*].image_url`)."""
    urls = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and "image_url" in part:
                image_url = part["image_url"]
                urls.append(str(image_url.get("url") if isinstance(image_url, dict) else image_url))
    return urls


def check_image_url(url: str, policy: MediaPolicy, index: int) -> None:
    """Rejection when the image at `url` must not reach vLLM (see the module docstring)."""
    where = f"image {index + 1}"
    if url.startswith("data:"):
        check_data_url(url, policy, where)
        return
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not policy.allowed_media_domains:
            raise Rejection(
                400,
                f"{where}: this judge server accepts images only inline, as a data URL "
                f"(data:image/png;base64,...), not a link ({_short(url)}); the operator can allow domains "
                "with --allowed-media-domains",
            )
        if parts.hostname not in policy.allowed_media_domains:
            raise Rejection(
                400,
                f"{where}: host {parts.hostname!r} is not an allowed media domain "
                f"({', '.join(policy.allowed_media_domains)})",
            )
        return
    raise Rejection(
        400,
        f"{where}: URL scheme {parts.scheme + ':' if parts.scheme else '(none)'} is not accepted; send the image "
        "as a data URL (data:image/png;base64,...)",
    )


def check_data_url(url: str, policy: MediaPolicy, where: str) -> None:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise Rejection(400, f"{where}: a data URL must be base64-encoded (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > policy.max_image_bytes:
        raise Rejection(
            413,
            f"{where}: {len(payload) * 3 // 4} bytes exceeds the server's limit of {policy.max_image_bytes} "
            "bytes per image",
            "PayloadTooLargeError",
        )
    # The header tells the format and the size (all a bomb check needs): decode only the first part.
    head = payload[:HEADER_BASE64_CHARS].strip()
    try:
        data = base64.b64decode(head[: len(head) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(400, f"{where}: the data URL's base64 does not decode") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: cheap, and no bomb is decoded
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise Rejection(400, f"{where}: decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise Rejection(400, f"{where}: the data is not an image PIL can read (no known image format)") from None
    except (OSError, ValueError) as exc:
        raise Rejection(400, f"{where}: the data is not an image PIL can read ({exc})") from None
    if width * height > policy.max_image_pixels:
        raise Rejection(
            413,
            f"{where}: {width}x{height} = {width * height} pixels exceeds the server's limit of "
            f"{policy.max_image_pixels} pixels (a decompression bomb, or far larger than a judge reads)",
            "PayloadTooLargeError",
        )


def is_image_only(body: Any) -> bool:
    """A request whose only message is a user turn with images and no text: the served prompt applies to it."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        return False
    content = messages[0].get("content")
    return (
        messages[0].get("role") == "user"
        and isinstance(content, list)
        and bool(content)
        and all(isinstance(p, dict) and "text" not in p and p.get("type") != "text" for p in content)
    )



def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."
