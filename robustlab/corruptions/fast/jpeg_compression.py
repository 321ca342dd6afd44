"""JPEG compression at quality 25 18 15 10 7.

Deterministic. The image is quantised to 8 bits (as the reference's PIL round trip does) and
encoded/decoded with ``torchvision.io.encode_jpeg``/``decode_jpeg``: libjpeg-turbo with the same
standard quantisation tables, 4:2:0 chroma subsampling and decoder settings as Pillow's
``save(format='JPEG', quality=q)`` (bit-identical to the reference, checked by the fidelity
tests). Whole batches go to the encoder as a list. The codec always runs on the CPU, also for
images on a GPU: torchvision's CUDA path (nvJPEG) leaves the encoded bytes on the GPU, which its
decoder refuses ("Input list must contain tensors on CPU"), and nvJPEG's encoder is not libjpeg's,
so the corrupted images, and the scorecard, would depend on the device. The result goes back to
the input's device. torchvision 0.29 deprecates its image codecs in favour of TorchCodec; when they
are unavailable this falls back to Pillow, image by image (the reference's own codec).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.jpeg_compression``; ITU-T T.81.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

QUALITY = (25, 18, 15, 10, 7)


def _pil_round_trip(u8: torch.Tensor, quality: int) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in u8.cpu():
        buf = io.BytesIO()
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, "JPEG", quality=quality)
        dec = np.asarray(Image.open(buf), dtype=np.uint8)
        out.append(torch.from_numpy(dec.reshape(arr.shape).copy()).permute(2, 0, 1))
    return torch.stack(out)


@FAST_CORRUPTIONS.register("jpeg_compression")
def jpeg_compression(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    return jpeg_round_trip(x, QUALITY[check_input(x, severity, seeds)])


def jpeg_round_trip(x: torch.Tensor, q: int) -> torch.Tensor:
    """8-bit quantise, JPEG encode at quality ``q`` and decode: (N, C, H, W) in [0, 1] -> same."""
    if x.shape[0] == 0:
        return x.clone()
    u8 = (x.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()  # libjpeg on the CPU for every device (see above)
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:  # torchvision without image codecs
        return _pil_round_trip(u8, q).to(device=x.device, dtype=x.dtype) / 255.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchVision.*")
        encoded = encode_jpeg(list(u8.contiguous().unbind(0)), quality=q)
        decoded = decode_jpeg(encoded, device="cpu")
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255.0
