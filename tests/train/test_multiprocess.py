"""Several processes training one model (`config.distributed`, `lapseg.train.distributed`).

The acceptance tests launch `lapseg train` twice as subprocesses, 2 processes x 4 CPU
devices joined through `--config.distributed.*` (gloo collectives), and compare them with
1 process x 8 devices, this test process (tests/conftest.py). Marked `multiprocess`:
deselect them with `-m 'not multiprocess'`. The cheap tests at the end need no
subprocess: the config group, and that the processes' input batches side by side are the
one-process batches.
"""

import itertools
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lapseg import data as data_lib
from lapseg import models
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import config as config_lib
from lapseg.train import distributed as distributed_lib
from tests.cli.helpers import run
from tests.train import toy

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCAL_DEVICES = 4  # per process; 2 processes = the 8 devices of this process

# `lapseg train` as the installed command runs it (`lapseg.cli.main`), with what the test
# process has too: the toy model registered, conftest's PRNG, and optionally an evaluation
# cut to LAPSEG_TEST_EVAL_BATCHES batches (as tests/train/test_init.py cuts it).
LAUNCHER = """
import itertools, os, sys
import jax
jax.config.update("jax_default_prng_impl", "rbg")
from lapseg import cli, models
models._MODELS["toy"] = "tests.train.toy:toy"
if os.environ.get("LAPSEG_TEST_EVAL_BATCHES"):
    from lapseg.train import loop
    real, n = loop.evaluate, int(os.environ["LAPSEG_TEST_EVAL_BATCHES"])
    loop.evaluate = lambda state, eval_step, mesh, loader, num_classes: real(
        state, eval_step, mesh, itertools.islice(loader, n), num_classes)
sys.exit(cli.main(sys.argv[1:]))
"""

# The toy run of both sides: 20 steps of batch 8, checkpoints at 10 and 20.
STEPS = 20
TOY_FLAGS = (f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=10",
             "--config.log_every_steps=5", "--config.eval_every_steps=1000",
             "--config.optimizer.warmup_steps=2")


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """The toy config file, its data dir (shapes built once, here) and the default flags."""
    root = tmp_path_factory.mktemp("mp")
    data_dir = root / "tfds"
    data_lib.load_source("shapes", "train", data_dir=str(data_dir))
    path = root / "toy.py"
    path.write_text(toy.config_file(str(data_dir)))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Job:
    """`lapseg train ARGS` in `count` processes of `LOCAL_DEVICES` CPU devices each."""

    def __init__(self, tmp_path, args, *, count=2, env=None):
        port = _free_port()
        self.logs = [tmp_path / f"process_{i}.log" for i in range(count)]
        environ = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count="
                   f"{LOCAL_DEVICES}", "JAX_PLATFORMS": "cpu",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
        self.procs = []
        for i in range(count):
            argv = [sys.executable, "-c", LAUNCHER, "train", *map(str, args),
                    f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                    f"--config.distributed.num_processes={count}",
                    f"--config.distributed.process_id={i}"]
            with open(self.logs[i], "w", encoding="utf-8") as log:
                self.procs.append(subprocess.Popen(  # pylint: disable=consider-using-with
                    argv, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT))

    def output(self, i) -> str:
        return self.logs[i].read_text(encoding="utf-8", errors="replace")

    def tails(self, lines=25) -> str:
        return "\n".join(f"--- process {i} ---\n" + "\n".join(self.output(i).splitlines()[-lines:])
                         for i in range(len(self.procs)))

    def wait(self, timeout) -> list:
        """Every process's exit status; fails (naming the logs) past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            return [proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                    for proc in self.procs]
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job ran past {timeout} s:\n{self.tails()}")
        return []

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def jobs():
    """Starts `Job`s and kills whatever still runs at the end of the test."""
    started = []

    def start(*args, **kwargs):
        started.append(Job(*args, **kwargs))
        return started[-1]

    yield start
    for job in started:
        job.kill()


def _leaves(workdir):
    checkpointer = checkpoint_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints")
    try:
        return checkpointer.latest_step(), jax.tree_util.tree_flatten_with_path(
            checkpointer.read())[0]
    finally:
        checkpointer.close()


def _max_difference(workdir_a, workdir_b) -> float:
    (step_a, leaves_a), (step_b, leaves_b) = _leaves(workdir_a), _leaves(workdir_b)
    assert step_a == step_b
    assert [path for path, _ in leaves_a] == [path for path, _ in leaves_b]
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for (_, a), (_, b) in zip(leaves_a, leaves_b))


def _metrics(workdir, split):
    lines = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl",
                                               encoding="utf-8")]
    return [line for line in lines if line["split"] == split]


@pytest.mark.multiprocess
def test_two_processes_train_like_one_and_restore_in_one(toy_file, tmp_path, jobs):
    """2 processes x 4 devices = 1 process x 8 devices: the parameters after 20 steps and the
    final evaluation (within 1e-5); the 2-process checkpoint resumes in 1 process."""
    two, one = tmp_path / "two", tmp_path / "one"
    start = time.monotonic()
    job = jobs(tmp_path, [f"--config={toy_file}", f"--workdir={two}", *TOY_FLAGS])
    assert job.wait(timeout=240) == [0, 0], job.tails()
    launched = time.monotonic() - start
    assert run("train", f"--config={toy_file}", f"--workdir={one}", *TOY_FLAGS) == 0
    print(f"\n2 processes: {launched:.0f} s (start-up included); "
          f"1 process: {time.monotonic() - start - launched:.0f} s")

    difference = _max_difference(two, one)
    print(f"largest parameter difference after {STEPS} steps: {difference:.3g}")
    assert difference <= 1e-5
    for split in ("train", "eval"):
        lines_two, lines_one = _metrics(two, split), _metrics(one, split)
        assert [l["step"] for l in lines_two] == [l["step"] for l in lines_one]  # written once
        for line_two, line_one in zip(lines_two, lines_one):
            for key in ("loss", "miou", "pixel_accuracy"):
                if key in line_one:
                    assert line_two[key] == pytest.approx(line_one[key], abs=1e-5), (split, key)
    # Process 0 alone reports; both processes saw the 8 devices.
    outputs = [job.output(0), job.output(1)]
    assert "final mIoU" in outputs[0] and "final mIoU" not in outputs[1]
    assert "mIoU " in outputs[0] and "mIoU " not in outputs[1]  # the summary table
    saved = config_lib.load(two / "config.json")
    assert (saved.distributed.num_processes, saved.distributed.process_id) == (2, 0)
    assert sorted(os.listdir(two / "checkpoints" / "20" / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

    # Resume both in this process (8 devices) for 4 more steps: the 2-process checkpoint,
    # its data iterator included, continues exactly like the 1-process one.
    more = f"--config.num_train_steps={STEPS + 4}"
    for workdir in (two, one):
        assert run("train", f"--config={toy_file}", f"--workdir={workdir}", *TOY_FLAGS,
                   more) == 0
    assert _leaves(two)[0] == STEPS + 4
    assert _max_difference(two, one) <= 1e-5


@pytest.mark.multiprocess
def test_a_killed_process_stops_the_other(toy_file, tmp_path, jobs):
    """`kill -9` of process 1 mid-training: process 0 exits non-zero, well within 2 minutes
    (the heartbeat timeout, here 10 s), naming the dead task. The job also splits each
    image over 2 devices (`config.mesh.spatial`), a 2 x 2 mesh per process."""
    workdir = tmp_path / "w"
    job = jobs(tmp_path, [f"--config={toy_file}", f"--workdir={workdir}", *TOY_FLAGS,
                          "--config.num_train_steps=1000000", "--config.mesh.spatial=2",
                          "--config.distributed.heartbeat_timeout_seconds=10"])
    deadline = time.monotonic() + 180
    while not (workdir / "metrics.jsonl").is_file() or not _metrics(workdir, "train"):
        if time.monotonic() > deadline or any(p.poll() is not None for p in job.procs):
            pytest.fail(f"training did not start:\n{job.tails()}")
        time.sleep(0.5)
    os.kill(job.procs[1].pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        status = job.procs[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process 0 still runs 120 s after process 1 died:\n{job.tails()}")
    elapsed = time.monotonic() - killed
    print(f"\nprocess 0 exited with status {status} {elapsed:.1f} s after process 1 was killed")
    assert status != 0
    output = job.output(0)
    assert "another task died" in output or "heartbeat" in output, job.tails()


@pytest.mark.multiprocess
def test_backbone_weights_on_two_processes(toy_file, tmp_path, jobs):
    """`config.init.backbone_weights` on 2 processes: each reads the file (the loop checks
    that they hold the same variables before they become the replicated state); after one
    step at learning rate 0 the checkpoint's backbone parameters are the file's (a PSPNet
    on a full-width ResNet-18, as tests/train/test_init.py; one evaluation batch)."""
    from tests.train import test_init  # pylint: disable=import-outside-toplevel

    state_dict = {k: v.numpy() for k, v in test_init._torch_state_dict().items()}  # pylint: disable=protected-access
    weights = tmp_path / "resnet18.npz"
    np.savez(weights, **state_dict)
    config_file = tmp_path / "pspnet.py"
    config_file.write_text(toy_file.read_text().replace(
        'config.model = "toy"', 'config.model = "pspnet"').replace(
        '{"width": 4}', repr(test_init.PSPNET_R18)))
    job = jobs(tmp_path, [f"--config={config_file}", f"--workdir={tmp_path / 'two'}",
                          f"--config.init.backbone_weights={weights}",
                          "--config.num_train_steps=1", "--config.optimizer.warmup_steps=0",
                          "--config.optimizer.learning_rate=0.0"],
               env={"LAPSEG_TEST_EVAL_BATCHES": "1"})
    assert job.wait(timeout=240) == [0, 0], job.tails()
    assert "arrays loaded" in job.output(0)
    saved = test_init._saved(tmp_path / "two")  # pylint: disable=protected-access
    params = {p: a for p, a in saved.items() if p.startswith("params/")}
    want = test_init._expected_backbone(state_dict, params)  # pylint: disable=protected-access
    assert len(want) > 40
    for path, array in want.items():
        np.testing.assert_array_equal(params[path], array, err_msg=path)


# --- no subprocess ---------------------------------------------------------------------------

def test_processes_batches_side_by_side_are_the_one_process_batches(toy_file):
    """The rows of 2 (and 4) processes, concatenated in process order, are the batches of
    1 process, and no two processes read the same example."""
    config = config_lib.base_config().data
    config.update({"data_dir": str(toy_file.parent / "tfds"), "crop_size": (32, 32),
                   "batch_size": 8})

    def batches(index, count, number=3):
        loader = data_lib.create_loader(config, "train", data_dir=config.data_dir, seed=0,
                                        train=True, process_index=index, process_count=count)
        return list(itertools.islice(iter(loader), number))

    single = batches(0, 1)
    for count in (2, 4):
        parts = [batches(i, count) for i in range(count)]
        for step, batch in enumerate(single):
            for key in ("image", "label"):
                assert all(p[step][key].shape[0] == 8 // count for p in parts)
                np.testing.assert_array_equal(
                    np.concatenate([p[step][key] for p in parts]), batch[key])


def test_the_distributed_group_and_old_configs(tmp_path):
    config = config_lib.base_config()
    assert not distributed_lib.requested(config.distributed)
    for field, value in (("enabled", True), ("coordinator_address", "10.0.0.1:1234"),
                         ("num_processes", 2), ("process_id", 0)):
        changed = config_lib.base_config()
        changed.distributed[field] = value
        assert distributed_lib.requested(changed.distributed), field
    assert not distributed_lib.initialize(config.distributed)  # off: nothing happens
    # A config.json saved when `distributed` was a bool still loads.
    for old in (False, True):
        values = json.loads(config.to_json())
        values["distributed"] = old
        (tmp_path / "config.json").write_text(json.dumps(values))
        loaded = config_lib.load(tmp_path / "config.json")
        assert loaded.distributed.enabled is old and loaded.distributed.process_id is None
        assert loaded.mesh.spatial == 1
    assert distributed_lib.requested(True) and not distributed_lib.requested(False)


def test_bad_launch_settings_are_one_line(tmp_path):
    message = run("train", f"--workdir={tmp_path}", "--config.distributed.num_processes=2",
                  "--config.distributed.process_id=2")
    assert isinstance(message, str) and "\n" not in message, message
    assert "process_id must be in [0, num_processes = 2), got 2" in message


@pytest.mark.multiprocess
@pytest.mark.parametrize("process_id", [0, 1], ids=["absent peer", "unreachable coordinator"])
def test_a_job_that_cannot_be_joined_ends_in_one_line(toy_file, tmp_path, process_id):
    """Process 0 waiting for a peer that never starts, or process 1 for a coordinator that
    is not there: one line and exit status 2 soon after the join timeout (JAX alone would
    abort with a C++ stack dump), nothing written to the work dir."""
    argv = [sys.executable, "-c", LAUNCHER, "train", "--config", str(toy_file), "--workdir",
            str(tmp_path / "w"), *TOY_FLAGS, "--config.distributed.initialization_timeout_seconds=3",
            f"--config.distributed.coordinator_address=127.0.0.1:{_free_port()}",
            "--config.distributed.num_processes=2", f"--config.distributed.process_id={process_id}"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                               "PYTHONPATH": str(ROOT),
                                               "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
                          capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines and lines[-1].startswith("lapseg: cannot join the distributed job"), lines[-5:]
    assert "initialization_timeout_seconds" in lines[-1] and "Traceback" not in proc.stderr
    assert elapsed < 60, elapsed
    assert not (tmp_path / "w" / "config.json").exists()
