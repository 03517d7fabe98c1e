"""Image files: which files are images, listing a folder of them, and loading one with errors
that name the file at fault."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

# Refuse decompression bombs outright: 64 Mpx is far above any LVLM's input resolution.
MAX_PIXELS = 64 * 1024 * 1024

# What a file must end in (any case) to be taken as an image when a folder is listed (`vladva
# embed`, `vladva index`, benchmark image folders). Every format here is one `load_image` opens.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """A file whose suffix is one of `IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def find_images(folder: Path | str) -> list[Path]:
    """Every image file under `folder`, recursively, sorted by path (empty if there is none)."""
    return sorted(p for p in Path(folder).rglob("*") if is_image_file(p))


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit greyscale (PNG "I;16" / "I") to 8-bit RGB by scaling 0..65535 to 0..255; PIL's own
    `convert("RGB")` clips instead, turning every pixel above 255 white."""
    import numpy as np

    grey = np.asarray(im, dtype=np.float64)
    grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # uint8 (h, w) -> mode "L"


def load_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open `path` as an RGB image (greyscale, palette, CMYK and alpha are converted; alpha is
    composited on black). Raises `ImageLoadError` for missing, empty, corrupt, truncated or huge files."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(f"{path}: image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
                im.load()
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    out = Image.new("RGB", rgba.size, (0, 0, 0))
                    out.paste(rgba, mask=rgba.getchannel("A"))
                    return out
                if im.mode.startswith("I;16") or im.mode == "I":
                    return _sixteen_bit_to_rgb(im)
                return im.convert("RGB")
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
