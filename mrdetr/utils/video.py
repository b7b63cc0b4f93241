"""Video reading and writing on OpenCV with a codec that this OpenCV build can actually write.

The codec is chosen from the output extension and probed (``cv2.VideoWriter.isOpened``):
``.mkv`` tries x264 then mp4v/MJPG, ``.mp4`` mp4v (then avc1), ``.avi`` MJPG (then XVID).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import numpy as np

__all__ = ["VideoError", "open_video_writer", "read_video", "video_properties"]

# extension -> fourcc codes to try, best first
CODECS: dict[str, tuple[str, ...]] = {
    ".mkv": ("x264", "mp4v", "MJPG"),
    ".mp4": ("mp4v", "avc1"),
    ".avi": ("MJPG", "XVID"),
}
DEFAULT_EXTENSION = ".mp4"
_DEFAULT_FPS = 25.0  # used when a source reports no frame rate (e.g. some webcams)


class VideoError(OSError):
    """A video that cannot be opened, read or written (the message names the file)."""


def video_properties(capture: cv2.VideoCapture) -> tuple[float, int, int, int]:
    """(fps, width, height, frame count) of an open capture (count is 0 when unknown)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else _DEFAULT_FPS
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return fps, width, height, count


def open_capture(path: str) -> cv2.VideoCapture:
    """Open a video file for reading.

    Raises:
        VideoError: the file is missing or OpenCV cannot decode it.
    """
    if not os.path.isfile(path):
        raise VideoError(f"video file not found: {path}")
    capture = cv2.VideoCapture(path)
    ok, _ = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise VideoError(f"cannot read video '{path}': OpenCV could not decode a frame")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return capture


def read_video(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield BGR frames until the capture ends."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def open_video_writer(path: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """Open a writer for ``path`` (width, height = ``size``) with the first codec that works.

    Raises:
        FileExistsError: ``path`` already exists (outputs are never overwritten).
        VideoError: no codec for this extension can be written by this OpenCV build.
    """
    if os.path.exists(path):
        raise FileExistsError(f"output file already exists: {path} (refusing to overwrite)")
    ext = os.path.splitext(path)[1].lower()
    if ext not in CODECS:
        raise VideoError(
            f"unsupported video extension '{ext}' for {path}; use one of {sorted(CODECS)}"
        )
    for code in CODECS[ext]:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*code), float(fps), tuple(size))
        if writer.isOpened():
            return writer
        writer.release()
        if os.path.exists(path):
            os.remove(path)
    raise VideoError(
        f"OpenCV cannot write {ext} video here (tried {', '.join(CODECS[ext])}): {path}"
    )
