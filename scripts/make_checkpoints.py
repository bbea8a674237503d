"""Regenerate the pretrained checkpoints shipped under data/checkpoints/ and record them in its manifest.

    python scripts/make_checkpoints.py fashion_cnn     # or: all
    tlcourse checkpoints fashion_cnn                   # the same, from the console script
    tlcourse pretrain supervised --ship                # the same recipe, reached through its objective

The recipes live in the package, in tlcourse.recipes (nbs/06_recipes.ipynb); this script only calls them.
The same seed on the same torch version and thread count gives the same weights.
"""
import argparse, sys

from tlcourse.recipes import RECIPES, build_checkpoints


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="checkpoint names or `all`: " + ", ".join(RECIPES))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in RECIPES and n != "all"]
    if unknown: parser.error(f"unknown checkpoint(s) {unknown}; known: {', '.join(RECIPES)} or all")
    return build_checkpoints(args.names)


if __name__ == "__main__":
    sys.exit(main())
