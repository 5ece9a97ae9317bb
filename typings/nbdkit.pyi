# For type-checking nbdkit-style plugins: at run time trioblock installs trioblock.nbdkit as
# the module `nbdkit`, so its hints are the real ones.
from trioblock.nbdkit import *  # noqa: F403
