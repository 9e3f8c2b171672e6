"""One writer per work dir, and what a work dir keeps (issue #26): the lock of `lapseg
train`, `config.json` written only by runs that save, `best/` saves that replace a step
atomically, the preprocessing contract in the checkpoints, and checkpoint fallback in eval.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from lapseg.train import config as config_lib
from lapseg.train import lock as lock_lib
from tests.cli import helpers


@pytest.fixture(autouse=True)
def _toy(monkeypatch):
    helpers.register_toy(monkeypatch)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, data_dir):
    """A toy run of 4 steps: checkpoints 2 and 4, evaluations (and `best/`) at 2 and 4."""
    root = tmp_path_factory.mktemp("healthy")
    (root / "toy.py").write_text(helpers.toy.config_file(data_dir))
    with pytest.MonkeyPatch.context() as patch:
        helpers.register_toy(patch)
        assert helpers.run("train", f"--config={root / 'toy.py'}", f"--workdir={root / 'w'}",
                           "--config.num_train_steps=4", "--config.checkpoint_every_steps=2",
                           "--config.eval_every_steps=2") == 0
    return root


@pytest.fixture
def run(tmp_path, healthy):
    """A copy of the healthy run: `(work dir, argv prefix resuming it)`."""
    shutil.copytree(healthy, tmp_path / "run")
    workdir = tmp_path / "run" / "w"
    return workdir, ("train", f"--workdir={workdir}", f"--config={tmp_path / 'run' / 'toy.py'}")


def _hashes(workdir):
    return {k: v for k, v in helpers.file_hashes(workdir).items() if k != lock_lib.LOCK_FILE}


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # pylint: disable=consider-using-with


def test_a_second_run_on_a_locked_work_dir_is_refused_at_once(run):
    workdir, argv = run
    sleeper = _sleeper()  # a live process holding the lock, as a running `lapseg train` does
    try:
        (workdir / lock_lib.LOCK_FILE).write_text(json.dumps(
            {"host": socket.gethostname(), "pid": sleeper.pid, "started": "earlier"}))
        before = _hashes(workdir)
        start = time.perf_counter()
        message = helpers.run(*argv, "--config.num_train_steps=6", "--config.seed=1")
        elapsed = time.perf_counter() - start
    finally:
        sleeper.kill()
    helpers.one_line(message, "lapseg train:", "is in use by another training run",
                     f"pid {sleeper.pid}", "another --workdir")
    assert elapsed < 10, elapsed
    assert _hashes(workdir) == before  # checkpoints, config.json, metrics.jsonl, best/


def test_two_real_runs_on_one_work_dir(tmp_path, data_dir):
    """`lapseg train` in a subprocess holds the lock while it trains; a second run started
    meanwhile exits 2 in one line, and the first run's files are its own."""
    (tmp_path / "toy.py").write_text(helpers.toy.config_file(data_dir))
    workdir = tmp_path / "w"
    launcher = ("import sys, jax; jax.config.update('jax_default_prng_impl', 'rbg'); "
                "from lapseg import cli, models; models._MODELS['toy'] = 'tests.train.toy:toy'; "
                "sys.exit(cli.main(sys.argv[1:]))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    first = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", launcher, "train", f"--config={tmp_path / 'toy.py'}",
         f"--workdir={workdir}", "--config.num_train_steps=400", "--config.log_every_steps=10",
         "--config.checkpoint_every_steps=100", "--config.seed=0"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (workdir / lock_lib.LOCK_FILE).exists() and time.time() < deadline:
            assert first.poll() is None, first.stderr.read().decode()
            time.sleep(0.2)
        start = time.perf_counter()
        message = helpers.run("train", f"--config={tmp_path / 'toy.py'}", f"--workdir={workdir}",
                              "--config.num_train_steps=400", "--config.seed=1")
        assert time.perf_counter() - start < 10
        helpers.one_line(message, "lapseg train:", "in use by another training run",
                         f"pid {first.pid}")
        assert first.wait(timeout=600) == 0, first.stderr.read().decode()
    finally:
        first.kill()
    assert config_lib.load(workdir).seed == 0
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if line["split"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps  # one run's lines
    assert not (workdir / lock_lib.LOCK_FILE).exists()  # released at the end


def test_a_stale_lock_is_taken_over(run):
    workdir, argv = run
    dead = _sleeper()
    dead.kill()
    dead.wait()
    (workdir / lock_lib.LOCK_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}))
    assert helpers.run(*argv, "--config.num_train_steps=6") == 0
    assert not (workdir / lock_lib.LOCK_FILE).exists()


def test_another_hosts_lock_is_stale_only_when_not_refreshed(tmp_path):
    path = tmp_path / lock_lib.LOCK_FILE
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "earlier"}))
    with pytest.raises(lock_lib.WorkdirLockedError, match="pid 1 on elsewhere"):
        lock_lib.WorkdirLock(tmp_path).acquire()
    old = time.time() - lock_lib.STALE_SECONDS - 10
    os.utime(path, (old, old))
    with lock_lib.WorkdirLock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_the_lock_heartbeat_refreshes_the_file(tmp_path):
    lock = lock_lib.WorkdirLock(tmp_path, heartbeat_seconds=0.05)
    with lock:
        path = tmp_path / lock_lib.LOCK_FILE
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - os.path.getmtime(path) < 5


@pytest.mark.parametrize("flags,words", [
    (("--config.optimizer.lr_multipliers=(('*', 'x'),)",), ("lr_multipliers",)),
    (("--config.loss.weights={'logits': 1.0, 'aux': 0.4}",), ("config.loss", "aux", "logits")),
    (("--config.loss.class_weights=(1.0, 2.0)",), ("class_weights has 2 weights for 5 classes",)),
    (("--config.num_train_steps=40", "--config.log_every_steps=100",
      "--config.optimizer.learning_rate=1e6"), ("training diverged",)),
])
def test_a_run_that_fails_leaves_config_json_as_it_was(run, flags, words):
    workdir, argv = run
    before = _hashes(workdir)
    message = helpers.run(*argv, "--config.num_train_steps=6", *flags)
    helpers.one_line(message, "lapseg train:", *words)
    assert _hashes(workdir)["config.json"] == before["config.json"]
    assert config_lib.load(workdir).optimizer.learning_rate == 0.1


def test_best_is_replaced_at_a_step_it_already_holds(run):
    """The resumed run evaluates step 4 again (checkpoint 4 moved aside) and beats best/'s
    result there: best/ is replaced whole, and reruns go on."""
    workdir, argv = run
    shutil.move(workdir / "checkpoints" / "4", workdir.parent / "moved-4")
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert best["step"] == 4
    (workdir / "best" / "best.json").write_text(json.dumps({**best, "miou": -1.0}))
    for _ in range(2):
        assert helpers.run(*argv, "--config.num_train_steps=6", "--config.eval_every_steps=2",
                           "--config.optimizer.learning_rate=0.2") == 0
    saved = json.loads((workdir / "best" / "best.json").read_text())
    assert saved["step"] in (4, 6) and saved["miou"] > -1
    assert sorted(os.listdir(workdir / "best")) == sorted(["best.json", str(saved["step"])])
    assert not (workdir / "best.staging").exists() and not (workdir / "best.old").exists()


def test_a_swap_cut_short_is_finished_at_the_next_start(run):
    workdir, argv = run
    os.rename(workdir / "best", workdir / "best.old")  # killed between the two renames
    assert helpers.run(*argv, "--config.num_train_steps=4") == 0  # restored at step 4
    assert (workdir / "best" / "best.json").is_file() and not (workdir / "best.old").exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_a_normalisation_that_contradicts_the_checkpoint_is_refused(run, command):
    workdir, _ = run
    before = _hashes(workdir)
    extra = (f"--output={workdir.parent / 'model.jaxexport'}",) if command == "export" else ()
    message = helpers.run(command, f"--workdir={workdir}", "--config.data.normalize=none", *extra)
    helpers.one_line(message, f"lapseg {command}:", "normalize='torch'", "normalize='none'")
    assert _hashes(workdir) == before


def test_a_hand_edited_config_json_is_refused(run):
    workdir, _ = run
    saved = json.loads((workdir / "config.json").read_text())
    saved["data"]["normalize"] = "caffe"
    (workdir / "config.json").write_text(json.dumps(saved))
    message = helpers.run("eval", f"--workdir={workdir}")
    helpers.one_line(message, "lapseg eval:", "normalize='torch'", "normalize='caffe'")


@pytest.mark.parametrize("damage", ["zeroed", "state-less"])
def test_eval_falls_back_from_a_damaged_latest_checkpoint(run, caplog, damage):
    workdir, _ = run
    if damage == "state-less":
        shutil.rmtree(workdir / "checkpoints" / "4" / "state")
    for path in (workdir / "checkpoints" / "4").rglob("*"):
        if path.is_file() and path.stat().st_size > 100 and "state" in str(path):
            path.write_bytes(b"\0" * path.stat().st_size)  # every state file zeroed
    with caplog.at_level("WARNING"):
        assert helpers.run("eval", f"--workdir={workdir}") == 0
    assert json.loads((workdir / "eval_val.json").read_text())["step"] == 2
    assert any("step 4" in r.getMessage() and "using step 2" in r.getMessage()
               for r in caplog.records)


def test_a_broken_config_json_on_resume_is_one_line(run):
    workdir, argv = run
    (workdir / "config.json").write_text("{not json")
    message = helpers.run(*argv, "--config.num_train_steps=6")
    helpers.one_line(message, "lapseg train:", "config.json", "not a readable config")


def _read_only(workdir, monkeypatch):
    """Writes of new files into `workdir` fail as on a read-only file system (EROFS);
    chmod cannot show it here, where tests run as root."""
    import builtins  # pylint: disable=import-outside-toplevel

    def refuse(path):
        if os.path.dirname(os.path.abspath(os.fspath(path))) == str(workdir):
            raise OSError(30, "Read-only file system", os.fspath(path))

    real_open, real_os_open = builtins.open, os.open

    def fake_open(path, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            refuse(path)
        return real_open(path, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)


def test_a_read_only_work_dir_is_one_line_and_eval_still_prints(run, capsys, monkeypatch):
    workdir, argv = run
    before = _hashes(workdir)
    _read_only(workdir, monkeypatch)
    helpers.one_line(helpers.run(*argv, "--config.num_train_steps=6"), "lapseg train:",
                     "cannot write in work dir", "Read-only file system")
    message = helpers.run("eval", f"--workdir={workdir}")
    helpers.one_line(message, "lapseg eval:", "the metrics are above", "eval_val.json",
                     "Read-only file system")
    assert "mIoU" in capsys.readouterr().out
    monkeypatch.undo()
    assert _hashes(workdir) == before
