"""`lapseg train [--config C] [--workdir W] [--config.field=value ...]`

Trains the config's model in the work dir, resuming from its latest checkpoint, and
prints the final evaluation table. Without --config it trains the default job
(`lapseg/train/config.py`: LRR-4x on a quarter-width ResNet-18, from scratch, on the
generated shapes data; `lapseg config` lists its fields). The work dir receives the resolved config (`config.json`, which
`lapseg eval` / `lapseg predict --workdir W` read; written before the run's first
checkpoint, so a run that fails earlier leaves it as it was), checkpoints, `metrics.jsonl`
and TensorBoard events. One run at a time per work dir: a second gets one line naming
the running process (`<workdir>/train.lock`; a killed run's lock is taken over).

Several processes train one model with --config.distributed.* (a manual launch: the same
coordinator_address and num_processes everywhere, each its own process_id; on a TPU pod
slice, SLURM or Open MPI, --config.distributed.enabled=true detects them); a process
that dies makes the others exit within config.distributed.heartbeat_timeout_seconds.
--config.mesh.spatial=S splits each image's height over S devices.

A non-finite loss or gradient norm stops training with one line naming the step, before
anything of it is saved (the checkpoints and best/ stay as they were); with
--config.nonfinite=skip such steps are skipped and counted instead. A latest checkpoint
that cannot be read is moved aside with a warning, and the run resumes from the previous.

  lapseg train --config configs/shapes_fcn8s.py --workdir runs/fcn8s --config.num_train_steps=500
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
    # pylint: disable=import-outside-toplevel
    from lapseg import data
    from lapseg.train import checkpoint, distributed, init, loop, step
    from lapseg.train import config as config_lib
    from lapseg.train import lock

    config, workdir = flag_values.config, flag_values.workdir
    try:
        result = loop.train_and_evaluate(config, workdir)
    except data.DataError as err:  # names the file or directory, and what to do
        common.fail(argv[0], str(err))
    except config_lib.ConfigError as err:  # names the field (and the work dir's value)
        common.fail(argv[0], str(err), err.todo or f"set --{str(err).split(' ', 1)[0]}")
    except init.InitError as err:  # config.init names a missing or unfitting file or run
        common.fail(argv[0], str(err).replace("\n", " "))
    except lock.WorkdirLockedError as err:  # another run trains in this work dir
        common.fail(argv[0], str(err), "wait for it to end, or pass another --workdir")
    except lock.WorkdirWriteError as err:  # read-only, no permission, full disk
        common.fail(argv[0], str(err), "pass a writable --workdir, or free disk space")
    except loop.DivergenceError as err:
        skip = ("" if config.nonfinite == "skip" else " or set --config.nonfinite=skip")
        common.fail(argv[0], str(err),
                    f"lower --config.optimizer.learning_rate (now "
                    f"{config.optimizer.learning_rate:g}){skip}; "
                    f"rerunning resumes from the last checkpoint, which is from before step "
                    f"{err.step}")
    except checkpoint.CheckpointWriteError as err:  # no space: older checkpoints are kept
        common.fail(argv[0], str(err), "free disk space (or pass another --workdir) and run "
                    "again: training resumes from the last checkpoint")
    except checkpoint.CheckpointError as err:  # the work dir's checkpoints do not restore
        common.fail(argv[0], str(err).replace("\n", " "),
                    "pass the --config the run was trained with, or another --workdir")
    except distributed.DistributedError as err:  # could not join the job, or unequal inputs
        common.fail(argv[0], str(err).replace("\n", " "),
                    "check --config.distributed.* (docs/training.md: Several processes)")
    except step.MeshError as err:
        common.fail(argv[0], str(err), "change --config.mesh.spatial or --config.data.batch_size")
    if not distributed.is_main():  # process 0 reports for all
        return 0
    skipped = f", {result['skipped_steps']} non-finite steps skipped" if result.get(
        "skipped_steps") else ""
    if "miou" not in result:  # a dataset without a validation split
        print(f"trained to step {result['step']}, not evaluated (workdir {workdir}{skipped})")
        return 0
    print(f"final mIoU {result['miou']:.4f} at step {result['step']} "
          f"(workdir {workdir}{skipped})")
    return 0


if __name__ == "__main__":  # the same as `lapseg train`
    from lapseg import cli

    sys.exit(cli.main(["train", *sys.argv[1:]]))
