"""Library code has no side effects: importing `lapseg.infer` loads no input pipeline
(grain, tensorflow_datasets), and the pipeline never marks absl's FLAGS as parsed."""

import subprocess
import sys

NO_PIPELINE = ("import lapseg.infer, sys; "
               "assert 'grain' not in sys.modules and 'tensorflow_datasets' not in sys.modules")


def _python(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_importing_infer_loads_no_input_pipeline():
    _python(NO_PIPELINE)


def test_grain_workers_leave_absl_flags_unparsed():
    """What `worker_count > 0` does to absl (`pipeline._grain_flags_readable`): grain's own
    flag, which grain reads when its workers start, becomes readable; `FLAGS` stays
    unparsed, and a flag of the program is not marked present."""
    out = _python(
        "from absl import flags\n"
        "flags.DEFINE_integer('lapseg_test_flag', 3, 'a flag of the program')\n"
        "from lapseg.data import pipeline\n"
        "pipeline._grain_flags_readable()\n"
        "print(flags.FLAGS.grain_enable_multiprocess_worker_profiling)\n"
        "assert not flags.FLAGS.is_parsed()\n"
        "assert not flags.FLAGS['lapseg_test_flag'].present\n")
    assert out.strip() == "False"
