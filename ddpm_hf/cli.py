"""The `ddpm-hf` command line.

    ddpm-hf train [options]       train a DDPM (one process; `accelerate launch -m ddpm_hf.train` for several)
    ddpm-hf sample PIPELINE ...   draw N samples to PNG files (`accelerate launch -m ddpm_hf.sampling`)
    ddpm-hf evaluate PIPELINE ... FID, IS and NLL in bits/dim, and the figures (`accelerate launch -m ddpm_hf.evaluate`)
    ddpm-hf figures PIPELINE ...  the paper's figures as PNG files
    ddpm-hf push FOLDER --repo-id user/name ...  push a pipeline and its model card to the Hugging Face Hub

Each command parses its own options: `ddpm-hf COMMAND --help` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command: (module, function called as function(argv, prog=...) returning the exit status, help)
COMMANDS = {
    "train": ("ddpm_hf.train", "run_training", "train a DDPM with Accelerate"),
    "sample": ("ddpm_hf.sampling", "main", "draw samples to PNG files"),
    "evaluate": ("ddpm_hf.evaluate", "main", "FID, Inception Score and NLL in bits/dim, and the figures"),
    "figures": ("ddpm_hf.figures", "main", "the paper's figures as PNG files"),
    "push": ("ddpm_hf.hub", "main", "push a trained pipeline with its model card to the Hugging Face Hub"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ddpm-hf` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="ddpm-hf", description="DDPM (Ho et al. 2020) for the Hugging Face ecosystem."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        commands.add_parser(name, add_help=False, help=f"{help_text} (`ddpm-hf {name} --help`)")
    arguments, rest = parser.parse_known_args(argv)
    module, function, _ = COMMANDS[arguments.command]
    return getattr(importlib.import_module(module), function)(rest, prog=f"ddpm-hf {arguments.command}")


if __name__ == "__main__":
    sys.exit(main())
