"""Quality metrics and flags on synthetic cells, and decoding of good and bad files."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from app.ml.decode import decode_bytes
from app.ml.quality import Thresholds, laplacian_variance, measure, unsharp_mask
from support.oracles import check_bytes

THRESHOLDS = Thresholds.load()


def synthetic_cell(seed: int = 0) -> np.ndarray:
    """A pale background with a textured MGG-purple nucleus: passes every check."""
    rng = np.random.default_rng(seed)
    img = np.full((250, 250, 3), (225, 205, 215), np.uint8)
    cv2.circle(img, (125, 125), 70, (120, 60, 160), -1)
    noise = rng.normal(0, 25, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def test_a_good_cell_has_no_flags():
    m = measure(synthetic_cell(), THRESHOLDS)
    assert m["flags"] == []
    assert m["color_type"] == "color"


@pytest.mark.parametrize("transform, flag", [
    (lambda im: (im * 0.15).astype(np.uint8), "too_dark"),
    (lambda im: np.clip(im.astype(int) + 200, 0, 255).astype(np.uint8), "too_bright"),
    (lambda im: np.repeat(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[:, :, None], 3, 2), "grayscale"),
    (lambda im: np.ascontiguousarray(im[..., [1, 2, 0]]), "no_stain"),  # nucleus turned green: no purple
    (lambda im: cv2.GaussianBlur(im, (0, 0), 4), "blurry"),
])
def test_each_problem_raises_its_flag(transform, flag):
    assert flag in measure(transform(synthetic_cell()), THRESHOLDS)["flags"]


def test_unsharp_masking_raises_laplacian_variance():
    blurred = cv2.GaussianBlur(synthetic_cell(), (0, 0), 3)
    assert laplacian_variance(unsharp_mask(blurred)) > 2 * laplacian_variance(blurred)


def test_blurry_cells_are_repaired_only_when_repair_is_on():
    data = encode(cv2.GaussianBlur(synthetic_cell(), (0, 0), 4), "PNG")
    rec, image = check_bytes("blurry.png", data, THRESHOLDS, repair=True)
    assert rec.repaired and "blurry" in rec.flags
    assert laplacian_variance(image) > rec.blur_variance
    rec_off, image_off = check_bytes("blurry.png", data, THRESHOLDS, repair=False)
    assert not rec_off.repaired and "blurry" in rec_off.flags
    sharp_rec, _ = check_bytes("sharp.png", encode(synthetic_cell(), "PNG"), THRESHOLDS)
    assert not sharp_rec.repaired


@pytest.mark.parametrize("fmt, kw", [("JPEG", {"quality": 95}), ("PNG", {}), ("BMP", {}), ("TIFF", {})])
def test_formats_decode_by_content_whatever_the_name(fmt, kw):
    rgb = synthetic_cell()
    rec, image = check_bytes("cell.txt", encode(rgb, fmt, **kw), THRESHOLDS, repair=False)
    assert rec.error is None and rec.format == fmt
    assert image.shape == (250, 250, 3)


def test_rgba_tiff_is_composited_and_decoded():
    rgba = np.dstack([synthetic_cell(), np.full((250, 250), 255, np.uint8)])
    dec = decode_bytes(encode(rgba, "TIFF"))
    assert dec.ok and dec.mode == "RGBA" and dec.rgb.shape == (250, 250, 3)
    assert np.array_equal(dec.rgb, synthetic_cell())
    half = rgba.copy()
    half[..., 3] = 128  # half transparent: composited on white, paler
    assert decode_bytes(encode(half, "TIFF")).rgb.mean() > synthetic_cell().mean() + 20


def test_an_alpha_channel_left_empty_is_ignored():
    """Some scanners write RGBA TIFFs whose alpha is 0 everywhere: the cell is in the colours,
    not a blank white frame."""
    empty = np.dstack([synthetic_cell(), np.zeros((250, 250), np.uint8)])
    assert np.array_equal(decode_bytes(encode(empty, "TIFF")).rgb, synthetic_cell())
    rgb16 = cv2.cvtColor(synthetic_cell(), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".tiff", np.dstack([rgb16, np.zeros((250, 250), np.uint16)]))
    assert np.abs(decode_bytes(buf.tobytes()).rgb.astype(int) - synthetic_cell()).max() <= 1


def test_16_bit_tiffs_decode_to_8_bit():
    gray16 = (cv2.cvtColor(synthetic_cell(), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    dec = decode_bytes(encode(gray16, "TIFF"))  # PIL mode I;16
    assert dec.ok and dec.rgb.dtype == np.uint8 and dec.rgb.max() > 200
    rgb16 = cv2.cvtColor(synthetic_cell(), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".tiff", rgb16)
    dec = decode_bytes(buf.tobytes())
    assert dec.ok and np.abs(dec.rgb.astype(int) - synthetic_cell()).max() <= 1
    rec, _ = check_bytes("gray16.tif", encode(gray16, "TIFF"), THRESHOLDS)
    assert "grayscale" in rec.flags


def png_bomb(width: int, height: int) -> bytes:
    """A well-formed PNG that declares width×height but carries only a few bytes of pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"<html><body>not a cell</body></html>", "not an image"),
    (png_bomb(50_000, 50_000), "too large: 50000×50000"),
])
def test_bad_files_are_reported_not_raised(data, reason):
    rec, image = check_bytes("bad.jpg", data, THRESHOLDS)
    assert rec.error == reason and image is None and rec.flags == ["unreadable"]


@pytest.mark.parametrize("kept", [0.5, 0.9, 0.999])
def test_truncated_jpeg_is_reported(kept):
    data = encode(synthetic_cell(), "JPEG", quality=95)
    rec, image = check_bytes("cut.jpg", data[: int(len(data) * kept)], THRESHOLDS)
    assert rec.error == "truncated" and image is None


def _pil_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_real_cells_decode_to_pils_pixels(real_cells_dir, pbc_cells_dir):
    """Checked colour JPEGs are decoded by OpenCV (less CPU): the pixels are PIL's, on both labs' cells."""
    paths = [p for root in (real_cells_dir, pbc_cells_dir) for d in sorted(root.iterdir()) if d.is_dir()
             for p in sorted(d.glob("*.jpg"))[:2]]
    assert len(paths) >= 20
    for path in paths:
        data = path.read_bytes()
        np.testing.assert_array_equal(decode_bytes(data, checked=True).rgb, _pil_pixels(data), err_msg=str(path))


def _jpeg_variants() -> dict[str, bytes]:
    rgb = synthetic_cell()
    out = {f"subsampling {s}": encode(rgb, "JPEG", quality=90, subsampling=s) for s in (0, 1, 2)}
    out["progressive"] = encode(rgb, "JPEG", quality=90, progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180°": ignored, as PIL ignores it
    out["EXIF orientation"] = encode(rgb, "JPEG", quality=90, exif=exif)
    out["odd size"] = encode(np.ascontiguousarray(rgb[:217, :201]), "JPEG", quality=75)
    out["restart markers"] = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1].tobytes()
    out["bytes after the end marker"] = encode(rgb, "JPEG", quality=90) + b"\0" * 16
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG", quality=90)
    out["CMYK"] = cmyk.getvalue()
    return out


JPEG_VARIANTS = _jpeg_variants()


@pytest.mark.parametrize("kind", list(JPEG_VARIANTS))
def test_jpeg_variants_decode_to_pils_pixels(kind):
    data = JPEG_VARIANTS[kind]
    decoded = decode_bytes(data, checked=True)
    assert decoded.ok, decoded.error
    np.testing.assert_array_equal(decoded.rgb, _pil_pixels(data), err_msg=kind)


def test_a_jpeg_broken_by_a_stray_marker_is_reported():
    """A start-of-image marker in the middle of the image data: libjpeg stops there. The upload
    check and an unchecked full decode (`marrow qc`, `classify`) both report it, never a
    half-grey cell (OpenCV's decoder would fill the rest without an error)."""
    data = bytearray(encode(synthetic_cell(), "JPEG", quality=95))
    data[len(data) // 2:len(data) // 2 + 2] = b"\xff\xd8"
    assert decode_bytes(bytes(data), reduced=True).error == "truncated"
    rec, image = check_bytes("marker.jpg", bytes(data), THRESHOLDS)
    assert rec.error == "truncated" and image is None
