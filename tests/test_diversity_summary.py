"""``huang2021/evaluation/diversity_summary.py``: Table 1 and Figs. 1-3 over the seeds of a merge,
from the ``diversity/`` of the parts that hold one seed's analysis."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from huang2021.evaluation.diversity_analysis import DATA_JSON, FIG1, FIG2, FIG3
from huang2021.evaluation.diversity_summary import diversity_summary_section, seed_dir


def _quartiles(median: float, mean: float) -> dict[str, float]:
    return {"mean": mean, "q1": median - 1, "median": median, "q3": median + 1, "images": 9}


def _part(root: Path, name: str, seeds: list[int], methods: dict[str, float]) -> Path:
    """A part whose results have training ``seeds`` and whose analysis measured ``methods`` (name -> E)."""
    part = root / name
    (part / "diversity").mkdir(parents=True)
    results = {f"clean/none/-/0/{method}/seed-{seed}": {"train_seed": seed} for method in methods for seed in seeds}
    (part / "results.json").write_text(json.dumps({"results": results}))
    entries = {
        method: {"test_accuracy": 0.9, "ambiguity_entropy": entropy, "discrimination_score": _quartiles(10 * entropy, 20 * entropy),
                 "gradient_angle_degrees": _quartiles(80.0 + seeds[0], 81.0), "gradcam_centre_distance": {"over_images": _quartiles(3.0, 3.5)}}
        for method, entropy in methods.items()
    }
    (part / "diversity" / DATA_JSON).write_text(json.dumps({"test_images": 10, "images_correct_for_all_methods": 9, "methods": entries}))
    for figure in (FIG1, FIG2, FIG3):
        (part / "diversity" / figure).write_bytes(f"{name} {figure}".encode())
    return part


def _row(section: str, label: str) -> list[str]:
    line = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_cells_are_mean_and_std_over_the_seeds_that_analysed_the_method(tmp_path):
    parts = [_part(tmp_path, "d0", [0], {"baseline": 0.1, "pdd": 0.3}), _part(tmp_path, "d1", [1], {"baseline": 0.2})]
    out = tmp_path / "merged"
    out.mkdir()
    section = diversity_summary_section(parts, out)
    assert _row(section, "seeds") == ["0, 1", "0"]
    expected = f"{statistics.mean([0.1, 0.2]):.3f} ± {statistics.stdev([0.1, 0.2]):.3f}"
    assert _row(section, "E, eq. 5 (Table 1)") == [expected, "0.300"]
    # L_F's median is 10 E: 1.0 and 2.0 -> 1.500 ± 0.707; the angle's median is 80 + seed.
    assert _row(section, "L_F, eq. 6: median (Fig. 2)") == ["1.500 ± 0.707", "3.000"]
    assert _row(section, "gradient angle, degrees: median (Fig. 3)") == ["80.5 ± 0.7", "80.0"]
    assert _row(section, "test accuracy %") == ["90.0 ± 0.0", "90.0"]
    # Each seed's figures are copied beside the report and linked from it.
    for seed, part in ((0, "d0"), (1, "d1")):
        assert (out / seed_dir(seed) / FIG2).read_bytes() == f"{part} {FIG2}".encode()
        assert f"]({seed_dir(seed)}/{FIG1})" in section


def test_parts_without_an_analysis_give_no_section(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert diversity_summary_section([bare], tmp_path) == ""


def test_two_analyses_of_one_seed_or_one_of_several_seeds_are_refused(tmp_path):
    twice = [_part(tmp_path, "a", [0], {"pdd": 0.1}), _part(tmp_path, "b", [0], {"pdd": 0.2})]
    with pytest.raises(ValueError, match="seed 0 is in both"):
        diversity_summary_section(twice, tmp_path)
    with pytest.raises(ValueError, match=r"one training seed, but its results have seeds \[0, 1\]"):
        diversity_summary_section([_part(tmp_path, "c", [0, 1], {"pdd": 0.1})], tmp_path)
