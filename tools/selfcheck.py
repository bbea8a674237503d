"""Quick self-check of a fresh environment: the stack imports, and the course data is intact."""
import os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def main() -> int:
    import torch, torchvision, transformers  # noqa: F401  (the imports are the check)
    import tlcourse
    from tlcourse.data import verify_datasets
    bad = verify_datasets()
    from tlcourse.data import data_dir
    from tlcourse.models import verify_sha256
    from tlcourse.transfer import checkpoint_manifest
    for name, entry in checkpoint_manifest().items():
        try: verify_sha256(data_dir() / "checkpoints" / entry["file"], entry["sha256"])
        except (OSError, ValueError) as e: bad.append(f"checkpoint {name}: {e} Regenerate: {entry['command']}")
    if bad:
        print("self-check: these data files are missing or corrupt:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"self-check: tlcourse {tlcourse.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"transformers {transformers.__version__}; all data files and checkpoints verified")
    return 0

if __name__ == "__main__":
    sys.exit(main())
