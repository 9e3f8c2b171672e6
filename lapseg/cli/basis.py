"""`lapseg basis [--workdir W] [--config C] [--config.field=value ...]`

Fits the label-fitted constants of the config's model from its training labels: LRR's
per-class reconstruction bases (`[32, 32, K, C]`, with a picture of them beside the
file, `<bases file without .npz>.png`: one row per class, one column per basis) or
DUpsampling's matrix. They go to `config.basis.path`, or `<workdir>/basis.npz` when that
is empty; an existing file is checked against the config and reused (delete it to refit).
`lapseg train` fits them itself when they are missing, so this command is optional: it
fits (and shows) them ahead of training. A model without fitted constants has nothing to
do. The config is --config, else the work dir's saved `config.json` if it has one, else
the default job.
"""

import os
import sys
import time

from lapseg.cli import common


def main(argv) -> int:
    program = argv[0]
    workdir = common.workdir_arg(argv)
    has_saved = os.path.isfile(os.path.join(workdir, common.CONFIG_FILE))

    def define(flag_values):
        common.define_workdir(flag_values, "The run's work dir (where basis.npz goes by default).")

    flag_values, positional = common.parse_flags(
        argv, __doc__, define=define,
        config_default=common.saved_config(workdir) if has_saved else common.CONFIG_MODULE,
        config_help="Config file (default: the work dir's config.json, else the default job).")
    if positional:
        common.fail(program, f"unexpected arguments {' '.join(positional)}", "see --help")
    config, workdir = flag_values.config, flag_values.workdir
    common.quiet_logging()
    from lapseg.train import fitted  # pylint: disable=import-outside-toplevel  (JAX, tfds)

    default_path = config.basis.path or os.path.join(workdir, "basis.npz")
    existed = os.path.exists(default_path)
    start = time.perf_counter()
    try:
        path = fitted.ensure(config, workdir)
    except ValueError as err:  # an existing file of another config
        common.fail(program, str(err))
    if path is None:
        print(f"{program}: model {config.model!r} needs no fitted constants; nothing to do")
        return 0
    if existed and os.path.abspath(path) == os.path.abspath(default_path):
        print(f"bases {path} exists (delete it to refit)")
    else:
        print(f"bases {path} written in {time.perf_counter() - start:.1f} s")
    picture = os.path.splitext(path)[0] + ".png"
    if os.path.exists(picture):
        print(f"picture of the bases: {picture}")
    return 0


if __name__ == "__main__":  # the same as `lapseg basis`
    from lapseg import cli

    sys.exit(cli.main(["basis", *sys.argv[1:]]))
