"""What the commands share: absl + ml_collections config flags, the work dir and its saved
config, the inference flags, `--help`, and one-line errors.

A config-driven command builds its own `absl.flags.FlagValues` (never the global
`FLAGS`) through `parse_flags`: `--config` is a config file (`.py` with `get_config()`,
optionally `file.py:argument`), `--config.field=value` overrides a field, and a
misspelt field is an error naming it (the config is locked). `--help` / `-h` prints the
command's docstring and flags and exits 0.

Nothing here imports JAX: `lapseg.train.config`, imported for `CONFIG_FILE`, loads JAX and
lapseg.data only when a config is built.
"""

import argparse
import logging
import os
import pathlib
import re
import sys
import textwrap

from absl import flags
from ml_collections import config_flags

from lapseg.train.config import CONFIG_FILE  # imports neither JAX nor lapseg.data

# `get_config()`: the default job; `get_config('<workdir>/config.json')`: a run's saved config.
CONFIG_MODULE = str(pathlib.Path(__file__).resolve().parents[1] / "train" / "config.py")
DEFAULT_WORKDIR = "workdir/default"
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


verbose = False  # `--verbose` was given (set by `lapseg.cli.main`): tracebacks and all logs
EXIT_USAGE = 2  # the status of an anticipated error (bad flag, value, file, checkpoint, ...)


class CommandError(SystemExit):
    """An anticipated error of a command: `lapseg <command>: <what> — <what to do>`.

    `lapseg.cli.main` prints `message` as the one line on stderr and returns `EXIT_USAGE`
    (with `--verbose`, after the traceback of the error that caused it). `str()` is the
    message, so `pytest.raises(SystemExit, match=...)` matches it.
    """

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message

    def __str__(self):
        return self.message


def fail(program: str, what: str, todo: str | None = None):
    """Raises `CommandError('<program>: <what> — <todo>')`: one line on stderr, exit status 2."""
    raise CommandError(f"{program}: {what}" + (f" — {todo}" if todo else ""))


class OneLineArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `fail`'s one line (not usage + error)."""

    def error(self, message):
        fail(self.prog, message, f"see {self.prog} --help")


class CommandArgumentParser(OneLineArgumentParser):
    """For a command parsed by argparse (`convert-weights`): `--help` is the command's
    docstring (`description`, its first line the usage), then its arguments and flags
    listed as `print_help` lists the absl-parsed commands' flags, so every command's help
    reads alike."""

    def print_help(self, file=None):
        lines = []
        for title, positional in (("arguments", True), ("flags", False)):
            actions = [a for a in self._actions if bool(a.option_strings) != positional
                       and not isinstance(a, argparse._HelpAction)]  # pylint: disable=protected-access
            if actions:
                lines.append(f"\n{title}:")
            for action in actions:
                name = (action.metavar or action.dest.upper()) if positional else max(
                    action.option_strings, key=len)
                if not positional and action.nargs != 0:
                    name += f" {action.metavar or action.dest.upper()}" + (
                        " ..." if action.nargs in ("*", "+") else "")
                lines.append(textwrap.fill(f"{name}: {action.help}", 80, initial_indent="    ",
                                           subsequent_indent="      "))
                if not positional and action.default not in (None, False):
                    lines.append(f"      (default: {action.default!r})")
        print((self.description or "").strip() + "\n" + "\n".join(lines), file=file)


def wants_help(argv) -> bool:
    """Whether `argv[1:]` asks for help (`-h`, `--help`, ...) before any `--`."""
    for arg in argv[1:]:
        if arg == "--":
            return False
        if arg in HELP_FLAGS:
            return True
    return False


CONFIG_FIELDS_HINT = ("Config fields: `lapseg config [--config C]` prints every field with its "
                      "value;\nset one with --config.<field>=<value>.")


def print_help(doc: str, flag_values: flags.FlagValues) -> None:
    """The command's docstring (its usage text), where a config-driven command's fields are
    (`CONFIG_FIELDS_HINT`: absl lists `--config` only, not its fields), then its flags with
    their help texts. `--config`'s help names its default in words ('the run's saved
    config.json'), so absl's internal path (`CONFIG_MODULE:<workdir>/config.json`) is
    not shown."""
    print(doc.strip())
    if "config" in flag_values:
        print("\n" + CONFIG_FIELDS_HINT)
        flag_values["config"].default_as_str = None
    print("\nflags:")
    text = flag_values.get_help(prefix="  ", include_special_flags=False)
    # One list: drop absl's per-defining-module headings ('  lapseg.cli.common:').
    print("\n".join(line for line in text.splitlines()
                    if line.strip() and not re.fullmatch(r"  [\w.]+:", line)))


def flag_value(argv, name: str):
    """The last value given to `--name` in `argv[1:]` (`--name=V`, `--name V`, `-name V`),
    or None: read before the flags are defined, when a default depends on it."""
    value, args, i = None, list(argv[1:]), 0
    pattern = re.compile(rf"--?{re.escape(name)}(=(.*))?", re.S)
    while i < len(args):
        if args[i] == "--":
            break
        match = pattern.fullmatch(args[i])
        if match and match.group(1) is not None:
            value = match.group(2)
        elif match and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        i += 1
    return value


def has_flag(argv, name: str) -> bool:
    """Whether `argv[1:]` sets `--name` itself (not one of its `--name.field` overrides)."""
    pattern = re.compile(rf"--?{re.escape(name)}(=.*)?", re.S)
    return any(pattern.fullmatch(arg) for arg in argv[1:])


def workdir_arg(argv) -> str:
    """`--workdir` of `argv` (read before parsing), else `DEFAULT_WORKDIR`."""
    return flag_value(argv, "workdir") or DEFAULT_WORKDIR


def define_workdir(flag_values, help_string: str) -> None:
    flags.DEFINE_string("workdir", DEFAULT_WORKDIR, help_string, flag_values=flag_values)


def saved_config(workdir: str) -> str:
    """The config-file argument of the config saved in `workdir`: `CONFIG_MODULE:W/config.json`."""
    return f"{CONFIG_MODULE}:{os.path.join(os.path.abspath(workdir), CONFIG_FILE)}"


def run_config(program: str, argv, workdir: str) -> str:
    """`--config`'s default for commands that read a training run (`eval`, `predict`).

    The run's saved `<workdir>/config.json`; without `--config` on the command line, a
    missing work dir or config.json is a one-line exit.
    """
    if has_flag(argv, "config") or wants_help(argv):
        return saved_config(workdir)
    if not os.path.isdir(workdir):
        fail(program, f"work dir {workdir} does not exist",
             "pass --workdir of a `lapseg train` run")
    if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        fail(program, f"{os.path.join(workdir, CONFIG_FILE)} does not exist (a run saved before "
             "configs were saved, or not a training work dir)",
             "pass --config with the config it was trained with")
    return saved_config(workdir)


def _message(err) -> str:
    """One line from an error of absl / ml_collections / a config's `get_config`."""
    while err.args and isinstance(err.args[0], BaseException):  # KeyError/AttributeError wrappers
        err = err.args[0]
    text = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Error whilst parsing config file" in text and lines:
        # ml_collections' wrapper holds get_config's traceback; its last line is the error.
        return "cannot load the config: " + re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
    return " ".join(lines)


def _missing_field(err, argv) -> str | None:
    """For an override naming a field the config lacks (`--config.model_kwargs.foo.width`):
    `'--config.model_kwargs.foo.width: the config has no field model_kwargs.foo'`, else None."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    if not isinstance(err, (KeyError, AttributeError)) or not err.args:
        return None
    key = str(err.args[0]).split()[0].strip("'\"")
    for arg in argv[1:]:
        name = arg.split("=", 1)[0].lstrip("-")
        parts = name.split(".")
        if parts[0] == "config" and key in parts[1:]:
            field = ".".join(parts[1:parts.index(key, 1) + 1])
            hint = " ".join(str(err.args[0]).split()[1:])  # ml_collections' "Did you mean ..."
            return f"--{name}: the config has no field {field}" + (f" ({hint})" if hint else "")
    return None


def parse_flags(argv, doc: str, *, config_default: str, config_help: str, define=None):
    """Defines `--config` (+ overrides) and `define(flag_values)`'s flags, then parses `argv`.

    Args:
      argv: `[program, *args]`.
      doc: the command's usage text, printed by `--help` / `-h` (which then exits 0).
      config_default: `--config`'s default, a config-file argument (`file.py[:arg]`).
      config_help: `--config`'s help text.
      define: optional function defining the command's other flags on the `FlagValues`.

    Returns:
      `(flag_values, positional arguments)`; `flag_values.config` is the locked config.
      Unknown flags, bad values, a misspelt `--config.field` or a config that does not
      load exit with one line.
    """
    program, asks_help = argv[0], wants_help(argv)
    given = flag_value(argv, "config")
    if given is not None and not asks_help and not os.path.isfile(given.split(":", 1)[0]):
        fail(program, f"config file {given.split(':', 1)[0]!r} does not exist",
             "pass a .py file with get_config()")
    flag_values = flags.FlagValues()
    # ml_collections executes the file into `sys.modules['config_config']`, reusing a module
    # left there by an earlier parse in this process (whose get_config a file without one
    # would then inherit): start from none.
    sys.modules.pop("config_config", None)
    # With `sys_argv`, ml_collections loads the config and applies the overrides while
    # defining the flag (so a typo surfaces here). For --help nothing is loaded: a
    # `--config` in the given argv makes it keep the default as text.
    sys_argv = [program, f"--config={config_default}"] if asks_help else list(argv)
    try:
        config_flags.DEFINE_config_file("config", config_default, config_help,
                                        flag_values=flag_values, lock_config=True,
                                        sys_argv=sys_argv)
        if define is not None:
            define(flag_values)
        if not asks_help:
            positional = flag_values(list(argv))[1:]
            if flag_values.config is None:  # ml_collections' value for a file without one
                raise ValueError(f"cannot load the config: {given} has no get_config() returning "
                                 "a ConfigDict")
            flag_values.config.get("model")  # a config file that failed to load raises here
    except Exception as err:  # pylint: disable=broad-except  (a config file runs any code)
        what = _message(err)
        if isinstance(err, AttributeError) and "get_config" in str(err):
            what = f"cannot load the config: {given} defines no get_config()"
        elif isinstance(err, (SyntaxError, NameError, ImportError)):
            what = f"cannot load the config: {type(err).__name__}: {what}"
        elif not what.startswith("cannot load"):
            missing = _missing_field(err, argv)
            what = f"bad flag: {missing or what}"
            if missing or "--config." in what:  # a field's name or value: list the fields
                fail(program, what, f"see `lapseg config` for every field ({program} "
                     "--help for the flags)")
        fail(program, what, "see --help")
    if asks_help:
        print_help(doc, flag_values)
        sys.exit(0)
    return flag_values, positional


def define_inference_flags(flag_values) -> None:
    """`--best` and the test-time options shared by `lapseg eval` and `lapseg predict`, with
    one default each: so both give an image the same labels (`--bucket=0`, the training
    loop's evaluation sizes)."""
    flags.DEFINE_bool("best", False, "Restore the best-mIoU checkpoint instead of the latest.",
                      flag_values=flag_values)
    flags.DEFINE_list("scales", ["1.0"], "Image scales of the views (probabilities averaged), "
                      "e.g. 0.75,1,1.25.", flag_values=flag_values)
    flags.DEFINE_bool("flip", False, "Add horizontally mirrored views.", flag_values=flag_values)
    flags.DEFINE_list("tile_size", [], "Sliding-window tile 'H,W' (empty: whole image).",
                      flag_values=flag_values)
    flags.DEFINE_float("tile_overlap", 1 / 3, "Fraction of a tile shared with its neighbour.",
                       flag_values=flag_values)
    flags.DEFINE_integer("bucket", 0, "Pad images to multiples of this: one compilation "
                         "per padded size (0: the training loop's evaluation sizes, multiples "
                         "of 32 up to 512, coarser above).", flag_values=flag_values)
    define_fold_bn(flag_values)


def define_fold_bn(flag_values) -> None:
    """`--fold_bn` (default true) of the inference commands (`eval`, `predict`, `export`)."""
    flags.DEFINE_bool("fold_bn", True, "Fold every BatchNorm into the conv before it (the same "
                      "outputs to float rounding, faster); --fold_bn=false runs the model as "
                      "trained.", flag_values=flag_values)


def parse_run_flags(argv, doc: str, *, define=None):
    """`parse_flags` for the commands that read a training run (`eval`, `predict`).

    Defines `--workdir`, `--config` defaulting to the run's saved config (`run_config`),
    the inference flags (`define_inference_flags`) and
    `define(flag_values)`'s own flags, then parses `argv`.

    Returns:
      `(flag_values, positional arguments)`, as `parse_flags`.
    """

    def define_all(flag_values):
        define_workdir(flag_values, "The training run's work dir.")
        define_inference_flags(flag_values)
        if define is not None:
            define(flag_values)

    return parse_flags(
        argv, doc, config_default=run_config(argv[0], argv, workdir_arg(argv)), define=define_all,
        config_help="Config the run was trained with (default: the run's saved config.json).")


def inference_options(program: str, flag_values) -> dict:
    """`lapseg.infer.Predictor`'s keyword arguments from the inference flags."""
    try:
        scales = tuple(float(s) for s in flag_values.scales)
        tile_size = tuple(int(t) for t in flag_values.tile_size)
    except ValueError as err:
        fail(program, f"bad --scales or --tile_size: {err}", "see --help")
    if tile_size and len(tile_size) != 2:
        fail(program, f"--tile_size takes 'H,W', got {','.join(flag_values.tile_size)}")
    if tile_size and min(tile_size) <= 0:
        fail(program, f"--tile_size must be positive, got {','.join(flag_values.tile_size)}",
             "pass 'H,W' in pixels, e.g. 512,512, or leave it out for whole images")
    if not scales or min(scales) <= 0:
        fail(program, f"--scales must be positive, got {','.join(flag_values.scales)}")
    if not 0 <= flag_values.tile_overlap < 1:
        fail(program, f"--tile_overlap must be in [0, 1), got {flag_values.tile_overlap}")
    if flag_values.bucket < 0:
        fail(program, f"--bucket must be >= 0, got {flag_values.bucket}")
    return {"tile_size": tile_size or None, "tile_overlap": flag_values.tile_overlap,
            "scales": scales, "flip": flag_values.flip, "bucket": flag_values.bucket}


def restore_model(program: str, config, workdir: str, *, best: bool, fold_bn: bool = False):
    """`lapseg.infer.restore_model`'s `(model, variables, DatasetInfo, step)` of `workdir`'s
    latest (or best) checkpoint, with `fold_bn` its BatchNorms folded into the convs.

    A work dir without such a checkpoint, or one of another model, is a one-line exit.
    """
    directory = os.path.join(workdir, "best" if best else "checkpoints")
    if not os.path.isdir(directory):
        fail(program, f"no {'best ' if best else ''}checkpoint in {workdir} "
             f"({directory} does not exist)",
             f"train first (lapseg train --workdir {workdir}) or pass the --workdir of a run")
    # pylint: disable=import-outside-toplevel  (JAX, tfds, orbax only once the flags are good)
    from lapseg import infer
    from lapseg.train import checkpoint as checkpoint_lib

    try:
        model, variables, info, step = infer.restore_model(config, workdir, best=best,
                                                           fold_bn=fold_bn)
    except checkpoint_lib.CheckpointError as err:
        fail(program, str(err), f"train first (lapseg train --workdir {workdir})"
             if str(err).startswith("no checkpoint") else
             "pass the --config the run was trained with")
    except (TypeError, ValueError) as err:  # the config's model does not build
        fail(program, f"cannot build the model of the config: {err}",
             "pass the --config the run was trained with")
    return model, variables, info, step


def restore_predictor(program: str, config, workdir: str, options: dict, *, best: bool,
                      fold_bn: bool = False):
    """`(Predictor, DatasetInfo, step)` of `workdir`'s latest (or best) checkpoint
    (`restore_model`'s one-line exits), with `fold_bn` its BatchNorms folded."""
    from lapseg import infer  # pylint: disable=import-outside-toplevel

    model, variables, info, step = restore_model(program, config, workdir, best=best,
                                                 fold_bn=fold_bn)
    predictor = infer.Predictor(model, variables, normalization=config.data.normalize,
                                **options)
    return predictor, info, step


def quiet_logging() -> None:
    """lapseg's own progress at INFO; orbax/absl/tfds chatter only from WARNING up, and
    without `--verbose` none of absl's (orbax logs the tracebacks of its writer threads
    there; lapseg reports their failures itself, as one line)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("lapseg").setLevel(logging.INFO)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tfds.disable_progress_bar()
    if not verbose:
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        sys.unraisablehook = _quiet_unraisablehook


def _quiet_unraisablehook(unraisable):
    """Drops asyncio's 'Event loop is closed' that tensorstore's writer threads report
    (as unraisable) after a failed checkpoint write, which lapseg reports itself."""
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)
