"""Bad inputs and faults, tried as a new user would (issue #17): each is one line on
stderr, `lapseg <command>: <what> — <what to do>`, exit status 2, no traceback, and
nothing good on disk is lost.

`CASES` is the table: a command line (with `{placeholders}` filled per test), an optional
set-up that makes the fault (a cut file, a full disk, a changed work dir), the words the
message must hold, and an optional check of the disk afterwards. Commands run in this
process (`tests.cli.helpers.run`, which also asserts the status is 2 and not 1, the
status of an unexpected error). The library's own boundaries (losses, metrics,
`model.apply`, `create_model`) are `LIBRARY_CASES`.

The toy model (tests/train/toy.py) keeps every training case to seconds; one healthy run
(`healthy`, 4 steps, checkpoints at 2 and 4, `best/`) is copied for the cases that need
a work dir.
"""

import dataclasses
import glob
import os
import shutil
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from lapseg import losses, metrics, models
from lapseg.train import checkpoint as checkpoint_lib
from tests.cli import helpers


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    helpers.register_toy(monkeypatch)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, data_dir):
    """A toy run of 4 steps: checkpoints 2 and 4, `best/`, config.json (model width 4)."""
    root = tmp_path_factory.mktemp("healthy")
    (root / "toy.py").write_text(helpers.TOY_CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        helpers.register_toy(patch)
        code = helpers.run("train", f"--config={root / 'toy.py'}", f"--workdir={root / 'w'}",
                           f"--config.data.data_dir={data_dir}", "--config.num_train_steps=4",
                           "--config.checkpoint_every_steps=2", "--config.eval_every_steps=2")
    assert code == 0
    return root / "w"



@dataclasses.dataclass
class Case:
    """One bad input: `argv` (formatted with the fixture's `paths`), the message's words,
    `setup(paths, monkeypatch)` making the fault, `keeps`: directories of the work dir that
    must be byte-identical afterwards."""

    name: str
    argv: tuple
    words: tuple
    setup: Callable | None = None
    keeps: tuple = ()


def _toy_train(*flags):
    return ("train", "--config={config}", "--workdir={tmp}/w", "--config.data.data_dir={data}",
            "--config.num_train_steps=2", *flags)


def _resume(*flags):  # the healthy run, copied to {run}
    return ("train", "--workdir={run}", "--config={run}/../toy.py",
            "--config.data.data_dir={data}", *flags)


def _write(relative, content):
    def setup(paths, _):
        path = os.path.join(paths["tmp"], relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
    return setup


def _png(relative, size=(40, 30), cut=False):
    def setup(paths, _):
        path = os.path.join(paths["tmp"], relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        PIL.Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(path)
        if cut:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    return setup


def _cut_build(paths, _):
    """A copy of the shapes build whose training ArrayRecord file is cut in half."""
    copy = os.path.join(paths["tmp"], "tfds")
    shutil.copytree(paths["data"], copy)
    (record,) = glob.glob(os.path.join(copy, "shapes", "*", "*", "shapes-train.array_record*"))
    with open(record, "r+b") as f:
        f.truncate(os.path.getsize(record) // 2)


def _full_disk(paths, monkeypatch):
    usage = shutil.disk_usage(paths["tmp"])
    monkeypatch.setattr(checkpoint_lib.shutil, "disk_usage",
                        lambda _: usage._replace(free=1 << 20))


def _offline(paths, monkeypatch):
    import socket  # pylint: disable=import-outside-toplevel

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)


def _folder_with_a_cut_image(paths, _):
    """A 2-class folder dataset (4 train, 2 val pairs of 48 x 64) whose train image b.png is
    cut in half."""
    root = os.path.join(paths["tmp"], "mine")
    with open(os.path.join(_dirs(root), "classes.json"), "w", encoding="utf-8") as f:
        f.write('{"names": ["background", "thing"]}')
    for split, stems in (("train", "abcd"), ("val", "ef")):
        for stem in stems:
            image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
            PIL.Image.fromarray(image).save(os.path.join(_dirs(root, "images", split), f"{stem}.png"))
            mask = np.zeros((48, 64), np.uint8)
            mask[10:30, 20:40] = 1
            PIL.Image.fromarray(mask).save(os.path.join(_dirs(root, "masks", split), f"{stem}.png"))
    cut = os.path.join(root, "images", "train", "b.png")
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) // 2)


def _dirs(*parts):
    path = os.path.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path


def _no_space_for(suffix):
    """Writes of files ending in `suffix` fail as on a full disk (ENOSPC)."""
    def setup(paths, monkeypatch):
        import builtins  # pylint: disable=import-outside-toplevel
        real_open = builtins.open

        def fake_open(path, mode="r", *args, **kwargs):
            if str(path).endswith(suffix) and any(m in mode for m in "wax"):
                raise OSError(28, "No space left on device", str(path))
            return real_open(path, mode, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", fake_open)
    return setup


def _build_on_a_full_disk(paths, monkeypatch):
    from lapseg.data import sources  # pylint: disable=import-outside-toplevel

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sources, "_tfds_builder", full)


def _shapes_as_three_classes(paths, monkeypatch):
    """`shapes` described as 3 classes: its labels 3 and 4 are then out of range, a bad
    dataset whose labels only the training step sees."""
    import dataclasses as dc  # pylint: disable=import-outside-toplevel
    from lapseg.data import shapes  # pylint: disable=import-outside-toplevel

    info = shapes.dataset_info()
    three = dc.replace(info, num_classes=3, class_names=info.class_names[:3],
                       palette=np.concatenate([info.palette[:3], info.palette[-1:]]))
    monkeypatch.setattr(shapes, "dataset_info", lambda config_name=None: three)


def _all_ignored_folder(paths, _):
    """A folder dataset of shapes' 5 class names whose val masks are all ignored."""
    root = os.path.join(paths["tmp"], "mine")
    names = '["background", "circle", "square", "triangle", "cross"]'
    with open(os.path.join(_dirs(root), "classes.json"), "w", encoding="utf-8") as f:
        f.write(f'{{"names": {names}, "ignore_label": 255}}')
    for split, value in (("train", 1), ("val", 255)):
        image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)
        PIL.Image.fromarray(image).save(os.path.join(_dirs(root, "images", split), "a.png"))
        PIL.Image.fromarray(np.full((96, 96), value, np.uint8)).save(
            os.path.join(_dirs(root, "masks", split), "a.png"))


def _drop_best(paths, _):
    shutil.rmtree(os.path.join(paths["run"], "best"))


CASES = [
    # The command line: unknown names, flags and fields.
    Case("unknown command", ("trian",), ("lapseg: unknown command 'trian'", "choose from")),
    Case("unknown flag", _toy_train("--nope=1"), ("lapseg train: bad flag", "nope")),
    Case("misspelt field", _toy_train("--config.num_train_step=5"),
         ("no field num_train_step", "num_train_steps")),
    Case("nested field the config lacks", _toy_train("--config.model_kwargs.backbone_kwargs.width=1"),
         ("--config.model_kwargs.backbone_kwargs.width", "no field model_kwargs.backbone_kwargs")),
    Case("value of the wrong type", _toy_train("--config.num_train_steps=many"),
         ("bad flag", "num_train_steps")),
    Case("missing config file", ("train", "--config={tmp}/nope.py", "--workdir={tmp}/w"),
         ("config file", "nope.py", "does not exist")),
    Case("config file that does not parse", ("train", "--config={tmp}/broken.py",
                                              "--workdir={tmp}/w"),
         ("cannot load the config",), setup=_write("broken.py", "def get_config(:\n")),
    Case("config file without get_config", ("train", "--config={tmp}/empty.py",
                                             "--workdir={tmp}/w"),
         ("cannot load the config", "get_config"), setup=_write("empty.py", "x = 1\n")),
    Case("unknown model", _toy_train("--config.model=fcn9s"),
         ("config.model = 'fcn9s': unknown", "fcn8s", "set --config.model")),
    Case("unknown backbone", ("train", "--workdir={tmp}/w",
                              "--config.model_kwargs.backbone=resnet7"),
         ("config.model_kwargs.backbone = 'resnet7': unknown", "resnet18")),
    Case("unknown dataset", _toy_train("--config.data.dataset=pascal"),
         ("config.data.dataset = 'pascal': unknown", "camvid")),
    Case("unknown normalisation", _toy_train("--config.data.normalize=imagenet"),
         ("config.data.normalize = 'imagenet'", "torch")),
    # Values training cannot use: named before anything is built or written.
    Case("checkpoint every 0 steps", _toy_train("--config.checkpoint_every_steps=0"),
         ("config.checkpoint_every_steps = 0", ">= 1")),
    Case("evaluate every 0 steps", _toy_train("--config.eval_every_steps=0"),
         ("config.eval_every_steps = 0",)),
    Case("log every 0 steps", _toy_train("--config.log_every_steps=0"),
         ("config.log_every_steps = 0",)),
    Case("keep no checkpoint", _toy_train("--config.keep_checkpoints=0"),
         ("config.keep_checkpoints = 0",)),
    Case("negative steps", _toy_train("--config.num_train_steps=-3"),
         ("config.num_train_steps = -3", ">= 0")),
    Case("empty batch", _toy_train("--config.data.batch_size=0"),
         ("config.data.batch_size = 0", ">= 1")),
    Case("batch not divisible by the devices", _toy_train("--config.data.batch_size=3"),
         ("batch_size = 3 is not divisible", "devices")),
    Case("negative learning rate", _toy_train("--config.optimizer.learning_rate=-0.1"),
         ("config.optimizer.learning_rate = -0.1", ">= 0")),
    Case("NaN learning rate", _toy_train("--config.optimizer.learning_rate=nan"),
         ("config.optimizer.learning_rate = nan", "finite")),
    Case("momentum above 1", _toy_train("--config.optimizer.momentum=1.5"),
         ("config.optimizer.momentum = 1.5",)),
    Case("float16", _toy_train("--config.dtype=float16"),
         ("config.dtype = 'float16'", "bfloat16")),
    Case("unknown non-finite mode", _toy_train("--config.nonfinite=ignore"),
         ("config.nonfinite = 'ignore'", "stop, skip")),
    Case("empty crop", _toy_train("--config.data.crop_size=(0,0)"),
         ("config.data.crop_size = (0, 0)", "two integers > 0")),
    Case("evaluation size below the image size", _toy_train("--config.data.eval_size=(64,64)"),
         ("config.data.eval_size = (64, 64)", "96x96", "at least (96, 96)")),
    Case("reversed scale range", _toy_train("--config.data.scale_range=(2.0,0.5)"),
         ("config.data.scale_range", "low <= high")),
    Case("no spatial devices", _toy_train("--config.mesh.spatial=0"),
         ("config.mesh.spatial = 0",)),
    Case("spatial split not dividing the devices", _toy_train("--config.mesh.spatial=3"),
         ("spatial",)),
    Case("model that does not build", _toy_train("--config.model_kwargs.width=-1"),
         ("config.model_kwargs", "does not build", "'toy'")),
    # Files named by the config.
    Case("missing backbone weights", ("train", "--workdir={tmp}/w", "--config.data.data_dir={data}",
                                      "--config.init.backbone_weights={tmp}/r18.npz"),
         ("config.init.backbone_weights", "r18.npz", "does not exist", "convert-weights")),
    Case("backbone weights for a model without a backbone",
         _toy_train("--config.init.backbone_weights={tmp}/r18.npz"),
         ("config.init.backbone_weights", "arch")),
    Case("missing warm-start run", _toy_train("--config.init.checkpoint={tmp}/nowhere"),
         ("config.init.checkpoint", "nowhere")),
    Case("folder dataset without its folder",
         _toy_train("--config.data.dataset=folder", "--config.data.source_dir={tmp}/mine"),
         ("source directory", "mine", "does not exist", "classes.json")),
    Case("cut PNG in a folder dataset",
         _toy_train("--config.data.dataset=folder", "--config.data.source_dir={tmp}/mine",
                    "--config.data.data_dir={tmp}/tfds", "--config.data.crop_size=(32,32)"),
         ("cannot read image", "images/train/b.png", "replace or remove it"),
         setup=_folder_with_a_cut_image),
    Case("CamVid source dir that does not exist",
         _toy_train("--config.data.dataset=camvid", "--config.data.source_dir={tmp}/camvid",
                    "--config.data.data_dir={tmp}/tfds"),
         ("CamVid directory", "camvid", "does not exist", "trainannot")),
    Case("CamVid download while offline",
         _toy_train("--config.data.dataset=camvid", "--config.data.data_dir={tmp}/tfds"),
         ("cannot reach", "offline?", "source_dir"), setup=_offline),
    Case("cut ArrayRecord file", _toy_train("--config.data.data_dir={tmp}/tfds"),
         ("cannot read record", "cut or corrupt", "rebuild"), setup=_cut_build),
    # A work dir: resumes that do not fit, a full disk, a diverging run.
    Case("resume with another width", _resume("--config.model_kwargs.width=8",
                                              "--config.num_train_steps=6"),
         ("holds a run trained with config.model_kwargs.width = 4", "this config has 8",
          "drop that override"), keeps=("checkpoints", "best", "config.json")),
    Case("resume with another model", _resume("--config.model=toy2", "--config.num_train_steps=6"),
         ("config.model = 'toy'", "'toy2'"), keeps=("checkpoints", "best")),
    Case("disk full", _resume("--config.num_train_steps=6", "--config.checkpoint_every_steps=1"),
         ("not enough disk space for checkpoint 5", "older checkpoints are kept", "free disk space"),
         setup=_full_disk, keeps=("checkpoints",)),
    Case("NaN divergence", _resume("--config.num_train_steps=40", "--config.log_every_steps=100",
                                   "--config.optimizer.learning_rate=1e6"),
         ("training diverged at step", "lower --config.optimizer.learning_rate"),
         keeps=("checkpoints", "best")),
    # Issue #26, small items. Each exits before restoring a model (restore_model is None:
    # calling it would exit 1).
    Case("predict with overlay alpha 5", ("predict", "--workdir={run}", "--alpha=5", "{tmp}/a.png"),
         ("--alpha must be in [0, 1], got 5.0",),
         setup=lambda paths, patch: [_png("a.png")(paths, patch),
                                     patch.setattr("lapseg.cli.common.restore_model", None)]),
    Case("eval with a 0,0 tile", ("eval", "--workdir={run}", "--tile_size=0,0"),
         ("--tile_size must be positive, got 0,0",),
         setup=lambda paths, patch: patch.setattr("lapseg.cli.common.restore_model", None)),
    Case("predict into an output dir that is a file",
         ("predict", "--workdir={run}", "--output_dir={tmp}/out", "{tmp}/a.png"),
         ("--output_dir", "/out is a file, not a directory"),
         setup=lambda paths, patch: [_png("a.png")(paths, patch),
                                     _write("out", "a file\n")(paths, patch),
                                     patch.setattr("lapseg.cli.common.restore_model", None)]),
    # Issue #26: values that would hang or crash later, the work dir's files.
    Case("negative grain workers", _toy_train("--config.data.worker_count=-1"),
         ("config.data.worker_count = -1", ">= 0")),
    Case("zero epochs", _toy_train("--config.data.num_epochs=0"),
         ("config.data.num_epochs = 0", ">= 1")),
    Case("distributed join timeout 0", _toy_train(
        "--config.distributed.initialization_timeout_seconds=0"),
         ("config.distributed.initialization_timeout_seconds = 0", ">= 1")),
    Case("coordinator address without a port", _toy_train(
        "--config.distributed.coordinator_address=localhost"),
         ("config.distributed.coordinator_address = 'localhost'", "host:port")),
    Case("coordinator port 99999", _toy_train(
        "--config.distributed.coordinator_address=127.0.0.1:99999"),
         ("config.distributed.coordinator_address", "1..65535")),
    Case("config.json on a full disk", _resume("--config.num_train_steps=6"),
         ("cannot write", "config.json", "No space left on device", "free disk space"),
         setup=_no_space_for("config.json.tmp"), keeps=("checkpoints", "best", "config.json")),
    Case("dataset build on a full disk", _toy_train("--config.data.data_dir={tmp}/tfds"),
         ("cannot write the dataset build in", "tfds", "No space left on device"),
         setup=_build_on_a_full_disk),
    Case("unprepared catalog dataset", _toy_train("--config.data.dataset=oxford_iiit_pet",
                                                  "--config.data.data_dir={tmp}/tfds"),
         ("oxford_iiit_pet", "is not prepared", "tfds build oxford_iiit_pet",
          "(or pass the data_dir of such a build)")),
    Case("labels outside the classes", _toy_train(),
         ("label pixels that are neither a class id nor the ignore label",),
         setup=_shapes_as_three_classes),
    Case("loss weight for an output the model lacks", _resume(
        "--config.num_train_steps=6", "--config.loss.weights={{'logits': 1.0, 'aux': 0.4}}"),
         ("config.loss", "'aux'", "its training outputs are logits"),
         keeps=("checkpoints", "best", "config.json")),
    Case("class weights of the wrong length", _resume(
        "--config.num_train_steps=6", "--config.loss.class_weights=(1.0, 2.0)"),
         ("class_weights has 2 weights for 5 classes",), keeps=("config.json",)),
    Case("eval with another normalisation", ("eval", "--workdir={run}",
                                             "--config.data.normalize=none"),
         ("normalize='torch'", "normalize='none'")),
    Case("eval of a split whose labels are all ignored",
         ("eval", "--workdir={run}", "--config.data.dataset=folder",
          "--config.data.source_dir={tmp}/mine", "--config.data.data_dir={tmp}/tfds"),
         ("nothing was scored", "ignore label (255)"), setup=_all_ignored_folder),
    Case("predict into a read-only output dir",
         ("predict", "--workdir={run}", "{tmp}/a.png", "--output_dir={tmp}/out"),
         ("cannot write in --output_dir", "Read-only file system"),
         setup=lambda paths, patch: [_png("a.png")(paths, patch), patch.setattr(
             "lapseg.cli.predict.tempfile.TemporaryFile",
             lambda dir=None: (_ for _ in ()).throw(OSError(30, "Read-only file system")))]),
    Case("broken config.json on resume", _resume("--config.num_train_steps=6"),
         ("config.json", "not a readable config", "delete it"),
         setup=lambda paths, _: open(os.path.join(paths["run"], "config.json"), "w",
                                     encoding="utf-8").write("{broken")),
    # Evaluation, prediction, export, weight conversion.
    Case("eval of a missing work dir", ("eval", "--workdir={tmp}/nowhere"),
         ("lapseg eval: work dir", "nowhere", "does not exist")),
    Case("eval of an unknown split", ("eval", "--workdir={run}", "--split=tset"),
         ("no split 'tset'", "it has train, val")),
    Case("eval at scale 0", ("eval", "--workdir={run}", "--scales=0"),
         ("--scales must be positive",)),
    Case("eval with a 3-number tile", ("eval", "--workdir={run}", "--tile_size=1,2,3"),
         ("--tile_size takes 'H,W'",)),
    Case("eval --best without best/", ("eval", "--workdir={run}", "--best"),
         ("no best checkpoint", "lapseg train"), setup=_drop_best),
    Case("eval with another model", ("eval", "--workdir={run}", "--config.model=toy2"),
         ("toy2", "--config")),
    Case("predict a missing image", ("predict", "--workdir={run}", "{tmp}/nope.png"),
         ("no such image file", "nope.png")),
    Case("predict a glob matching nothing", ("predict", "--workdir={run}", "{tmp}/*.jpg"),
         ("no image files match",)),
    Case("predict a text file", ("predict", "--workdir={run}", "{tmp}/notes.png"),
         ("notes.png",), setup=_write("notes.png", "not an image\n")),
    Case("predict a cut PNG", ("predict", "--workdir={run}", "{tmp}/cut.png"),
         ("cut.png",), setup=_png("cut.png", cut=True)),
    Case("export of a missing work dir", ("export", "--workdir={tmp}/nowhere"),
         ("lapseg export", "nowhere", "does not exist")),
    Case("convert a missing file", ("convert-weights", "{tmp}/r50.pth", "{tmp}/r50.npz"),
         ("lapseg convert-weights: no such file", "r50.pth")),
    Case("convert a file that is no state dict", ("convert-weights", "{tmp}/r50.npz",
                                                   "{tmp}/out.npz"),
         ("cannot read", "r50.npz"), setup=_write("r50.npz", b"not a zip file")),
    Case("convert against an unknown arch", ("convert-weights", "{tmp}/in.npz", "{tmp}/out.npz",
                                             "--arch", "resnet7"),
         ("unknown arch", "resnet7"),
         setup=lambda paths, _: np.savez(os.path.join(paths["tmp"], "in.npz"), a=np.zeros(2))),
]


def test_the_table_holds_at_least_40_cases():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_is_one_line_and_exit_status_2(case, tmp_path, data_dir, healthy,
                                                    monkeypatch):
    run_dir = tmp_path / "run" / "w"
    shutil.copytree(healthy.parent, run_dir.parent)
    (tmp_path / "toy.py").write_text(helpers.toy.config_file(data_dir))
    paths = {"tmp": str(tmp_path), "data": data_dir, "run": str(run_dir),
             "config": str(tmp_path / "toy.py")}
    if case.setup:
        case.setup(paths, monkeypatch)
    before = {keep: helpers.file_hashes(run_dir / keep) if (run_dir / keep).is_dir()
              else (run_dir / keep).read_bytes() for keep in case.keeps}

    message = helpers.run(*(arg.format(**paths) for arg in case.argv))

    assert isinstance(message, str), f"exit status {message}, expected 2"
    command = "lapseg" if case.argv[0] == "trian" else f"lapseg {case.argv[0]}"
    helpers.one_line(message, f"{command}: ", *case.words)
    assert "Traceback" not in message
    for keep, was in before.items():
        now = helpers.file_hashes(run_dir / keep) if (run_dir / keep).is_dir() else (run_dir / keep).read_bytes()
        assert now == was, f"{keep} changed"
        assert was, f"{keep} was empty: the case checks nothing"


def test_the_disk_full_case_keeps_older_checkpoints_and_resumes_after(tmp_path, data_dir,
                                                                      healthy, monkeypatch):
    """After the one-line failure, freeing space (the patch gone) resumes from step 4."""
    shutil.copytree(healthy.parent, tmp_path / "run")
    argv = ["train", f"--workdir={tmp_path / 'run' / 'w'}", f"--config={tmp_path / 'run' / 'toy.py'}",
            f"--config.data.data_dir={data_dir}", "--config.num_train_steps=6"]
    _full_disk({"tmp": str(tmp_path)}, monkeypatch)
    assert "not enough disk space" in helpers.run(*argv)
    monkeypatch.undo()
    helpers.register_toy(monkeypatch)
    assert helpers.run(*argv) == 0
    checkpointer = checkpoint_lib.Checkpointer(tmp_path / "run" / "w" / "checkpoints")
    assert checkpointer.all_steps() == [4, 6]
    checkpointer.close()


def test_verbose_adds_the_traceback(tmp_path, capsys):
    from lapseg import cli  # pylint: disable=import-outside-toplevel

    assert cli.main(["train", f"--workdir={tmp_path}", "--config.keep_checkpoints=0",
                     "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("lapseg train: config.keep_checkpoints")


def test_an_unexpected_error_is_one_line_with_status_1(tmp_path, capsys, monkeypatch):
    """A bug (here: a loop that raises KeyError) is status 1 and one line saying to rerun
    with --verbose; anticipated errors are status 2."""
    from lapseg import cli  # pylint: disable=import-outside-toplevel
    from lapseg.train import loop  # pylint: disable=import-outside-toplevel

    def broken(config, workdir):
        raise KeyError("oops")

    monkeypatch.setattr(loop, "train_and_evaluate", broken)
    assert cli.main(["train", f"--workdir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "--verbose" in err


def _fcn():
    return models.create_model("fcn8s", num_classes=3, backbone="resnet18",
                               backbone_kwargs={"width": 0.125})


def _apply_uint8():
    model = _fcn()
    images = jnp.zeros((1, 32, 32, 3), jnp.uint8)
    model.init(jax.random.key(0), images)


def _loss(labels):
    logits = jnp.zeros((1, 4, 6, 3))
    return lambda: losses.masked_cross_entropy(logits, jnp.asarray(labels), ignore_label=255)


def _confusion(labels):
    return lambda: metrics.confusion_matrix(jnp.zeros((1, 4, 6), jnp.int32), jnp.asarray(labels),
                                            num_classes=3, ignore_label=255)


LIBRARY_CASES = [
    ("model.apply on uint8 images", _apply_uint8, TypeError, "normalise them first"),
    ("model.apply on 1-channel images",
     lambda: _fcn().init(jax.random.key(0), jnp.zeros((1, 32, 32, 1))), ValueError, "[N, H, W, 3]"),
    ("create_model with 0 classes", lambda: models.create_model("fcn8s", num_classes=0),
     ValueError, "num_classes must be an integer >= 1"),
    ("unknown model", lambda: models.create_model("fcn9s", num_classes=3), ValueError,
     "unknown model 'fcn9s'"),
    ("loss with transposed labels", _loss(np.zeros((1, 6, 4), np.int32)), ValueError, "shape"),
    ("loss with label -1", _loss(np.full((1, 4, 6), -1, np.int32)), ValueError, "-1"),
    ("loss with label 3 of 3 classes", _loss(np.full((1, 4, 6), 3, np.int32)), ValueError, "3"),
    ("confusion with label 7", _confusion(np.full((1, 4, 6), 7, np.int32)), ValueError, "7"),
]


@pytest.mark.parametrize("build, error, words", [case[1:] for case in LIBRARY_CASES],
                         ids=[case[0] for case in LIBRARY_CASES])
def test_a_bad_value_at_a_library_boundary_raises_naming_it(build, error, words):
    with pytest.raises(error) as raised:
        build()
    assert words in str(raised.value)


def test_a_divergence_in_skip_mode_does_not_suggest_skip_mode(tmp_path, monkeypatch):
    """With `nonfinite=skip` a run still stops on a non-finite *state*; the remedy then
    names the learning rate only, not the mode already set."""
    from lapseg.train import loop  # pylint: disable=import-outside-toplevel

    def diverged(config, workdir):
        raise loop.DivergenceError(5, float("nan"), float("nan"), in_state=True)

    monkeypatch.setattr(loop, "train_and_evaluate", diverged)
    for mode, suggested in (("skip", False), ("stop", True)):
        message = helpers.run("train", f"--workdir={tmp_path}", f"--config.nonfinite={mode}")
        helpers.one_line(message, "lapseg train:", "training diverged by step 5",
                         "lower --config.optimizer.learning_rate")
        assert ("--config.nonfinite=skip" in message) == suggested, message
