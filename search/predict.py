"""Classify image files with a deployed karumi model: ONNX Runtime, numpy and Pillow only.

    python -m search.predict RUN/best/ IMAGE [IMAGE ...] [--top K]
    python RUN/best/predict.py IMAGE [IMAGE ...]          # the same file, copied beside the model

The folder holds ``model.onnx`` and ``preprocess.json`` (written by ``python -m search``). Each image is read
with Pillow, converted to RGB (or grey), resized to the trained size (bilinear), scaled to [0, 1] and laid
out NCHW as ``preprocess.json`` says; the model standardises it inside its graph. Prints, per image, the
most probable classes with their probabilities.

This file imports nothing of karumi (and never torch), so it runs on any machine with
``pip install onnxruntime pillow numpy``; the run writes a copy of it into ``best/``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Sequence

__all__ = ["Classifier", "load_image", "main"]

#: The ``preprocess.json`` layout this reader understands.
FORMAT_VERSION = 1


def load_image(path: str | pathlib.Path, contract: dict[str, Any]) -> Any:
    """One image as the model takes it: float32 (C, H, W) in [0, 1] (numpy), per the preprocess contract."""
    import numpy as np
    from PIL import Image

    height, width = contract["input_size"]
    mode = "L" if int(contract["channels"]) == 1 else "RGB"
    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (width, height):
            im = im.resize((width, height), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean, std = contract.get("mean") or [], contract.get("std") or []
    if mean:  # an older export without the standardisation in its graph
        arr = (arr - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    return np.ascontiguousarray(arr)


class Classifier:
    """``model.onnx`` and ``preprocess.json`` of a folder, ready to classify images (one ONNX Runtime session)."""

    def __init__(self, folder: str | pathlib.Path, *, model: str = "model.onnx", threads: int = 1) -> None:
        import onnxruntime as ort

        folder = pathlib.Path(folder)
        contract_path, model_path = folder / "preprocess.json", folder / model
        for p in (contract_path, model_path):
            if not p.is_file():
                raise ValueError(f"{folder} has no {p.name}: give the best/ folder of a karumi run")
        self.contract = json.loads(contract_path.read_text(encoding="utf-8"))
        if self.contract.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{contract_path}: format_version={self.contract.get('format_version')!r} is not "
                             f"supported; allowed: {FORMAT_VERSION}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.classes = list(self.contract.get("classes") or [])

    def probabilities(self, images: Any) -> Any:
        """Class probabilities (N, classes) of a batch (N, C, H, W) of images in [0, 1]."""
        import numpy as np

        logits = self.session.run(None, {self.input_name: np.asarray(images, dtype=np.float32)})[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def classify(self, paths: Sequence[str | pathlib.Path], *, top: int = 3,
                 batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """For each image file, its ``top`` (class name, probability) pairs, most probable first."""
        import numpy as np

        out = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            probs = self.probabilities(np.stack([load_image(p, self.contract) for p in chunk]))
            for row in probs:
                order = np.argsort(-row)[:top]
                out.append([(self._name(int(i)), float(row[i])) for i in order])
        return out

    def _name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)


def main(argv: Sequence[str] | None = None, *, folder: str | pathlib.Path | None = None) -> int:
    """The command line; ``folder`` given: the images are the only arguments (the copy in ``best/``)."""
    ap = argparse.ArgumentParser(prog="python -m search.predict" if folder is None else "python predict.py",
                                 description="Classify image files with a karumi model (ONNX Runtime only).")
    if folder is None:
        ap.add_argument("folder", help="the best/ folder of a run (model.onnx, preprocess.json)")
    ap.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    ap.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    ap.add_argument("--model", default="model.onnx", help="the ONNX file in the folder (default model.onnx)")
    args = ap.parse_args(argv)
    try:
        clf = Classifier(folder if folder is not None else args.folder, model=args.model)
        missing = [p for p in args.images if not pathlib.Path(p).is_file()]
        if missing:
            raise ValueError(f"image {missing[0]!r} does not exist")
        results = clf.classify(args.images, top=max(1, args.top))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, best in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in best))
    return 0


if __name__ == "__main__":
    here = pathlib.Path(__file__).resolve().parent
    # run as best/predict.py (its folder holds the model) or as python -m search.predict FOLDER ...
    sys.exit(main(folder=here if (here / "preprocess.json").is_file() else None))
