"""Generate the shapes dataset (COCO and ImageFolder variants) for quick training runs.

    python examples/make_shapes.py --out examples/shapes --images 200 --size 128 --seed 0

The generator is workbench.data.shapes.generate_shapes; this script only parses arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Running the file directly puts examples/ first on sys.path, but the package is in the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.data.shapes import generate_shapes  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/shapes"), help="output folder")
    parser.add_argument("--images", type=int, default=200, help="images per variant, train and val together")
    parser.add_argument("--size", type=int, default=128, help="image width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of images in the val split")
    return parser


def main(args: argparse.Namespace) -> None:
    paths = generate_shapes(
        args.out, num_images=args.images, image_size=args.size, seed=args.seed, val_fraction=args.val_fraction
    )
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
