"""`python -m ninlayers`: the `ninlayers` command.

Importing the package has already imported Keras and TensorFlow, so their
start-up lines (which the `ninlayers` launcher hides) may show here.
"""

import sys

from ninlayers_cli import main

if __name__ == "__main__":
    sys.exit(main())
