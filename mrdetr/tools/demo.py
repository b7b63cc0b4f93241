"""Image / folder / video / webcam demo (the logic of ``demo/demo.py``).

    python demo/demo.py --config-file CFG --input img1.jpg "imgs/*.png" folder/ --output OUT_DIR \
        [--confidence-threshold 0.3] [--min_size_test 800 --max_size_test 1333] [--img_format RGB] \
        [--metadata_dataset coco_2017_val] [--dtype bfloat16] \
        --opts train.init_checkpoint=model.pth train.device=cpu

Test-time size, model channel order and class names default to the config's (as the Predictor):
``dataloader.test.mapper.augmentation``, ``dataloader.test.mapper.img_format`` and the classes of
``dataloader.train.dataset``; the threshold defaults to the Predictor's.
    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out.mp4 --opts ...

Images: ``--input`` takes files, glob patterns and directories. With several inputs ``--output`` is a
directory (created if needed, one file per input with the same base name); with one input it may be a
file. Every input image is decoded once before the model is built; if any cannot be read (missing,
truncated, not an image, too many pixels) the demo stops before writing anything and lists them all.
With ``--skip-bad`` it processes the readable images instead, then lists the unreadable ones at the
end and exits with status 1. Videos are written at the source FPS and size with a codec this
OpenCV can write (``.mp4``: mp4v, ``.avi``: MJPG, ``.mkv``: x264 when available), with a progress
bar. Existing output files are never overwritten, and outputs are written atomically (no half file
after an error).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import sys
from collections.abc import Iterable

import cv2
import numpy as np

from mrdetr.utils.file_io import atomic_path
from mrdetr.utils.progress import track

from ..engine.precision import INFERENCE_DTYPES
from ..engine.predictor_config import DEFAULT_SCORE_THRESHOLD

__all__ = ["IMAGE_EXTENSIONS", "build_parser", "expand_inputs", "main"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WINDOW_NAME = "mrdetr demo"
_ESC_KEY = 27
_IGNORED_OVERRIDES = ("model.device=",)  # official CPU recipe; our model follows train.device
_LISTED_BAD_IMAGES = 10  # unreadable inputs named in one message


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Mr. DETR demo on images, a video or a webcam.")
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    p.add_argument("--webcam", action="store_true", help="take input from camera 0 (window only)")
    p.add_argument("--video-input", help="path to a video file")
    p.add_argument("--input", nargs="+", help="image files, glob patterns or directories")
    p.add_argument("--output", help="output file or directory (default: show an OpenCV window)")
    p.add_argument(
        "--min_size_test", type=int, help="shorter side after resize (default: the config's)"
    )
    p.add_argument(
        "--max_size_test", type=int, help="longer side cap after resize (default: the config's)"
    )
    p.add_argument(
        "--img_format",
        choices=("RGB", "BGR"),
        help="channel order the model expects (default: dataloader.test.mapper.img_format)",
    )
    p.add_argument(
        "--metadata_dataset",
        help="dataset for class names (default: the config's dataloader.train.dataset)",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=DEFAULT_SCORE_THRESHOLD,
        help="minimum score shown (default: %(default)s)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="process the readable input images, list the unreadable ones at the end (exit 1)",
    )
    p.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        help="inference dtype (default: the config's train.inference_dtype, else float32)",
    )
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value ...")
    return p


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Expand directories (their image files, sorted) and glob patterns; keep plain paths.

    Raises:
        FileNotFoundError: an item is neither an existing path nor a pattern matching files.
    """
    files: list[str] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f))
            )
            if not found:
                raise FileNotFoundError(f"--input directory has no image files: {item}")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(os.path.expanduser(item)) if os.path.isfile(f))
            if not found:
                raise FileNotFoundError(f"--input pattern matches no files: {item}")
            files.extend(found)
        else:
            raise FileNotFoundError(f"--input file not found: {item}")
    return files


def _image_outputs(inputs: list[str], output: str) -> list[str]:
    if len(inputs) > 1 or os.path.isdir(output) or output.endswith(os.sep):
        os.makedirs(output, exist_ok=True)
        targets = [os.path.join(output, os.path.basename(f)) for f in inputs]
    else:
        targets = [output]
    if len(set(targets)) != len(targets):
        raise ValueError(f"several --input files share a base name; they would collide in {output}")
    existing = [t for t in targets if os.path.exists(t)]
    if existing:
        raise FileExistsError(f"output file already exists: {existing[0]} (refusing to overwrite)")
    return targets


def _unreadable_images(paths: list[str]) -> dict[str, str]:
    """Decode every image once (as the demo will) and return ``{path: reason}`` for the bad ones."""
    from ..data.detection_utils import BadImageError, read_image

    bad: dict[str, str] = {}
    for path in paths:
        try:
            read_image(path, img_format="BGR")
        except BadImageError as exc:
            bad[path] = str(exc)
    return bad


def _check_images(paths: list[str]) -> None:
    """Fail, naming every unreadable image, before any output is written."""
    from ..data.detection_utils import BadImageError

    bad = _unreadable_images(paths)
    if bad:
        shown = "; ".join(list(bad.values())[:_LISTED_BAD_IMAGES])
        more = (
            f" (and {len(bad) - _LISTED_BAD_IMAGES} more)" if len(bad) > _LISTED_BAD_IMAGES else ""
        )
        raise BadImageError(
            f"{len(bad)} of {len(paths)} input images cannot be read, nothing was written: "
            f"{shown}{more}. Pass --skip-bad to process the readable ones."
        )


def _show(image_bgr: np.ndarray) -> bool:
    """Show a frame; False when the user pressed Esc."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, image_bgr)
    except cv2.error as exc:
        raise RuntimeError(
            "this OpenCV build cannot open windows (opencv-python-headless?); pass --output"
        ) from exc
    return cv2.waitKey(1) != _ESC_KEY


class _Demo:
    def __init__(self, args: argparse.Namespace):
        from ..engine.predictor import Predictor, load_config

        opts = [o for o in args.opts if not o.startswith(_IGNORED_OVERRIDES)]
        if args.img_format:
            opts.append(f"dataloader.test.mapper.img_format={args.img_format}")
        cfg = load_config(args.config_file, opts)
        device = cfg.train.get("device", "auto") if "train" in cfg else "auto"
        # frames are read as BGR (OpenCV); the Predictor feeds the model its own channel order
        self.predictor = Predictor(
            cfg,
            device=device,
            min_size_test=args.min_size_test,
            max_size_test=args.max_size_test,
            input_format="BGR",
            threshold=args.confidence_threshold,
            batch_size=1,
            metadata_dataset=args.metadata_dataset,
            dtype=args.dtype,
        )

    def draw(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, int]:
        from ..utils.visualizer import draw_detections

        dets = self.predictor(frame_bgr)
        vis = draw_detections(np.ascontiguousarray(frame_bgr[:, :, ::-1]), dets)
        return np.ascontiguousarray(vis[:, :, ::-1]), len(dets)


def _run_images(demo: _Demo, args: argparse.Namespace) -> dict[str, str]:
    """Process every input image; returns ``{path: reason}`` of those skipped (``--skip-bad``)."""
    from ..data.detection_utils import BadImageError, read_image
    from ..utils.visualizer import save_image

    inputs = expand_inputs(args.input)
    targets = _image_outputs(inputs, args.output) if args.output else [None] * len(inputs)
    skipped: dict[str, str] = {}
    for path, target in zip(track(inputs, enabled=bool(args.output)), targets):
        try:
            frame = read_image(path, img_format="BGR").permute(1, 2, 0).numpy()
        except BadImageError as exc:
            if not args.skip_bad:
                raise
            skipped[path] = str(exc)
            logger.warning("skipping %s", exc)
            continue
        vis, n = demo.draw(frame)
        logger.info("%s: %d detections", path, n)
        if target is None:
            if not _show(vis):
                break
        else:
            save_image(target, vis[:, :, ::-1])
    return skipped


def _report_skipped(skipped: dict[str, str], total: int) -> int:
    """Print the unreadable inputs (one per line) on stderr; the exit status (1 if any)."""
    if not skipped:
        return 0
    lines = "\n".join(f"  {reason}" for reason in skipped.values())
    print(
        f"error: {len(skipped)} of {total} input images could not be read and were skipped:\n"
        f"{lines}",
        file=sys.stderr,
    )
    return 1


def _video_output(video: str, output: str) -> str:
    from ..utils.video import DEFAULT_EXTENSION

    if os.path.isdir(output):
        stem = os.path.splitext(os.path.basename(video))[0]
        return os.path.join(output, stem + DEFAULT_EXTENSION)
    return output


def _run_video(demo: _Demo, args: argparse.Namespace) -> None:
    from ..utils.video import open_capture, open_video_writer, read_video, video_properties

    capture = open_capture(args.video_input)
    fps, width, height, count = video_properties(capture)
    writer = target = None
    with contextlib.ExitStack() as stack:
        stack.callback(capture.release)
        if args.output:
            target = _video_output(args.video_input, args.output)
            if os.path.exists(target):
                raise FileExistsError(
                    f"output file already exists: {target} (refusing to overwrite)"
                )
            # exits run last-in first-out: the writer is closed before the file is renamed
            tmp = stack.enter_context(atomic_path(target))
            writer = open_video_writer(tmp, fps, (width, height))
            stack.callback(writer.release)
        for frame in track(read_video(capture), total=count or None, enabled=writer is not None):
            vis, _ = demo.draw(frame)
            if writer is not None:
                writer.write(vis)
            elif not _show(vis):
                break
    if target is not None:
        logger.info("wrote %s (%dx%d at %.2f fps)", target, width, height, fps)


def _run_webcam(demo: _Demo) -> None:
    from ..utils.video import read_video

    if not hasattr(cv2, "imshow"):
        raise RuntimeError("--webcam needs an OpenCV build with window support")
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        raise OSError("cannot open camera 0")
    try:
        for frame in read_video(capture):
            if not _show(demo.draw(frame)[0]):
                break
    finally:
        capture.release()
        cv2.destroyAllWindows()


def main(argv: list[str] | None = None) -> int:
    from ..utils.video import open_capture

    args = build_parser().parse_args(argv)
    sources = sum(bool(x) for x in (args.input, args.video_input, args.webcam))
    if sources != 1:
        raise ValueError("give exactly one of --input, --video-input or --webcam")
    if args.webcam and args.output:
        raise ValueError("--webcam shows a window only; --output is not supported with it")
    if args.input:  # fail on bad inputs or outputs before the model is built
        inputs = expand_inputs(args.input)
        if not args.skip_bad:
            _check_images(inputs)
        if args.output:
            _image_outputs(inputs, args.output)
    if args.video_input:
        open_capture(args.video_input).release()
        if args.output and os.path.exists(_video_output(args.video_input, args.output)):
            raise FileExistsError(
                f"output file already exists: {_video_output(args.video_input, args.output)} "
                "(refusing to overwrite)"
            )
    demo = _Demo(args)
    if args.input:
        return _report_skipped(_run_images(demo, args), len(inputs))
    if args.video_input:
        _run_video(demo, args)
    else:
        _run_webcam(demo)
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
