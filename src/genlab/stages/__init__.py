"""One thin command per DVC stage: parse arguments, load params, call the library, write outputs, log.

`python -m genlab.stages.<stage>` imports this package before the stage's module, while sys.argv[0] is
still "-m": the command begins here (genlab.runtime.stage.begin_command), before TensorFlow is imported.
"""

import sys

from genlab.runtime import stage

if sys.argv[:1] in (["-m"], ["-c"]):
    stage.begin_command(as_module=sys.argv[0] == "-m")
