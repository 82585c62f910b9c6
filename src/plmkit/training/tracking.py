"""Where training metrics go: a JSONL file (one record per log or evaluation), TensorBoard, and a loss-curve PNG."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends `{"step": .., "split": "train"|"eval", ...}` records to `<output_dir>/metrics.jsonl` and TensorBoard.

    On resume from step s, records after s (written by the interrupted run past its last checkpoint) are
    dropped first, so the file reads as one uninterrupted run.
    """

    def __init__(self, output_dir: str | Path, *, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / METRICS_FILE
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            self._truncate(resume_step)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.dir / "tensorboard"), purge_step=resume_step)
            except ImportError:  # tensorboard is a dependency, but a stripped environment can still train
                log.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def _truncate(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        record = {"step": step, "split": split, **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if split is None or r["split"] == split]


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path, title: str = "") -> Path | None:
    """Training loss (and evaluation loss, where logged) against step, as a PNG. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in read_metrics(metrics_path, "train") if "loss" in r]
    evals = read_metrics(metrics_path, "eval")
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    eval_key = next((k for k in ("loss", "mlm_loss") if evals and k in evals[0]), None)
    if eval_key:
        ax.plot([r["step"] for r in evals], [r[eval_key] for r in evals], "o-", label=f"eval {eval_key}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)
