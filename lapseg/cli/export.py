"""`lapseg export [--workdir W] [--config C] [--best] --output FILE [--size H,W] [--platforms P]`

Writes a training run's model, restored from its latest checkpoint (or with --best its
best-mIoU one), as a serialized `jax.export` artifact (StableHLO) with its variables
baked in: a function of normalised f32 images `[n, H, W, 3]`, any batch size n, to f32
logits `[n, H, W, C]` at input resolution (the model's eval-mode 'logits'). Loading it
needs JAX alone, not lapseg:

  exported = jax.export.deserialize(open(FILE, 'rb').read())
  logits = exported.call(images)                  # argmax(logits, -1): class ids

The images must be normalised as the run was trained (`config.data.normalize`, named in
the summary line: `lapseg.ops.normalize(images, convention)`). The labels are those of
`lapseg predict --bucket=32` on images of that size (one scale, no flip, no tiling).

--size fixes H and W: by default the dataset's image size (shapes: 96,96; CamVid:
360,480), else the training crop (`config.data.crop_size`); a dataset of varying sizes
(`folder`) without a crop size needs --size. --platforms: lowered for each of them
(default cpu,cuda,tpu). Every BatchNorm is folded into its conv, so the artifact holds
the folded weights and no BatchNorm statistics (`lapseg.infer.fold_batch_norm`; the same
logits to float rounding); --fold_bn=false exports the model as trained. The file is
written atomically; one summary line is printed (path, input and output shapes, size in
MB). The config is the run's own
`<workdir>/config.json`, or --config for runs without one.
"""

import sys

from absl import flags

from lapseg.cli import common

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's platform names


def _define(flag_values):
    common.define_workdir(flag_values, "The training run's work dir.")
    flags.DEFINE_bool("best", False, "Export the best-mIoU checkpoint instead of the latest.",
                      flag_values=flag_values)
    flags.DEFINE_string("output", "", "The artifact's path (required).", flag_values=flag_values)
    flags.DEFINE_list("size", [], "'H,W' of the input images (default: the dataset's image "
                      "size, else the training crop size).", flag_values=flag_values)
    flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"],
                      f"Platforms to lower for, of {', '.join(PLATFORMS)}.",
                      flag_values=flag_values)
    common.define_fold_bn(flag_values)


def parse_size(program: str, values) -> tuple[int, int] | None:
    """`--size`'s `(H, W)`, or None when not given; anything but two positive ints exits."""
    if not values:
        return None
    try:
        size = tuple(int(v) for v in values)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        common.fail(program, f"--size takes 'H,W', two positive integers, got {','.join(values)}",
                    "e.g. --size=360,480")
    return size


def default_size(config, info) -> tuple[int, int] | None:
    """The dataset's image size, else the config's training crop size, else None."""
    size = info.image_size or config.data.get("crop_size", None)
    return tuple(int(s) for s in size) if size else None


def main(argv) -> int:
    program = argv[0]
    flag_values, positional = common.parse_flags(
        argv, __doc__, define=_define,
        config_default=common.run_config(program, argv, common.workdir_arg(argv)),
        config_help="Config the run was trained with (default: the run's saved config.json).")
    if positional:
        common.fail(program, f"unexpected arguments {' '.join(positional)}", "see --help")
    if not flag_values.output:
        common.fail(program, "no --output given", "pass --output FILE, e.g. model.jaxexport")
    size = parse_size(program, flag_values.size)
    platforms = tuple(flag_values.platforms)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        common.fail(program, f"--platforms: unknown {','.join(unknown) or '(none given)'}",
                    f"choose from {', '.join(PLATFORMS)}")
    common.quiet_logging()
    # pylint: disable=import-outside-toplevel  (JAX only once the flags are good)
    from lapseg import export as export_lib

    config, workdir = flag_values.config, flag_values.workdir
    model, variables, info, step = common.restore_model(program, config, workdir,
                                                        best=flag_values.best,
                                                        fold_bn=flag_values.fold_bn)
    size = size or default_size(config, info)
    if size is None:
        common.fail(program, f"dataset {info.name!r} has no fixed image size and the config no "
                    "crop size", "pass --size=H,W")
    exported = export_lib.export_model(model, variables, size, platforms=platforms)
    try:
        num_bytes = export_lib.save(exported, flag_values.output)
    except OSError as err:
        common.fail(program, f"cannot write {flag_values.output}: {err}")
    (in_aval,), (out_aval,) = exported.in_avals, exported.out_avals
    print(f"{flag_values.output}: {_shape(in_aval)} -> {_shape(out_aval)}, "
          f"{num_bytes / 1e6:.2f} MB ({config.model}, step {step} "
          f"{'best' if flag_values.best else 'latest'}; inputs normalised "
          f"{config.data.normalize!r}; {','.join(platforms)})")
    return 0


def _shape(aval) -> str:
    """`f32[n,96,96,3]`."""
    return aval.str_short(short_dtypes=True).replace(" ", "")


if __name__ == "__main__":  # the same as `lapseg export`
    from lapseg import cli

    sys.exit(cli.main(["export", *sys.argv[1:]]))
