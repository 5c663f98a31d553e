"""What every benchmark script shares: the machine line of its table, and writing the table."""

import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# `python benchmarks/bench_x.py` puts only benchmarks/ on the path; the scripts import fer_hf from the repo.
sys.path.insert(0, str(ROOT))


def machine() -> str:
    """Date, CPU model, torch threads and version: the conditions a table's figures hold for."""
    from fer_hf.inference import cpu_name  # after the path line above

    return f"Date: {date.today()}; machine: {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}"


def write_table(path: str | Path, lines: list[str]) -> None:
    """Writes a results table (markdown lines) and prints it."""
    text = "\n".join([*lines, ""])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)
    print(f"wrote {path}")
