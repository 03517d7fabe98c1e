"""Image loading with errors that name the file at fault."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

# Refuse decompression bombs outright: 64 Mpx is far above any LVLM's input resolution.
MAX_PIXELS = 64 * 1024 * 1024


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
