"""Bits/dim: the time of `ddpm_hf.variational_bound` against the same number of bare UNet calls, measured in one run.

    python benchmarks/bits_per_dim.py                                          # CPU: ddpm-tiny, batch 8, T = 250
    python benchmarks/bits_per_dim.py --preset ddpm-cifar10 --batch-size 256 --num-train-timesteps 1000   # GPU

The bound of a batch (eq. 5) makes one network call per timestep, T in all, and around each one draws x_t ~ q(x_t |
x_0) and evaluates one term in float64: the KL L_{t−1} for t > 0, the discretized decoder L_0 (eq. 13) at t = 0 only,
and the prior L_T once. Its overhead is what it costs beyond T calls of the bare network on a batch of the same shape,
`unet(x, t).sample` (target: under 3% for ddpm-tiny at batch 8). A third loop runs the bound with a stand-in network
that returns a fixed output, which times the bound's own arithmetic alone.

The three are timed interleaved (bare, bound, bound's arithmetic; `--repeats` rounds, after one untimed warm-up round)
so that the machine's drift spreads over all three; the minimum and the median of each are reported, and the
overhead from both, in wall time and in this process's CPU time, and as the median of each round's ratio. On the CPU
the bound's own network calls are timed too: its CPU time beyond them, within each run, is the measure that the
machine's drift from run to run (other processes, clock speed) does not reach. The noise is drawn as `ddpm-hf
evaluate` draws it, one generator per image (`--one-generator`: one for the batch). Prints a table and writes JSON
(`--output`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from common import record_header, synchronize, write_record

import ddpm_hf


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """The wall time of one call, the GPU's queued work included, and this process's CPU time during it (on a shared
    CPU the wall time also counts the other processes' turns; with one thread the CPU time does not)."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def statistics_of(times: list[float]) -> dict[str, float | list[float]]:
    return {"min_s": min(times), "median_s": statistics.median(times), "times_s": times}


class CountedUNet:
    """The network, with the CPU time of its calls added up (on the CPU: a GPU's time would need a synchronisation
    per call, which the bound does not make)."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.unet, self.dtype, self.measure = unet, unet.dtype, device.type == "cpu"
        self.seconds = 0.0

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor):
        start = time.process_time()
        output = self.unet(sample, timestep)
        self.seconds += time.process_time() - start
        return output


class FixedOutput:
    """A stand-in network that returns one fixed output: the bound's arithmetic without the network."""

    dtype = torch.float32

    def __init__(self, output: torch.Tensor):
        self.output = output

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=self.output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ddpm-tiny", choices=sorted(ddpm_hf.PRESETS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-train-timesteps", type=int, default=250, help="T: network calls per bound")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--one-generator", action="store_true", help="one generator for the batch, not one per image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bits_per_dim.json"))
    arguments = parser.parse_args()

    device = torch.device(arguments.device)
    torch.manual_seed(0)
    unet = ddpm_hf.create_unet(arguments.preset).to(device).eval()
    scheduler = ddpm_hf.DDPMScheduler(num_train_timesteps=arguments.num_train_timesteps)
    B, T = arguments.batch_size, arguments.num_train_timesteps
    shape = (B, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    levels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0))
    images = (levels / 127.5 - 1).to(device)  # x_0 on the 8-bit grid

    def generators():
        if arguments.one_generator:
            return torch.Generator(device).manual_seed(0)
        return [torch.Generator(device).manual_seed(i) for i in range(B)]

    @torch.no_grad()
    def bare() -> None:  # T network calls on a batch of the bound's shape, as the bound makes them
        for t in range(T - 1, -1, -1):
            _ = unet(images, torch.full((B,), t, dtype=torch.long, device=device)).sample

    fixed = FixedOutput(torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device))
    counted = CountedUNet(unet, device)
    loops = {
        "bare UNet calls": bare,
        "variational_bound": lambda: ddpm_hf.variational_bound(counted, scheduler, images, generators()),
        "bound's arithmetic": lambda: ddpm_hf.variational_bound(fixed, scheduler, images, generators()),
    }
    wall, cpu, in_run = {name: [] for name in loops}, {name: [] for name in loops}, []
    for round_ in range(arguments.repeats + 1):
        for name, run in loops.items():
            counted.seconds = 0.0
            elapsed, elapsed_cpu = timed(run, device)
            if round_ > 0:  # the first round warms up
                wall[name].append(elapsed)
                cpu[name].append(elapsed_cpu)
                if name == "variational_bound" and counted.measure:
                    in_run.append(elapsed_cpu / counted.seconds - 1)

    summary = {name: {**statistics_of(wall[name]), "cpu": statistics_of(cpu[name])} for name in loops}
    names = list(loops)
    base, bound = summary["bare UNet calls"], summary["variational_bound"]
    overhead = {
        "from_min": bound["min_s"] / base["min_s"] - 1,
        "from_median": bound["median_s"] / base["median_s"] - 1,
        "cpu_from_min": bound["cpu"]["min_s"] / base["cpu"]["min_s"] - 1,
        "cpu_from_median": bound["cpu"]["median_s"] / base["cpu"]["median_s"] - 1,
        # each round's bound over the same round's bare calls: drift slower than a round cancels
        "paired_median": statistics.median(b / a - 1 for a, b in zip(wall[names[0]], wall[names[1]], strict=True)),
        # on the CPU, within each run of the bound: its CPU time beyond that of its own network calls
        "in_run_median": statistics.median(in_run) if in_run else None,
        "in_run": in_run,
        "arithmetic_per_step_ms": 1e3 * summary["bound's arithmetic"]["min_s"] / T,
        "unet_per_step_ms": 1e3 * base["min_s"] / T,
    }
    record = {
        **record_header("bits_per_dim", device),
        **{k: v for k, v in vars(arguments).items() if k != "output"},
        "results": summary,
        "overhead": overhead,
    }
    print(f"{arguments.preset}, batch {B}, T = {T} network calls, {device}, {arguments.repeats} interleaved rounds")
    print(f"{'loop':<20}  {'wall min s':>10}  {'median s':>8}  {'CPU min s':>9}  {'median s':>8}  {'ms/step':>7}")
    for name, result in summary.items():
        print(
            f"{name:<20}  {result['min_s']:10.3f}  {result['median_s']:8.3f}  {result['cpu']['min_s']:9.3f}  "
            f"{result['cpu']['median_s']:8.3f}  {1e3 * result['min_s'] / T:7.3f}"
        )
    print(
        f"overhead of the bound over the bare calls: wall {100 * overhead['from_min']:+.2f}% (min), "
        f"{100 * overhead['from_median']:+.2f}% (median); CPU {100 * overhead['cpu_from_min']:+.2f}% (min), "
        f"{100 * overhead['cpu_from_median']:+.2f}% (median); median of the rounds' ratios "
        f"{100 * overhead['paired_median']:+.2f}%"
    )
    if in_run:
        print(f"within each run, beyond its own UNet calls (CPU time): median {100 * overhead['in_run_median']:+.2f}%")
    write_record(record, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
