"""Reading one image file into an RGB ``PIL.Image``, with a clear error when the file cannot be read.

Two decoders are available, OpenCV and Pillow; ``benchmarks/bench_dataloader.py`` measures both on
this machine. Both work with paths containing spaces and non-ASCII characters (OpenCV decodes from a
byte buffer read with ``numpy.fromfile`` because ``cv2.imread`` cannot open such paths everywhere).
"""
import cv2
import numpy as np
from PIL import Image

from .errors import DatasetError

# Which decoder is faster depends on the machine: benchmarks/bench_dataloader.py compares them.
DEFAULT_DECODER = "cv2"


def decode_cv2(path: str) -> Image.Image:
    """Decode with OpenCV (BGR -> RGB)."""
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err.strerror or err}") from None
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise DatasetError(f"cannot read image {path}: not a decodable image file (corrupt or empty)")
    return Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def decode_pil(path: str) -> Image.Image:
    """Decode with Pillow."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"cannot read image {path}: file not found") from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"cannot read image {path}: {err}") from None


DECODERS = {"cv2": decode_cv2, "pil": decode_pil}


def read_image(path: str, decoder: str = DEFAULT_DECODER) -> Image.Image:
    """The image at ``path`` as an RGB ``PIL.Image``; ``DatasetError`` naming the file if unreadable."""
    return DECODERS[decoder](path)
