"""`msrdsl eval CHECKPOINT`: test loss, top-1 and top-5 of a trained network."""

from __future__ import annotations

import click

from msrdsl.cli.console import console, print_json


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--space", "space", type=click.Path(dir_okay=False), default=None,
              help="Take the test set from this space instead of the one stored with the weights.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a setting of --space, e.g. dataset.root=\"/data\".")
@click.option("--data", "data_root", type=click.Path(), default=None,
              help="Folder of the data set (replaces the dataset root).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Test batch size (default: the recipe's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(checkpoint: str, space: str | None, overrides: tuple[str, ...],
            data_root: str | None, device: str, batch: int | None, as_json: bool) -> None:
    """Score CHECKPOINT (a .pt file of a training run, or the run folder: its final.pt)."""
    from msrdsl.cli.files import overrides_error
    from msrdsl.train import evaluate_checkpoint

    if overrides and space is None:
        raise overrides_error(overrides[0])
    result = evaluate_checkpoint(checkpoint, space=space, overrides=overrides,
                                 data_root=data_root, device=device, batch=batch)
    if as_json:
        print_json(result)
        return
    epoch = result["epoch"]
    console.print(
        f"{result['checkpoint']}: {result['genotype']}"
        + (f", {result['which']} weights after epoch {epoch + 1}" if epoch is not None else "")
        + f"\n  test on {result['dataset']} ({result['test_images']} images): "
          f"top-1 {100 * result['test_acc']:.2f}%, top-5 {100 * result['test_top5']:.2f}%, "
          f"loss {result['test_loss']:.4f}", highlight=False)
