"""Quick self-check of a fresh environment: the stack imports, and the course data is intact."""
import os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def main() -> int:
    import torch, torchvision, transformers  # noqa: F401  (the imports are the check)
    import tlcourse
    from tlcourse.registry import verify_all
    bad = verify_all()  # every dataset, checkpoint (and vocabulary) and installed third-party weights file, on content
    if bad:
        print("self-check: these course files are missing or corrupt:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"self-check: tlcourse {tlcourse.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"transformers {transformers.__version__}; all data files, checkpoints and weights verified")
    return 0

if __name__ == "__main__":
    sys.exit(main())
