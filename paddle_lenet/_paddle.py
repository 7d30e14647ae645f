"""``import paddle`` without its import-time noise; every module of the package imports paddle after this.

Paddle's import prints "No ccache found" (a UserWarning) and installs an "always" warning filter in front
of any the caller set, so ``warnings.filterwarnings`` cannot silence it; recording the import's warnings
does, and restores the filters afterwards. Importing paddle only here, lazily, also keeps a config error
a sub-second answer (paddle's import takes ~2 s).
"""

import os
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")
with warnings.catch_warnings(record=True):
    import paddle  # noqa: F401
# printed by every BatchNorm layer in training, in every study worker: true, and nothing to act on
warnings.filterwarnings("ignore", message=".*we now always track global mean and variance.*")
