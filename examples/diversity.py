"""The paper's diversity analysis (Table 1, Figs. 1-3) of the ensembles of a training run.

    PYTHONPATH=src python examples/diversity.py runs/<run>                 # writes runs/<run>/diversity/
    PYTHONPATH=src python examples/diversity.py runs/<run> --out report --threshold 1.0

Loads every kept model (``model-<method>.pt``) of a run directory written by
``examples/train.py``, rebuilds its test split from the run's seed, and writes
``ed_examples.diversity_analysis.diversity_section``'s data, figures and Markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ed_examples.diversity_analysis import diversity_section
from ed_examples.gradcam import DEFAULT_THRESHOLD
from ed_examples.run_dir import library_versions, save_json
from ed_examples.trained import load_trained_ensembles, run_flags, test_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory of examples/train.py")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: RUN_DIR/diversity)")
    parser.add_argument("--image-index", type=int, default=None, help="test image of Fig. 1 (default: the first one every method classifies correctly)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="hottest Grad-CAM region: pixels >= this fraction of the map's maximum; 1.0 = argmax (default: %(default)s, the paper's)")
    parser.add_argument("--batch-size", type=int, default=None, help="test images per pass (default: all at once)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run the command; returns the output directory."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"Expected --batch-size to be >= 1, but got {args.batch_size}")
    if not 0.0 < args.threshold <= 1.0:
        parser.error(f"Expected --threshold to be in (0, 1] (a fraction of the map's maximum), but got {args.threshold}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("Expected --device cuda to find a CUDA device, but torch.cuda.is_available() is False; use --device cpu")
    device = torch.device(args.device)
    try:
        ensembles = {name: members.to(device) for name, members in load_trained_ensembles(args.run_dir).items()}
        flags = run_flags(args.run_dir)
        test = test_split(flags, device)
    except ValueError as error:
        parser.error(f"RUN_DIR: {error}")
    if args.image_index is not None and not 0 <= args.image_index < len(test.labels):
        parser.error(f"Expected --image-index to be in [0, {len(test.labels)}) (a test image), but got {args.image_index}")

    out = args.out if args.out is not None else args.run_dir / "diversity"
    section = diversity_section(ensembles, test, out, image_index=args.image_index, threshold=args.threshold, batch_size=args.batch_size)
    save_json(out / "command.json", {"argv": argv, "run_dir": str(args.run_dir), "seed": flags["seed"], "versions": library_versions()})
    print(section.markdown)
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
