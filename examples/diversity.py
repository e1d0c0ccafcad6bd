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
from ed_examples.data import NUM_CLASSES, digits_splits
from ed_examples.diversity_analysis import diversity_section
from ed_examples.gradcam import DEFAULT_THRESHOLD
from ed_examples.members import build_members
from ed_examples.methods import parse_methods
from ed_examples.run_dir import CONFIG, library_versions, load_json, load_torch, model_path, save_json
from torch import nn

from ensemble_diversity.ensemble import Ensemble


def load_ensembles(run_dir: Path, device: torch.device) -> dict[str, nn.ModuleList]:
    """Method name -> its kept members (eval mode, on ``device``), in the run's ``--methods`` order."""
    if not (run_dir / CONFIG).exists():
        raise ValueError(f"Expected RUN_DIR to be a run directory of examples/train.py, but {str(run_dir)!r} has no {CONFIG}")
    flags = load_json(run_dir / CONFIG)["flags"]
    ensembles = {}
    for name in parse_methods(flags["methods"]):
        path = model_path(run_dir, name)
        if not path.exists():
            raise ValueError(
                f"Expected RUN_DIR to hold the kept model of every method it trains, but {str(path)!r} is missing; "
                f"finish the run first (python examples/train.py --resume {run_dir})"
            )
        saved = load_torch(path)
        members = build_members(saved["members"], saved["width"], NUM_CLASSES)
        Ensemble(members).load_state_dict(saved["ensemble"])
        ensembles[name] = members.to(device).eval()
    return ensembles


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
        ensembles = load_ensembles(args.run_dir, device)
    except ValueError as error:
        parser.error(str(error))
    flags = load_json(args.run_dir / CONFIG)["flags"]
    if flags["dataset"] != "digits":
        parser.error(f"Expected RUN_DIR to be a run on digits (the only data set of this version), but it trained on {flags['dataset']!r}")
    test = digits_splits(flags["seed"], device).test
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
