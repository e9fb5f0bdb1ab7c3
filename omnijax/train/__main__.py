"""`python -m omnijax.train ...` (see omnijax/train/main.py)."""

import sys

from omnijax.train.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
