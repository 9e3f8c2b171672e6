"""`lapseg train [--config C] [--workdir W] [--config.field=value ...]`

Trains the config's model in the work dir, resuming from its latest checkpoint, and
prints the final evaluation table. Without --config it trains the default job
(`lapseg/train/config.py`: FCN-8s on a quarter-width ResNet-18, from scratch, on the
generated shapes data). The work dir receives the resolved config (`config.json`, which
`lapseg eval` / `lapseg predict --workdir W` read), checkpoints, `metrics.jsonl` and
TensorBoard events.

  lapseg train --config configs/shapes_lrr.py --workdir runs/lrr --config.num_train_steps=500
"""

import sys

from lapseg.cli import common


def main(argv) -> int:
    def define(flag_values):
        common.define_workdir(flag_values, "Where config.json, checkpoints and logs go.")

    flag_values, positional = common.parse_flags(
        argv, __doc__, config_default=common.CONFIG_MODULE, define=define,
        config_help="Config file (a .py with get_config(); default: the default job).")
    if positional:
        common.fail(argv[0], f"unexpected arguments {' '.join(positional)}", "see --help")
    common.quiet_logging()
    from lapseg.train import init, loop  # pylint: disable=import-outside-toplevel

    workdir = flag_values.workdir
    try:
        result = loop.train_and_evaluate(flag_values.config, workdir)
    except init.InitError as err:  # config.init names a missing or unfitting file or run
        common.fail(argv[0], str(err).replace("\n", " "))
    print(f"final mIoU {result['miou']:.4f} at step {result['step']} (workdir {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(["lapseg train", *sys.argv[1:]]))
