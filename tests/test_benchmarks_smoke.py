"""Smoke tests of benchmarks/flops.py, bf16.py and accelerator.py at tiny sizes (no timings
are asserted; these check that the scripts run and report what they claim to)."""

import json

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from benchmarks import accelerator, bf16, flops


def test_matmul_flops_match_xla_for_convolutions():
    # The 'conv only' column's count against XLA's own, for strided, dilated and 1x1 convs.
    for kernel, stride, dilation in ((3, 1, 1), (3, 2, 1), (3, 1, 4), (1, 1, 1)):
        x = jax.ShapeDtypeStruct((2, 33, 40, 8), jnp.float32)
        w = jax.ShapeDtypeStruct((kernel, kernel, 8, 16), jnp.float32)
        pad = dilation * (kernel - 1) // 2

        def conv(a, b, stride=stride, dilation=dilation, pad=pad):
            return lax.conv_general_dilated(a, b, (stride, stride), ((pad, pad), (pad, pad)),
                                            rhs_dilation=(dilation, dilation),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

        counted = flops.matmul_flops(jax.make_jaxpr(conv)(x, w).jaxpr)
        assert counted == pytest.approx(flops._xla_flops(conv, x, w), rel=1e-6)


def test_icnet_resizes_under_5_gflops_at_full_resolution():
    # Issue 14's acceptance: the dense matrices cost 53.7 GFLOPs of ICNet's 111.6.
    cost = flops.inference_cost("icnet")
    assert cost["size"] == (1024, 2048)
    assert cost["resize"] < 5e9
    assert cost["conv"] > 50e9 and cost["total"] < 70e9


def test_bf16_speed_smoke_and_compute_dtype(tmp_path):
    result = bf16.main(["--rounds", "1", "--steps", "1", "--batch", "2", "--size", "32",
                        "--out", str(tmp_path)])
    assert set(result["ms_per_step"]) == {"float32", "bfloat16"}
    assert (tmp_path / "speed.json").exists()
    step_mesh = bf16.step_lib.make_mesh(1)
    report = bf16.Job("bfloat16", 2, 32, step_mesh).report()
    # Every convolution / matmul of the bf16 step (forward and backward) runs in bf16; the
    # loss, the gradients and the parameters stay f32.
    assert set(report["matmul_gflops_by_dtype"]) == {"bfloat16"}
    assert report["logits"] == "bfloat16" and report["loss"] == "float32"
    assert report["grads"] == ["float32"] and report["params"] == ["float32"]


def test_accelerator_smoke_on_cpu(capsys):
    results = accelerator.main(["--smoke", "--seconds", "0", "--peak_tflops", "1"])
    out = capsys.readouterr().out
    if jax.devices()[0].platform == "cpu":
        assert "CPU run" in out
        assert results["peak_device_memory_bytes"] is None or results["peak_device_memory_bytes"] > 0
    train = results["pspnet_train"]
    assert train["flops_per_step"] > 0 and 0 < train["mfu"] < 1
    assert [r["dtype"] for r in results["icnet"]] == ["float32", "bfloat16"]
    assert all(r["fps"] > 0 for r in results["icnet"])
    assert "MFU" in out and "ICNet eval" in out and "peak device memory" in out


def test_peak_table_lookup():
    class Device:  # pylint: disable=too-few-public-methods
        def __init__(self, kind):
            self.device_kind = kind

    assert accelerator.peak_tflops(Device("NVIDIA H100 PCIe"))[0] == 756.0
    assert accelerator.peak_tflops(Device("NVIDIA H200"))[0] == 989.0
    assert accelerator.peak_tflops(Device("NVIDIA A100-SXM4-80GB"))[0] == 312.0
    assert accelerator.peak_tflops(Device("TPU v5 lite"))[0] == 197.0
    assert accelerator.peak_tflops(Device("TPU v4"))[0] == 275.0
    assert accelerator.peak_tflops(Device("cpu"))[0] is None
    assert accelerator.peak_tflops(Device("cpu"), 2.5) == (2.5, "--peak_tflops")


def test_input_pipeline_summary_of_a_run(tmp_path, capsys):
    from benchmarks import input_pipeline  # pylint: disable=import-outside-toplevel
    lines = [{"step": 50, "split": "train", "input_wait_fraction": 0.01},
             {"step": 100, "split": "train", "input_wait_fraction": 0.03},
             {"step": 100, "split": "eval", "miou": 0.5},
             {"step": 150, "split": "train", "input_wait_fraction": 0.02},
             {"step": 150, "split": "eval", "miou": 0.75}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = input_pipeline.summarize(str(tmp_path))
    assert summary["log_steps"] == 3 and summary["wait_max"] == 0.03
    assert summary["wait_mean"] == pytest.approx(0.02)
    assert summary["last_eval"]["miou"] == 0.75
    assert "val mIoU 0.7500 at step 150" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not exist"):
        input_pipeline.summarize(str(tmp_path / "missing"))


def test_train_step_config_specs():
    from benchmarks import train_step  # pylint: disable=import-outside-toplevel
    config = train_step.load_spec(
        "configs/shapes_lrr.py:coarse|model_kwargs.boundary_masking=False|data.batch_size=4")
    assert config.model == "lrr" and dict(config.loss.weights) == {"level_32": 1.0}
    assert config.model_kwargs.boundary_masking is False and config.data.batch_size == 4


def test_decoder_tables_over_seeds_mark_ties(capsys, tmp_path):
    """`benchmarks.decoders_shapes`: one run per seed in its own work dir, mean ± std, and a
    difference inside the larger std called a tie."""
    from benchmarks import decoders_shapes  # pylint: disable=import-outside-toplevel

    values = {("fcn8s", 0): 0.50, ("fcn8s", 1): 0.52, ("fcn8s", 2): 0.54,
              ("lrr", 0): 0.51, ("lrr", 1): 0.53, ("lrr", 2): 0.55,  # +0.01, std 0.02: a tie
              ("far", 0): 0.70, ("far", 1): 0.71, ("far", 2): 0.72}
    made = []

    def make_run(model, workdir, seed):
        made.append(workdir)
        value = values[(model, seed)]
        return {"miou": value, "minutes": 1.0, **{f"w{w}": value for w in decoders_shapes.WIDTHS}}

    results = {model: decoders_shapes.run_seeds(make_run, model, str(tmp_path), [0, 1, 2],
                                                 repeat=model == "lrr")
               for model in ("fcn8s", "lrr", "far")}
    assert str(tmp_path / "lrr" / "seed0_repeat") in made and len(made) == 10
    decoders_shapes.print_table(results, "test")
    out = capsys.readouterr().out
    assert "| lrr | 0.5300 ± 0.0200 (+0.0100~)" in out
    assert "| far | 0.7100 ± 0.0100 (+0.1900)" in out
    assert "lrr: the first seed run twice differs by miou +0.0000" in out


def test_a_fast_path_conv_counts_once():
    """`lax.platform_dependent` holds a CPU branch and XLA's convolution: one runs, so the
    count is XLA's, not both branches'."""
    from lapseg.layers import conv as conv_lib  # pylint: disable=import-outside-toplevel

    x = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32)
    w = jax.ShapeDtypeStruct((1, 1, 8, 16), jnp.float32)

    def fast(a, b):
        return conv_lib.conv_general_dilated(a, b, (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def plain(a, b):
        return lax.conv_general_dilated(a, b, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert "cond" in str(jax.make_jaxpr(fast)(x, w))  # the fast path is in the program
    assert flops.matmul_flops(jax.make_jaxpr(fast)(x, w).jaxpr) == pytest.approx(
        flops.matmul_flops(jax.make_jaxpr(plain)(x, w).jaxpr))
