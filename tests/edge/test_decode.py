"""edge.decode on real and deliberately broken files written to disk."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import piexif
import PIL.Image
import pytest

from edge.decode import DecodeError, TruncatedError, is_greyscale, jpeg_truncated, load_image


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    """An RGB image whose three channels differ, so colour order mistakes show."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, np.full_like(x, 200)], axis=-1).astype(np.uint8)


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG file, 1-bit greyscale, with the given compressed pixel stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_real_colour_and_ir_frames(colour_frame: Path, ir_frame: Path) -> None:
    colour, ir = load_image(colour_frame), load_image(ir_frame)
    for im in (colour, ir):
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
    assert is_greyscale(ir) and not is_greyscale(colour)
    with PIL.Image.open(colour_frame) as ref:
        assert colour.shape[:2] == (ref.height, ref.width)


def test_rgb_order(tmp_path: Path) -> None:
    rgb = _gradient()
    path = tmp_path / "lossless.png"
    PIL.Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    rgb = _gradient(40, 60)
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}})
    path = tmp_path / "rotated.jpg"
    PIL.Image.fromarray(rgb).save(path, quality=95, exif=exif)
    out = load_image(path)
    assert out.shape == (60, 40, 3)  # stored 40x60, shown rotated 90 degrees clockwise
    # orientation 6: the stored left column becomes the top row
    expected = np.rot90(rgb, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def test_large_jpeg_is_decoded_reduced_but_oriented_and_never_below_min_side(
    tmp_path: Path,
) -> None:
    rgb = _gradient(1200, 1600)
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}})
    path = tmp_path / "big.jpg"
    PIL.Image.fromarray(rgb).save(path, quality=90, exif=exif)
    full = load_image(path)
    small = load_image(path, min_side=256)
    assert full.shape == (1600, 1200, 3)
    assert small.shape == (400, 300, 3)  # 1/4 scale: the largest keeping 300 >= 256
    assert load_image(path, min_side=500).shape == (800, 600, 3)
    assert load_image(path, min_side=700).shape == (1600, 1200, 3)
    shrunk = cv2.resize(full, (300, 400), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - shrunk.astype(int)).mean() < 6  # same picture, rotated
    png = tmp_path / "big.png"
    PIL.Image.fromarray(rgb).save(png)
    assert load_image(png, min_side=256).shape == (1200, 1600, 3)  # only JPEGs are reduced


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DecodeError, match="0 bytes"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_jpeg_is_reported_as_truncated(
    tmp_path: Path, colour_frame: Path, keep: float
) -> None:
    """Depending on its build and where the cut falls, OpenCV returns None or a frame with the
    missing rows grey. load_image always refuses a JPEG without its end marker, with a
    TruncatedError (a DecodeError) so a watcher can wait for the rest of the file."""
    data = colour_frame.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TruncatedError, match="truncated JPEG"):
        load_image(path)
    assert jpeg_truncated(data[: int(len(data) * keep)]) and not jpeg_truncated(data)


def test_jpeg_with_trailing_padding_is_whole(tmp_path: Path, colour_frame: Path) -> None:
    path = tmp_path / "padded.jpg"
    path.write_bytes(colour_frame.read_bytes() + b"\x00" * 512)
    assert load_image(path).shape == load_image(colour_frame).shape


def test_text_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(DecodeError, match="not a decodable image"):
        load_image(path)


def test_png_with_alpha_drops_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([_gradient(), np.linspace(0, 255, 60, dtype=np.uint8)[None].repeat(40, 0)])
    path = tmp_path / "alpha.png"
    PIL.Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path)
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_16_bit_png_scaled_to_8_bits(tmp_path: Path) -> None:
    grey16 = (np.arange(40 * 60, dtype=np.uint32).reshape(40, 60) * 27).astype(np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), grey16)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[..., 0], (grey16 >> 8).astype(np.uint8))
    assert is_greyscale(out)


def test_greyscale_jpeg_gives_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "ir.jpg"
    PIL.Image.fromarray(_gradient()[..., 0], "L").save(path, quality=95)
    out = load_image(path)
    assert out.shape == (40, 60, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg_decodes_to_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (220, 30, 30)  # red, green, blue bands
    rgb[:, 16:32] = (30, 220, 30)
    rgb[:, 32:] = (30, 30, 220)
    path = tmp_path / "print.jpg"
    PIL.Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    with PIL.Image.open(path) as im:
        assert im.mode == "CMYK"
    out = load_image(path)
    assert out.shape == (32, 48, 3)
    # each band keeps its dominant channel
    for band, channel in ((slice(2, 14), 0), (slice(18, 30), 1), (slice(34, 46), 2)):
        means = out[:, band].reshape(-1, 3).mean(axis=0)
        assert means.argmax() == channel, means


def test_decompression_bomb_over_pillow_limit(tmp_path: Path) -> None:
    """A real 20000x20000 PNG (a 50 KB file that would need 1.2 GB decoded)."""
    row = b"\x00" + bytes(20000 // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(20000)) + comp.flush()
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(20000, 20000, idat))
    assert path.stat().st_size < 200_000
    with pytest.raises(DecodeError, match="bomb"):
        load_image(path)


def test_frame_over_our_own_limit(tmp_path: Path, colour_frame: Path) -> None:
    """Under Pillow's limit but over max_pixels: refused by the header, nothing decoded."""
    path = tmp_path / "big.png"
    path.write_bytes(_png(12000, 10000, zlib.compress(b"")))  # header only, pixels bogus
    with pytest.raises(DecodeError, match="over the limit"):
        load_image(path)
    with pytest.raises(DecodeError, match="over the limit"):
        load_image(colour_frame, max_pixels=1000)


@pytest.mark.parametrize("name", ["café été.jpg", "cámara 3/夜 frame (1).JPG", "a b.jpeg"])
def test_unicode_and_space_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    PIL.Image.fromarray(_gradient()).save(buf, format="JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    assert load_image(path).shape == (40, 60, 3)
    assert load_image(str(path)).shape == (40, 60, 3)
