"""Specification of `ddpm_hf.acceleration`: which speed-ups apply where, and the switches that set them."""

from __future__ import annotations

import argparse

import pytest
import torch

from ddpm_hf.acceleration import (
    CompiledWithFallback,
    Speedups,
    add_speedup_arguments,
    autocast,
    describe_error,
    speedups_from_arguments,
    tf32_enabled,
    training_precision,
)

ALL_ON = Speedups(bf16=True, tf32=True, channels_last=True, compile=True, cuda_graphs=True)


class TestResolve:
    def test_by_default_nothing_is_on_for_the_cpu(self):
        assert Speedups().resolve("cpu") == Speedups.off()

    def test_by_default_everything_but_bf16_is_on_for_cuda_and_bf16_where_the_gpu_has_it(self):
        resolved = Speedups().resolve("cuda")
        assert resolved.tf32 and resolved.channels_last and resolved.compile and resolved.cuda_graphs
        assert resolved.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())

    def test_forced_on_the_cpu_everything_runs_but_tf32_which_exists_on_cuda_only(self):
        """(CUDA graphs forced on the CPU run the same fixed-buffer step, uncaptured.)"""
        resolved = ALL_ON.resolve("cpu")
        assert (resolved.bf16, resolved.channels_last, resolved.compile, resolved.cuda_graphs) == (True,) * 4
        assert resolved.tf32 is False

    def test_forced_off_stays_off_on_cuda(self):
        assert Speedups.off().resolve("cuda") == Speedups.off()

    def test_resolved_settings_are_all_booleans(self):
        for device in ("cpu", "cuda"):
            assert all(isinstance(value, bool) for value in Speedups().resolve(device).describe().values())


def test_tf32_enabled_sets_matmul_and_cudnn_tf32_and_restores_them_after():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    with tf32_enabled(True):
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32
    with tf32_enabled(False):
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.backends.cudnn.allow_tf32
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_tf32_enabled_restores_the_settings_after_an_error():
    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError), tf32_enabled(before == "highest"):
        raise RuntimeError("boom")
    assert torch.get_float32_matmul_precision() == before


def test_autocast_runs_matrix_products_in_bf16_only_when_asked():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(torch.device("cpu"), bf16=True):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), bf16=False):
        assert (a @ b).dtype == torch.float32


class TestTrainingPrecision:
    @pytest.mark.parametrize("requested", ["no", "fp16", "bf16"])
    def test_an_explicit_choice_is_kept(self, requested, monkeypatch):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
        assert training_precision(requested) == requested

    def test_auto_takes_accelerate_launchs_choice(self, monkeypatch):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
        assert training_precision("auto") == "fp16"

    def test_auto_without_a_launcher_choice_is_bf16_on_a_gpu_that_has_it_and_none_elsewhere(self, monkeypatch):
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
        monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
        expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        assert training_precision("auto") == expected

    def test_auto_on_a_cpu_launch_is_none(self, monkeypatch):
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
        assert training_precision("auto") == "no"


class TestCommandLine:
    def parse(self, *argv: str) -> Speedups:
        parser = argparse.ArgumentParser()
        add_speedup_arguments(parser)
        return speedups_from_arguments(parser.parse_args(list(argv)))

    def test_no_option_is_auto_for_every_speedup(self):
        assert self.parse() == Speedups()

    def test_each_option_takes_on_off_or_auto(self):
        parsed = self.parse("--bf16", "off", "--tf32", "on", "--channels-last", "auto", "--compile", "no")
        assert parsed == Speedups(bf16=False, tf32=True, channels_last=None, compile=False, cuda_graphs=None)
        assert self.parse("--cuda-graphs", "OFF").cuda_graphs is False

    def test_another_value_is_an_error_naming_the_option(self, capsys):
        with pytest.raises(SystemExit):
            self.parse("--compile", "maybe")
        assert "--compile" in capsys.readouterr().err


class TestCompiledWithFallback:
    """A compiled module that fails runs uncompiled, and says so once (the pipeline's and trainer's tests show the
    whole fallback; here the wrapper alone, on a linear layer)."""

    def test_a_compile_that_raises_falls_back_to_the_module(self, monkeypatch):
        def broken(module, **kwargs):
            raise RuntimeError("no C++ compiler found\nsecond line")

        monkeypatch.setattr(torch, "compile", broken)
        failures: list[str] = []
        layer = torch.nn.Linear(2, 2)
        wrapped = CompiledWithFallback(layer, failures.append)
        x = torch.ones(1, 2)
        assert torch.equal(wrapped(x), layer(x))
        assert failures == ["RuntimeError: no C++ compiler found"]

    def test_only_the_first_call_is_checked_and_a_finite_compiled_module_is_kept(self, monkeypatch):
        calls = []

        def counting(module, **kwargs):
            def compiled(x):
                calls.append(x)
                return module(x)

            return compiled

        monkeypatch.setattr(torch, "compile", counting)
        failures: list[str] = []
        wrapped = CompiledWithFallback(torch.nn.Linear(2, 2), failures.append)
        for _ in range(3):
            wrapped(torch.ones(1, 2))
        assert len(calls) == 3 and failures == [] and wrapped.compiled is not None

    def test_non_finite_output_is_blamed_on_compile_only_if_the_module_is_finite(self, monkeypatch):
        monkeypatch.setattr(torch, "compile", lambda module, **kwargs: lambda x: module(x) * float("nan"))
        failures: list[str] = []
        layer = torch.nn.Linear(2, 2)
        assert torch.isfinite(CompiledWithFallback(layer, failures.append)(torch.ones(1, 2))).all()
        assert failures == ["non-finite output where the uncompiled network's is finite"]
        failures.clear()
        infinite = torch.full((1, 2), float("inf"))  # the module itself overflows: compile is not to blame
        wrapped = CompiledWithFallback(layer, failures.append)
        assert not torch.isfinite(wrapped(infinite)).all()
        assert failures == [] and wrapped.compiled is not None

    def test_running_out_of_memory_is_raised_not_blamed_on_compile(self, monkeypatch):
        """The batch does not fit, compiled or not: the error reaches the caller and compile stays on."""

        def out_of_memory(module, **kwargs):
            def compiled(x):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            return compiled

        monkeypatch.setattr(torch, "compile", out_of_memory)
        failures: list[str] = []
        wrapped = CompiledWithFallback(torch.nn.Linear(2, 2), failures.append)
        with pytest.raises(torch.OutOfMemoryError):
            wrapped(torch.ones(1, 2))
        assert failures == [] and wrapped.compiled is not None


def test_describe_error_is_one_line_with_the_type():
    assert describe_error(ValueError("first\nsecond")) == "ValueError: first"
    assert describe_error(KeyError()) == "KeyError"
