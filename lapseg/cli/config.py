"""`lapseg config [--config C] [--config.field=value ...]`

Prints every field of a config with its value and meaning, one `field = value  # meaning`
line each, nested fields by their dotted names (`data.crop_size`): what `lapseg train
--config C` would run with these overrides. Without --config, the default job (`lapseg
train` without --config). Override any field on any command with `--config.field=value`.
"""

import sys

from lapseg.cli import common
from lapseg.train import fields


def field_lines(config, prefix: str = "") -> list[str]:
    """`'a.b = value'` for every leaf field of a ConfigDict (or dict), in its order."""
    lines = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            nested = field_lines(value, f"{name}.")
            lines += nested or [f"{name} = {{}}"]
        else:
            lines.append(f"{name} = {value!r}")
    return lines


def main(argv) -> int:
    program = argv[0]
    flag_values, positional = common.parse_flags(
        argv, __doc__, config_default=common.CONFIG_MODULE,
        config_help="Config file (.py with get_config()); default: the default job.")
    if positional:
        common.fail(program, f"unexpected arguments {' '.join(positional)}", "see --help")
    lines = field_lines(flag_values.config)
    width = max(map(len, lines), default=0)
    for line in lines:
        meaning = fields.meaning(line.split(" = ", 1)[0])
        print(f"{line:<{width}}  # {meaning}" if meaning else line)
    return 0


if __name__ == "__main__":  # the same as `lapseg config`
    from lapseg import cli

    sys.exit(cli.main(["config", *sys.argv[1:]]))
