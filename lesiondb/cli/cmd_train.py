"""``lesiondb train COHORT``: train the lesion encoder on a cohort folder with images."""
from __future__ import annotations

import json
import shlex

import click

from ..embedding.training import train_encoder
from .common import emit, handle_errors, pass_app


@click.command("train")
@click.argument("cohort", type=click.Path(exists=True, file_okay=False))
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Training config JSON (keys of lesiondb.nn.train.TrainConfig); options below override it.")
@click.option("--encoder", help="Encoder name from the registry (resnet18_ms, vgg16_ms).")
@click.option("--epochs", type=click.IntRange(1), help="Number of epochs.")
@click.option("--seed", type=int, help="Random seed (weights init, sampling, augmentation).")
@click.option("--deterministic", is_flag=True, default=None,
              help="Enforce torch deterministic algorithms: same seed → identical weights.")
@click.option("--labels", type=click.Choice(["labels", "pseudo"]),
              help="Types from the cohort's labels, or pseudo-labels for unlabelled lesions.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt (same config and seed).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="lesiondb-model", show_default=True,
              help="Folder for checkpoint.pt, model.pt and the model card.")
@click.option("--val-cohort", type=click.Path(exists=True, file_okay=False),
              help="A held-out cohort (other seed): its metrics vs the baselines go into the model card.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="[default: auto]")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, cohort, config_file, encoder, epochs, seed, deterministic, labels, resume, out_dir,
            val_cohort, device, threads, as_json) -> None:
    """Train the multi-scale triplet encoder on COHORT (sequential sampling, Yan et al. 2018).

    Writes OUT/model.pt (weights + config), OUT/model_card.json and OUT/MODEL_CARD.md (data,
    config, seed, metrics and the exact command), and OUT/checkpoint.pt after every epoch.

    \b
    Example:
      lesiondb synth cohort-train --patients 60 --seed 11
      lesiondb train cohort-train --epochs 12 --seed 0 --deterministic --out my-model
      lesiondb eval embedding cohort-test --model my-model --json
    """
    overrides = {"encoder": encoder, "epochs": epochs, "seed": seed, "deterministic": deterministic,
                 "labels": labels, "device": device, "num_threads": threads}
    command_line = _command_line(cohort, config_file, encoder, epochs, seed, deterministic, labels, out_dir,
                                 val_cohort, device, threads)
    res = train_encoder(cohort, out_dir, {k: v for k, v in overrides.items() if v is not None},
                        config_file=config_file, val_cohort=val_cohort, resume=resume, cache_dir=app.patch_cache,
                        command=command_line, progress=app.progress, show_epochs=app.show_progress)
    for p in res.problems:
        click.echo(f"skipped: {p}", err=True)
    emit(res, as_json, _text)


def _command_line(cohort, config_file, encoder, epochs, seed, deterministic, labels, out_dir, val_cohort,
                  device, threads) -> str:
    """The command as given (options in a canonical order), for the model card."""
    parts = ["lesiondb", "train", str(cohort)]
    for flag, v in (("--config", config_file), ("--encoder", encoder), ("--epochs", epochs), ("--seed", seed),
                    ("--labels", labels), ("--out", out_dir), ("--val-cohort", val_cohort),
                    ("--device", device), ("--threads", threads)):
        if v is not None:
            parts += [flag, str(v)]
    if deterministic:
        parts.append("--deterministic")
    return shlex.join(parts)


def _text(s: dict) -> str:
    lines = [f"model {s['model_id']} → {s['out']}",
             f"{s['lesions']} lesions ({s['skipped']} skipped), {s['epochs']} epochs in {s['seconds']} s "
             f"on {s['device']}, final loss {s['final_loss']:.4f}"]
    if s.get("metrics"):
        lines.append(json.dumps(s["metrics"], indent=2))
    return "\n".join(lines)
