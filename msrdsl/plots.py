"""Figures of a search run, drawn with matplotlib (headless)."""

from __future__ import annotations

from pathlib import Path

from msrdsl.errors import MsrdslError


def stable_rank_series(run) -> dict[str, dict[str, list[float]]]:
    """cell type -> operator -> the mean over cells and edges of its stable rank, per epoch."""
    out: dict[str, dict[str, list[float]]] = {}
    ops = run.space.operators
    for rec in run.records:
        tables = rec.get("scores", {}).get("stable_rank(last_conv)")
        if tables is None:
            continue
        for cell_type, per_cell in tables.items():
            for o, op in enumerate(ops):
                values = [edge[o] for cell in per_cell for edge in cell]
                out.setdefault(cell_type, {}).setdefault(op, []).append(sum(values) / len(values))
    return out


def plot_run(run, output: str | Path) -> Path:
    """Losses (chosen epoch marked) and stable ranks per operator over epochs, in one figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MsrdslError("plotting needs matplotlib", hint="pip install matplotlib") from None
    records = run.records
    if not records:
        raise MsrdslError(f"{run.path} has no finished epoch to plot")
    epochs = [r["epoch"] for r in records]
    series = stable_rank_series(run)
    panels = 1 + len(series)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [r["train_loss"] for r in records], label="train loss")
    ax.plot(epochs, [r["valid_loss"] for r in records], label="valid loss")
    chosen = run.chosen_epoch()
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen epoch {chosen}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(run.space.name)
    ax.legend()
    for ax, (cell_type, per_op) in zip(axes[0][1:], sorted(series.items())):
        for op, values in per_op.items():
            ax.plot(epochs[: len(values)], values, label=op)
        ax.set_xlabel("epoch")
        ax.set_ylabel("stable rank of the last conv (mean)")
        ax.set_title(f"{cell_type} cells")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(output)
    try:
        fig.savefig(path)
    except (OSError, ValueError) as err:
        raise MsrdslError(f"cannot write {path}: {err}") from None
    finally:
        plt.close(fig)
    return path
