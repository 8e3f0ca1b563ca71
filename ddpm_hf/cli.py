"""The `ddpm-hf` command line.

ddpm-hf train [options]     train a DDPM (one process; `accelerate launch -m ddpm_hf.train` for several)
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ddpm-hf` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="ddpm-hf", description="DDPM (Ho et al. 2020) for the Hugging Face ecosystem."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each command parses its own options (so that `ddpm-hf train --help` lists them).
    commands.add_parser("train", add_help=False, help="train a DDPM with Accelerate (`ddpm-hf train --help`)")
    commands.add_parser("sample", add_help=False, help="draw samples to PNG files (`ddpm-hf sample --help`)")
    commands.add_parser("figures", add_help=False, help="the paper's figures as PNG (`ddpm-hf figures --help`)")
    arguments, rest = parser.parse_known_args(argv)
    if arguments.command == "train":
        from .train import run_training

        return run_training(rest, prog="ddpm-hf train")
    if arguments.command == "figures":
        from .figures import main as figures

        return figures(rest, prog="ddpm-hf figures")
    from .sampling import main as sample

    return sample(rest, prog="ddpm-hf sample")


if __name__ == "__main__":
    sys.exit(main())
