"""Attack the ensembles of training runs like the paper does, and with stronger attacks beside it.

    PYTHONPATH=src python examples/evaluate.py runs/<run> --out-dir runs/<run>-eval
    PYTHONPATH=src python examples/evaluate.py runs/<run> runs/<authors-scaling-run> \\
        --type1-surrogate runs/<surrogate-run> --type2-surrogate runs/<surrogate-run> --limit 100

Loads every method's kept ensemble from each RUN_DIR (written by ``examples/train.py``) and
runs, on the first ``--limit`` test images: the paper protocol (Tables 2, 3, 5: FGSM, BIM,
PGD, JSMA, C&W as the authors' code runs them), the strong protocol (PGD with 100 steps and
5 restarts, AutoAttack) at the same epsilons, black-box transfer from surrogate runs
(Table 4) and a PGD epsilon sweep (Fig. 4). Each result is written as soon as its attack
finishes; a rerun with the same ``--out-dir`` skips finished attacks. The report, figures,
config and library versions go to ``--out-dir`` (see ``ed_examples/report.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from ed_examples.attacks import (
    PAPER_ATTACKS,
    PARAMETER,
    STRONG_ATTACKS,
    TRANSFER_ATTACKS,
    AttackSettings,
    craft,
    ensemble_classifier,
)
from ed_examples.data import Split
from ed_examples.diversity_analysis import MARKDOWN as DIVERSITY_MARKDOWN
from ed_examples.diversity_analysis import diversity_section
from ed_examples.methods import METHODS
from ed_examples.report import DIVERSITY_DIR, REPORT, write_report
from ed_examples.robustness import ResultStore, ensemble_correct_on, result_key, robust_result
from ed_examples.run_dir import CONFIG, create_run_dir, library_versions, load_json, save_json
from ed_examples.trained import load_trained_ensembles, run_flags, test_split
from torch import nn

SWEEPS = ("sweep", "sweep-strong")
"""Fig. 4: the paper protocol's PGD, and the strong protocol's, over doubling epsilons under L_inf and L_2."""
ATTACKS = (*PAPER_ATTACKS, *STRONG_ATTACKS, "transfer", *SWEEPS, "diversity")
"""``--attacks`` names; ``diversity`` is the paper's diversity analysis (Table 1, Figs. 1-3), no attack."""

PAPER_PARAMETERS: dict[str, dict[str, list[float]]] = {
    # Table 2 (K=3), Table 4 (transfer), whitebox_test.py (Fig. 4 sweeps).
    "fashion-mnist": {"fgsm": [0.01, 0.02], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.1, 0.2], "cw": [0.1]},
    "cifar100": {"fgsm": [0.02, 0.04], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.05, 0.1], "cw": [0.01]},
    "tiny-imagenet": {"fgsm": [0.02, 0.04], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.05, 0.1], "cw": [0.01]},
    # The paper has no digits; a grid where an undefended K=3 ensemble's accuracy falls clearly
    # (docs/evaluation.md, "The digits grid").
    "digits": {"fgsm": [0.05, 0.1, 0.2], "bim": [0.05, 0.1], "pgd": [0.05, 0.1], "jsma": [0.05, 0.1], "cw": [0.1]},
}
PAPER_SWEEPS = {"linf": [0.005 * 2**i for i in range(8)], "l2": [0.1 * 2**i for i in range(8)]}
"""The authors' sweep epsilons (whitebox_test.py): 0.005 ... 0.64 under L_inf, 0.1 ... 12.8 under L_2."""
DIGITS_SWEEPS = {"linf": [0.025 * 2**i for i in range(5)], "l2": [0.25 * 2**i for i in range(5)]}
"""digits: 0.025 ... 0.4 under L_inf, 0.25 ... 4 under L_2 (an 8x8 image's L_2 radius is 8 times its L_inf one):
from about clean accuracy to zero for a K=3 baseline (docs/evaluation.md, "The digits grid")."""
DIGITS_DEFAULTS = {"limit": 100, "cw_steps": 20, "cw_search_steps": 2, "square_queries": 1000}
"""What the digits defaults reduce so that every attack on 5 methods fits 30 minutes on 2 CPU cores."""
NEUTRAL_FLAGS = ("attacks", "device", "threads", "fgsm_eps", "bim_eps", "pgd_eps", "jsma_gamma", "cw_const", "sweep_linf", "sweep_l2")
"""Flags that choose which results to compute, not what a result means: a resumed evaluation may change them."""
AUTHORS_SCALING = " (authors' scaling)"
"""Label suffix of a PDD ensemble trained without rescaling (``--pdd-scaling authors``); plain "pdd" is inverted dropout."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="training run directories (examples/train.py) whose ensembles are the targets")
    run = parser.add_argument_group("run")
    run.add_argument("--out-dir", type=Path, default=None, help="directory for results, report, figures; an existing one is resumed (default: runs/<timestamp>-evaluate)")
    run.add_argument("--attacks", default=None, help=f"comma-separated, from {list(ATTACKS)} (default: all; 'transfer' only with a surrogate)")
    run.add_argument("--limit", type=int, default=None, metavar="N", help=f"evaluate the first N test images (default: all; digits: {DIGITS_DEFAULTS['limit']})")
    run.add_argument("--dataset", default=None, help="expected data set of every RUN_DIR (default: theirs)")
    run.add_argument("--seed", type=int, default=0, help="random starts of the attacks (default: %(default)s)")
    run.add_argument("--batch-size", type=int, default=128, help="images per attack batch; the attacks act per image, so this sets speed and memory only (default: %(default)s)")
    run.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is much faster for small models on a busy machine)")
    run.add_argument("--type1-surrogate", type=Path, default=None, metavar="RUN_DIR", help="Table 4 Type I: a run whose baseline ensemble crafts transfer attacks")
    run.add_argument("--type2-surrogate", type=Path, default=None, metavar="RUN_DIR", help="Table 4 Type II: a run whose ensemble of the target's own method crafts them")

    paper = parser.add_argument_group("paper protocol (defaults: the paper's parameters for the data set)")
    for attack, what in (("fgsm", "eps"), ("bim", "eps"), ("pgd", "eps"), ("jsma", "gamma"), ("cw", "const")):
        paper.add_argument(f"--{attack}-{what}", type=_floats, default=None, metavar="LIST", help=f"comma-separated {PARAMETER[attack]} values of {attack.upper()}")
    paper.add_argument("--steps", type=int, default=10, help="BIM and PGD iterations, step eps/10 (default: %(default)s)")
    paper.add_argument("--jsma-theta", type=float, default=0.1, help="JSMA's change per feature (default: %(default)s)")
    paper.add_argument("--cw-steps", type=int, default=None, help=f"C&W iterations per constant (default: 1000; digits: {DIGITS_DEFAULTS['cw_steps']})")
    paper.add_argument("--cw-lr", type=float, default=0.001, help="C&W learning rate (default: %(default)s, the paper; the authors' code: 0.01)")
    paper.add_argument("--cw-search-steps", type=int, default=None, help=f"C&W binary search steps on c (default: 5, the authors' code; digits: {DIGITS_DEFAULTS['cw_search_steps']})")
    paper.add_argument("--cw-confidence", type=float, default=0.01, help="C&W confidence kappa (default: %(default)s, the authors' code)")

    strong = parser.add_argument_group("strong protocol (averaged logits, true labels)")
    strong.add_argument("--strong-steps", type=int, default=100, help="PGD and APGD iterations (default: %(default)s)")
    strong.add_argument("--strong-restarts", type=int, default=5, help="PGD random restarts (default: %(default)s)")
    strong.add_argument("--autoattack-targets", type=int, default=9, help="AutoAttack's APGD-T target classes, those with the highest clean logits (default: %(default)s, the standard version)")
    strong.add_argument("--square-queries", type=int, default=None, help=f"Square attack queries (default: 5000, standard AutoAttack; digits: {DIGITS_DEFAULTS['square_queries']})")

    sweep = parser.add_argument_group("epsilon sweep (Fig. 4)")
    sweep.add_argument("--sweep-linf", type=_floats, default=None, metavar="LIST", help="L_inf epsilons (default: the authors' 0.005 ... 0.64; digits: 0.025 ... 0.4)")
    sweep.add_argument("--sweep-l2", type=_floats, default=None, metavar="LIST", help="L_2 epsilons (default: the authors' 0.1 ... 12.8; digits: 0.25 ... 4)")
    return parser


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, but got {text!r}") from None


class Target(NamedTuple):
    """One attacked ensemble."""

    method: str
    """The training method (a key of ``METHODS``)."""
    run_dir: Path
    members: nn.ModuleList


def parse_flags(argv: list[str]) -> tuple[dict[str, Any], dict[str, Target], dict[str, Any]]:
    """Resolved flags, the targets by label, and the first run's training flags; errors name the flag."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    try:
        targets, train_flags = _load_targets(flags)
        _resolve_defaults(flags, train_flags["dataset"])
        _check_flags(flags)
    except ValueError as error:
        parser.error(str(error))
    return flags, targets, train_flags


def _load_targets(flags: dict[str, Any]) -> tuple[dict[str, Target], dict[str, Any]]:
    """Every RUN_DIR's ensembles, labelled by method (PDD methods trained with ``--pdd-scaling authors``: ``AUTHORS_SCALING`` appended)."""
    targets: dict[str, Target] = {}
    first: dict[str, Any] | None = None
    for run_dir in flags["run_dirs"]:
        train_flags = _checked_run(run_dir, "RUN_DIR", flags["dataset"])
        if first is None:
            first = train_flags
        elif (train_flags["dataset"], train_flags["seed"]) != (first["dataset"], first["seed"]):
            raise ValueError(
                f"Expected every RUN_DIR to share the data set and --seed (one test split), but {str(run_dir)!r} has "
                f"{train_flags['dataset']!r} seed {train_flags['seed']} and the first has {first['dataset']!r} seed {first['seed']}"
            )
        for method, members in _checked_ensembles(run_dir, "RUN_DIR").items():
            label = method + (AUTHORS_SCALING if METHODS[method].pdd and train_flags["pdd_scaling"] == "authors" else "")
            if label in targets:
                label = f"{label}@{run_dir.name}"
            targets[label] = Target(method, run_dir, members)
    for flag in ("type1_surrogate", "type2_surrogate"):
        if flags[flag] is not None:
            _checked_run(flags[flag], f"--{flag.replace('_', '-')}", first["dataset"])
    return targets, first


def _checked_run(run_dir: Path, flag: str, dataset: str | None) -> dict[str, Any]:
    try:
        train_flags = run_flags(run_dir)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None
    if dataset is not None and train_flags["dataset"] != dataset:
        raise ValueError(f"Expected {flag} {str(run_dir)!r} to be trained on --dataset {dataset!r}, but it was trained on {train_flags['dataset']!r}")
    return train_flags


def _checked_ensembles(run_dir: Path, flag: str) -> dict[str, nn.ModuleList]:
    try:
        return load_trained_ensembles(run_dir)
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def _resolve_defaults(flags: dict[str, Any], dataset: str) -> None:
    """Fill the parameters left out with the paper's for ``dataset`` (a documented grid for digits)."""
    flags["dataset"] = dataset
    digits = dataset == "digits"
    for key, digits_value, value in (
        ("limit", DIGITS_DEFAULTS["limit"], None),
        ("cw_steps", DIGITS_DEFAULTS["cw_steps"], 1000),
        ("cw_search_steps", DIGITS_DEFAULTS["cw_search_steps"], 5),
        ("square_queries", DIGITS_DEFAULTS["square_queries"], 5000),
    ):
        if flags[key] is None:
            flags[key] = digits_value if digits else value
    sweeps = DIGITS_SWEEPS if digits else PAPER_SWEEPS
    for norm in ("linf", "l2"):
        if flags[f"sweep_{norm}"] is None:
            flags[f"sweep_{norm}"] = sweeps[norm]
    for attack, key in (("fgsm", "fgsm_eps"), ("bim", "bim_eps"), ("pgd", "pgd_eps"), ("jsma", "jsma_gamma"), ("cw", "cw_const")):
        if flags[key] is None:
            if dataset not in PAPER_PARAMETERS:
                raise ValueError(f"The paper gives no parameters for data set {dataset!r}: give --{key.replace('_', '-')}")
            flags[key] = PAPER_PARAMETERS[dataset][attack]


def _check_flags(flags: dict[str, Any]) -> None:
    if flags["attacks"] is None:
        surrogate = flags["type1_surrogate"] is not None or flags["type2_surrogate"] is not None
        flags["attacks"] = ",".join(name for name in ATTACKS if name != "transfer" or surrogate)
    names = [name.strip() for name in flags["attacks"].split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTACKS]
    if not names or unknown:
        raise ValueError(f"Expected --attacks to be a comma-separated list of {list(ATTACKS)}, but got {flags['attacks']!r} (unknown: {unknown})")
    flags["attacks"] = ",".join(names)
    for key in ("fgsm_eps", "bim_eps", "pgd_eps", "jsma_gamma", "sweep_linf"):
        bad = [value for value in flags[key] if not 0.0 <= value <= 1.0]
        if bad:
            raise ValueError(f"Expected --{key.replace('_', '-')} to hold values in [0, 1] (pixels lie in [0, 1]), but got {bad}")
    bad = [value for value in flags["sweep_l2"] + flags["cw_const"] if value <= 0.0]
    if bad:
        raise ValueError(f"Expected --sweep-l2 and --cw-const to hold positive values, but got {bad}")
    for key in ("threads", "limit", "batch_size", "steps", "cw_steps", "cw_search_steps", "strong_steps", "strong_restarts", "autoattack_targets", "square_queries"):
        if flags[key] is not None and flags[key] < 1:
            raise ValueError(f"Expected --{key.replace('_', '-')} to be >= 1, but got {flags[key]}")
    if flags["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("Expected --device cuda to find a CUDA device, but torch.cuda.is_available() is False; use --device cpu")
    if "transfer" in names and flags["type1_surrogate"] is None and flags["type2_surrogate"] is None:
        raise ValueError("--attacks includes 'transfer', which needs --type1-surrogate or --type2-surrogate (or leave 'transfer' out of --attacks)")


def settings_of(flags: dict[str, Any]) -> AttackSettings:
    """The attack settings from the flags of the same names."""
    return AttackSettings(**{field.name: flags[field.name] for field in fields(AttackSettings)})


def _stored_flags(flags: dict[str, Any]) -> dict[str, Any]:
    return {key: ([str(p) for p in value] if key == "run_dirs" else str(value) if isinstance(value, Path) else value) for key, value in flags.items()}


def open_out_dir(flags: dict[str, Any], argv: list[str], parser: argparse.ArgumentParser) -> Path:
    """The evaluation directory: a new one with ``config.json``, or an earlier one whose results-defining flags match."""
    if flags["out_dir"] is None:
        flags["out_dir"] = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-evaluate"
    out_dir = flags["out_dir"]
    stored = _stored_flags(flags)
    if (out_dir / CONFIG).exists():
        earlier = load_json(out_dir / CONFIG)
        differing = [key for key in stored if key not in NEUTRAL_FLAGS and earlier["flags"].get(key) != stored[key]]
        if differing:
            detail = "; ".join(f"--{key.replace('_', '-')} is {earlier['flags'].get(key)!r} there, {stored[key]!r} here" for key in differing)
            parser.error(f"--out-dir: {str(out_dir)!r} holds an evaluation with other flags ({detail}); pick another --out-dir")
        earlier.setdefault("sessions", []).append({"argv": argv, "versions": versions()})
        save_json(out_dir / CONFIG, earlier)
        return out_dir
    try:
        create_run_dir(out_dir)
    except ValueError as error:
        parser.error(f"--out-dir: {error}")
    save_json(out_dir / CONFIG, {"flags": stored, "argv": argv, "versions": versions(), "sessions": []})
    return out_dir


def versions() -> dict[str, str]:
    """:func:`library_versions` plus the attack and plotting libraries."""
    import art
    import matplotlib

    return {**library_versions(), "adversarial-robustness-toolbox": art.__version__, "matplotlib": matplotlib.__version__}


class Evaluation:
    """One evaluation session: the test images, the targets' clean predictions, the results store."""

    def __init__(self, flags: dict[str, Any], targets: dict[str, Target], train_flags: dict[str, Any], out_dir: Path) -> None:
        self.flags = flags
        self.settings = settings_of(flags)
        self.device = torch.device(flags["device"])
        self.targets = {label: target._replace(members=target.members.to(self.device)) for label, target in targets.items()}
        test = test_split(train_flags, self.device)
        self.images, self.labels = test.images[: flags["limit"]], test.labels[: flags["limit"]]
        self.clean = {label: ensemble_correct_on(target.members, self.images, self.labels) for label, target in self.targets.items()}
        self.store = ResultStore(out_dir)
        for label, correct in self.clean.items():
            key = result_key("clean", "none", "-", 0.0, label)
            if key not in self.store:
                self.store.add(robust_result(correct, correct, key=key, protocol="clean", attack="none", norm="-", parameter="-", value=0.0, method=label, run_dir=str(self.targets[label].run_dir), surrogate=None, model_output="averaged probabilities", labels="-", seconds=0.0))
        self.attacks = flags["attacks"].split(",")

    def run(self) -> None:
        for attack in PAPER_ATTACKS:
            if attack in self.attacks:
                norm = "0" if attack == "jsma" else "2" if attack == "cw" else "inf"
                for value in self.flags[_value_flag(attack)]:
                    self._white_box("paper", attack, norm, value)
        for attack in STRONG_ATTACKS:
            if attack in self.attacks:
                for value in self._strong_epsilons():
                    self._white_box("strong", attack, "inf", value)
        if "transfer" in self.attacks:
            self._transfer()
        for sweep in SWEEPS:
            if sweep in self.attacks:
                protocol, attack = ("paper", "pgd") if sweep == "sweep" else ("strong", "pgd-strong")
                for norm, key in (("inf", "sweep_linf"), ("2", "sweep_l2")):
                    for value in self.flags[key]:
                        self._white_box(protocol, attack, norm, value)
        if "diversity" in self.attacks:
            self._diversity()

    def _diversity(self) -> None:
        """Table 1 and Figs. 1-3 on the evaluated test images, into ``diversity/`` (skipped when done)."""
        out = self.store.out_dir / DIVERSITY_DIR
        if (out / DIVERSITY_MARKDOWN).exists():
            return
        members = {label: target.members for label, target in self.targets.items()}
        diversity_section(
            members, Split(self.images, self.labels), out, batch_size=self.flags["batch_size"], markdown_dir=self.store.out_dir
        )

    def _strong_epsilons(self) -> list[float]:
        """The L_inf epsilons of the paper protocol's FGSM, BIM and PGD."""
        return sorted(set(self.flags["fgsm_eps"]) | set(self.flags["bim_eps"]) | set(self.flags["pgd_eps"]))

    def _white_box(self, protocol: str, attack: str, norm: str, value: float) -> None:
        for label, target in self.targets.items():
            key = result_key(protocol, attack, norm, value, label)
            if key in self.store:
                continue
            output = "probabilities" if protocol == "paper" else "logits"
            classifier = ensemble_classifier(target.members, output, tuple(self.images.shape[1:]), self.device)
            true_labels = protocol == "strong"
            start = time.perf_counter()
            adversarial = self._craft(key, attack, value, classifier, norm, true_labels)
            self._record(key, label, adversarial, start, protocol=protocol, attack=attack, norm=norm, value=value, output=output, true_labels=true_labels, surrogate=None)

    def _transfer(self) -> None:
        """Table 4: craft on a surrogate with the paper protocol, measure on every target."""
        kinds = (("transfer-I", self.flags["type1_surrogate"]), ("transfer-II", self.flags["type2_surrogate"]))
        for protocol, run_dir in kinds:
            if run_dir is None:
                continue
            surrogates = _checked_ensembles(run_dir, f"--{'type1' if protocol == 'transfer-I' else 'type2'}-surrogate")
            for attack in TRANSFER_ATTACKS:
                norm = "0" if attack == "jsma" else "inf"
                for value in self.flags[_value_flag(attack)]:
                    self._transfer_attack(protocol, run_dir, surrogates, attack, norm, value)

    def _transfer_attack(self, protocol: str, run_dir: Path, surrogates: dict[str, nn.ModuleList], attack: str, norm: str, value: float) -> None:
        crafted: dict[str, np.ndarray] = {}
        for label, target in self.targets.items():
            # Type I: always the surrogate run's baseline; Type II: its ensemble of the target's own method.
            source = "baseline" if protocol == "transfer-I" else target.method
            if source not in surrogates:
                continue
            surrogate = f"{run_dir.name}:{source}"
            key = result_key(protocol, attack, norm, value, label, surrogate)
            if key in self.store:
                continue
            start = time.perf_counter()
            if source not in crafted:
                classifier = ensemble_classifier(surrogates[source].to(self.device), "probabilities", tuple(self.images.shape[1:]), self.device)
                crafted[source] = self._craft(key, attack, value, classifier, norm, true_labels=False)
            self._record(key, label, crafted[source], start, protocol=protocol, attack=attack, norm=norm, value=value, output="probabilities", true_labels=False, surrogate=surrogate)

    def _craft(self, key: str, attack: str, value: float, classifier: Any, norm: str, true_labels: bool) -> np.ndarray:
        """Adversarial images for all evaluated images, batch by batch under a progress bar."""
        # A seed per result, so a resumed evaluation draws the same random starts as an uninterrupted one.
        seed = zlib.crc32(key.encode()) ^ self.flags["seed"]
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        images = self.images.cpu().numpy()
        labels = self.labels.cpu().numpy()
        parts = []
        for batch in _progress(key, len(images), self.settings.batch_size):
            parts.append(craft(attack, value, classifier, images[batch], labels[batch] if true_labels else None, self.settings, norm=_art_norm(norm)))
        return np.concatenate(parts)

    def _record(self, key: str, label: str, adversarial: np.ndarray, start: float, *, protocol: str, attack: str, norm: str, value: float, output: str, true_labels: bool, surrogate: str | None) -> None:
        target = self.targets[label]
        adversarial_correct = ensemble_correct_on(target.members, torch.from_numpy(adversarial).to(self.device), self.labels)
        result = robust_result(
            self.clean[label],
            adversarial_correct,
            key=key,
            protocol=protocol,
            attack=attack,
            norm=norm,
            parameter=PARAMETER[attack],
            value=value,
            method=label,
            run_dir=str(target.run_dir),
            surrogate=surrogate,
            model_output=f"averaged {output}",
            labels="true labels" if true_labels else "model predictions",
            seconds=time.perf_counter() - start,
            settings=self.settings.as_dict(),
            seed=self.flags["seed"],
        )
        self.store.add(result)


def _value_flag(attack: str) -> str:
    return {"fgsm": "fgsm_eps", "bim": "bim_eps", "pgd": "pgd_eps", "jsma": "jsma_gamma", "cw": "cw_const"}[attack]


def _art_norm(norm: str) -> float:
    return np.inf if norm in ("inf", "0") else float(norm)


def _progress(key: str, total: int, batch_size: int) -> Iterator[slice]:
    """Batches of ``batch_size`` images, with a tqdm bar over images when tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(total=total, desc=key, unit="img") if tqdm is not None else None
    try:
        for start in range(0, total, batch_size):
            yield slice(start, start + batch_size)
            if bar is not None:
                bar.update(min(batch_size, total - start))
    finally:
        if bar is not None:
            bar.close()


def main(argv: list[str] | None = None) -> Path:
    """Run the command; returns the evaluation directory."""
    argv = sys.argv[1:] if argv is None else argv
    flags, targets, train_flags = parse_flags(argv)
    out_dir = open_out_dir(flags, argv, build_parser())
    print(f"evaluation directory: {out_dir}; targets: {list(targets)}; {flags['limit'] or 'all'} test images")
    threads = torch.get_num_threads()
    if flags["threads"] is not None:
        torch.set_num_threads(flags["threads"])
    try:
        evaluation = Evaluation(flags, targets, train_flags, out_dir)
        try:
            evaluation.run()
        finally:
            # Also after a failed attack: the report shows what finished.
            write_report(out_dir, evaluation.store.results, load_json(out_dir / CONFIG))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished attacks are in {out_dir}; rerun the same command to continue")
        raise SystemExit(130) from None
    finally:
        torch.set_num_threads(threads)
    print(f"report: {out_dir / REPORT}")
    return out_dir


if __name__ == "__main__":
    main()
