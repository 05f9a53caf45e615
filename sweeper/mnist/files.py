"""MNIST's four raw files under data.root, and what is wrong with them when they are missing or damaged.

No torch here: `python -m sweeper.train` checks the files before it imports torch (sweeper/train.py).
"""
import os

# name -> (magic number, number of items); images are 28x28 uint8 after a 16-byte header, labels after 8 bytes
FILES = {
    "train-images-idx3-ubyte": (2051, 60000),
    "train-labels-idx1-ubyte": (2049, 60000),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}


class DataError(Exception):
    """MNIST is missing or damaged under data.root; the message says which file and how to fix it."""


def check_files(root, why=""):
    """Raise DataError naming the missing, truncated or corrupted raw files; `why` says why a download did not help."""
    raw = os.path.join(root, "MNIST", "raw")
    for name, (magic, n) in FILES.items():
        path = os.path.join(raw, name)
        if not os.path.isfile(path):
            missing = [f for f in FILES if not os.path.isfile(os.path.join(raw, f))]
            # after a failed download, data.download=true is no advice: it is already set
            raise DataError(
                f"data.root={root!r}: MNIST not found{why}, expected {', '.join(missing)} in {raw}; "
                f"point data.root (or MNIST_ROOT) at a folder holding MNIST/raw/"
                + ("" if why else ", or set data.download=true with internet")
            )
        header, item = (16, 28 * 28) if magic == 2051 else (8, 1)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            got = int.from_bytes(f.read(4), "big")
        if got != magic or size != header + n * item:
            raise DataError(
                f"{path}: corrupted (magic {got}, {size} bytes; expected magic {magic}, {header + n * item} bytes); "
                f"delete it and download again (data.download=true) or copy a good MNIST/raw/ there"
            )
