"""The JSON of one ``benchmarks/gpu.sh`` run as the Markdown tables of docs/performance.md ("GPU").

    python benchmarks/gpu_tables.py benchmarks/results/gpu            # prints the tables
    python benchmarks/gpu_tables.py benchmarks/results/gpu --out FILE

Reads the folder's ``stages.json`` (each stage's outcome and time; also any other stages file,
such as a rerun's saved as ``stages-rerun.json``), ``pdd_op.json`` and every ``train_step*.json`` (the harness's steps, then the user's torchvision steps, by batch size);
a file a skipped or failed stage did not write is left out, and the stages table says why. Each
training-step table has one row per step and, for each K, the median milliseconds per step,
the ratio to the baseline measured in the same run, and the memory ratio (peak allocated on
CUDA, bytes saved for backward on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def milliseconds(seconds: float) -> str:
    """Three significant figures or so: 0.123, 4.56, 45.6, 456."""
    ms = 1000 * seconds
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def machine_line(record: dict[str, Any]) -> str:
    return (
        f"{record['device']}, torch {record['torch']} (CUDA {record.get('cuda')}), Python {record['python']}, "
        f"torch on {record['cpu_threads']} of {record['cpu_cores']} CPU cores"
    )


def stages_table(record: dict[str, Any], name: str) -> list[str]:
    rows = [[stage["stage"], stage["status"], str(stage["seconds"]), stage["note"]] for stage in record["stages"]]
    total = sum(stage["seconds"] for stage in record["stages"])
    commit = f"commit {record['commit']}"
    if record["uncommitted_files"]:
        commit += f" with {record['uncommitted_files']} uncommitted files"
    return [
        f"### The run's stages (`{name}`)",
        "",
        f"{machine_line(record)}; torchvision {record['torchvision']}; {commit}; {total} s of a {record['budget_seconds']} s budget.",
        "",
        *table(["stage", "status", "seconds", "note"], rows),
    ]


def pdd_op_table(record: dict[str, Any]) -> list[str]:
    rows = []
    for row in record["rows"]:
        seconds, ratio = row["seconds_per_call"], row["ratio_to_dropout"]
        rows.append(
            [
                str(row["shape"]),
                f"{1e6 * seconds['dropout']:.1f} us",
                f"{1e6 * seconds['pdd']:.1f} us",
                f"{1e6 * seconds['pdd compiled']:.1f} us",
                f"{ratio['pdd']:.2f}",
                f"{ratio['pdd compiled']:.2f}",
                row["sync_check"],
            ]
        )
    settings = record["settings"]
    header = ["`[K, B, C]`", "dropout", "PDD eager", "PDD compiled", "PDD / dropout", "compiled / dropout", "host synchronisation"]
    return [
        "### The PDD op alone (`pdd_op.json`)",
        "",
        f"{machine_line(record)}; median of {settings['repeats']} rounds of {settings['calls']} calls.",
        "",
        *table(header, rows),
    ]


def train_step_table(record: dict[str, Any], name: str) -> list[str]:
    settings, results = record["settings"], record["results"]
    steps = list(dict.fromkeys(step for result in results for step in result["rows"]))
    memory = "peak memory x" if "cuda" in settings["memory"] else "saved memory x"
    profiled = any("profile" in row for result in results for row in result["rows"].values())
    header = ["step"]
    for result in results:
        k = result["members"]
        header += [f"K={k} ms", f"K={k} x baseline", f"K={k} {memory}"]
    header.append("penalty vs DEG (% of range)")
    if profiled:
        header.append("costliest operator (share), K=" + str(results[0]["members"]))
    rows = []
    for step in steps:
        row, deviations = [step], []
        for result in results:
            cells = result["rows"].get(step)
            if cells is None:
                row += ["", "", ""]
                continue
            row += [milliseconds(cells["seconds_per_step"]), f"{cells['ratio_to_baseline']:.2f}", f"{cells['memory_ratio_to_baseline']:.2f}"]
            if "penalty_vs_deg" in cells:
                deviations.append(f"{100 * cells['penalty_vs_deg']:.3f}")
        row.append(" / ".join(deviations))
        if profiled:
            top = results[0]["rows"].get(step, {}).get("profile") or [{}]
            row.append(f"`{top[0]['op']}` {100 * top[0]['share']:.0f} %" if top[0] else "")
        rows.append(row)
    compiled = f", members' forward compiled with {settings['compile_backend']}" if settings.get("compile_backend") else ""
    return [
        f"### One training step: {settings['members']}, batch {settings['batch_size']} (`{name}`)",
        "",
        f"{machine_line(record)}; median of {settings['rounds']} interleaved rounds after {settings['warmup']} warm-up rounds{compiled}.",
        "",
        *table(header, rows),
    ]


def tables(folder: Path) -> str:
    """Every table the folder's JSON gives, in the order of docs/performance.md."""
    records = {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
    if not records:
        raise SystemExit(f"gpu_tables.py: expected the JSON of benchmarks/gpu.sh in {folder}, but it holds no .json file")
    # stages.json, and the stages file of a rerun (--only) saved beside it under another name.
    sections = [stages_table(record, name) for name, record in records.items() if record.get("benchmark") == "gpu.sh"]
    if "pdd_op.json" in records:
        sections.append(pdd_op_table(records["pdd_op.json"]))
    steps = [(name, record) for name, record in records.items() if record.get("benchmark") == "train_step"]
    # The harness's members first, then the user's torchvision steps; each by batch size.
    steps.sort(key=lambda item: ("torchvision" in item[1]["settings"], item[1]["settings"]["batch_size"]))
    sections += [train_step_table(record, name) for name, record in steps]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the output folder of benchmarks/gpu.sh")
    parser.add_argument("--out", type=Path, default=None, help="write the tables to this file (default: print them)")
    args = parser.parse_args(argv)
    text = tables(args.folder)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
