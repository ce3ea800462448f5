"""Hostile uploads, generated: every file a careless scanner, a confused user or an attacker
could send. Each entry is (file name, bytes, what the upload report must say): an expected
reason (a substring of the rejection) or ACCEPTED for odd but valid images.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

ACCEPTED = None  # a valid image in an unusual form: it must become a cell and be processed
MiB = 2**20


def image(seed: int, fmt: str = "PNG", size: int = 64, mode: str = "RGB", **save) -> bytes:
    """A synthetic image of one mode (RGB, RGBA, L ...), distinct per seed."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, len(mode) if mode != "L" else 1), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if mode == "L" else arr, mode).save(buf, fmt, **save)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header promises width × height pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def tiff16(seed: int, channels: int) -> bytes:
    """A 16-bit-per-channel TIFF (RGB or RGBA), as microscope cameras write them."""
    import cv2

    arr = np.random.default_rng(seed).integers(0, 65535, (48, 48, channels), dtype=np.uint16)
    ok, buf = cv2.imencode(".tiff", arr)
    assert ok
    return buf.tobytes()


def animated_gif(seed: int) -> bytes:
    frames = [Image.fromarray(np.random.default_rng(seed + i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
              for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def big_png(seed: int, megabytes: int) -> bytes:
    """A valid PNG of about `megabytes` MB (noise does not compress)."""
    side = int((megabytes * 1e6 / 3) ** 0.5)
    return image(seed, "PNG", side, compress_level=0)


def zip_of(members: dict[str, bytes], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zeros_zip(members: int, member_mb: int) -> bytes:
    """`members` entries of `member_mb` MiB of zeros each (expansion ratio ~200:1), each under
    the per-file limit: together they test how much of an upload is held in memory at once."""
    raw = bytes(member_mb * MiB)
    return zip_of({f"zeros-{i:03d}.png": raw for i in range(members)}, level=1)


def lying_zip(real_mb: int, claimed: int) -> bytes:
    """One member whose headers claim `claimed` bytes but which inflates to `real_mb` MiB."""
    data = bytearray(zip_of({"liar.png": bytes(real_mb * MiB)}, level=9))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig)
        data[at + offset:at + offset + 4] = struct.pack("<I", claimed)
    return bytes(data)


def hostile_files(good: list[tuple[str, bytes]], max_file_mb: int) -> list[tuple[str, bytes, str | None]]:
    """The corpus. `good` real cells are mixed in (and zipped) and must all be accepted."""
    jpeg = good[0][1]
    files: list[tuple[str, bytes, str | None]] = [
        ("empty.jpg", b"", "empty file"),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated"),
        ("notes.jpg", b"Patient: Doe, John\nthis is a text file\n", "not an image"),
        ("page.jpg", b"<!doctype html><script>alert(1)</script>", "not an image"),
        ("bomb.png", png_declaring(50_000, 50_000), "too large: 50000×50000"),
        ("rgb16.tif", tiff16(1, 3), ACCEPTED),
        ("rgba16.tif", tiff16(2, 4), ACCEPTED),
        ("rgba.tif", image(3, "TIFF", mode="RGBA"), ACCEPTED),
        ("gray.png", image(4, "PNG", mode="L"), ACCEPTED),
        ("animated.gif", animated_gif(5), ACCEPTED),
        ("twenty-mb.png", big_png(6, 20), ACCEPTED),
        ("over-limit.png", b"\x89PNG\r\n\x1a\n" + bytes((max_file_mb + 1) * MiB), f"over {max_file_mb} MiB"),
        ("bomb.zip", zip_of({"bomb.png": bytes(256 * MiB)}, level=9), "too large"),
        ("liar.zip", lying_zip(8, 1000), "unreadable zip member"),
        ("paths.zip", zip_of({"../../evil-up.png": image(7), "/abs/evil-abs.png": image(8),
                              "ok/inner.png": good[1][1]}), ACCEPTED),
        ("nested.zip", zip_of({"inner.zip": zip_of({"x.png": image(9)})}), "nested archive"),
        ("mixed.zip", zip_of({"readme.txt": b"hello", "run.sh": b"#!/bin/sh\nrm -rf /\n", "c.jpg": good[2][1]}),
         "not an image"),
        ("ünïcødé 細胞 cell.png", image(10), ACCEPTED),
        ("with spaces .png", image(11), ACCEPTED),
        ("dir/sub/slashed.png", image(12), ACCEPTED),
        ("ctrl\x1b\x7f\u202e\u200bevil.png", image(13), ACCEPTED),  # what survives multipart encoding
    ]
    files += [(name, data, ACCEPTED) for name, data in good[3:]]
    return files
