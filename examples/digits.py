"""Reproduce the labelled-digits study of Baptista, Stuart & Tran (2025) on sklearn's digits.

The paper trains an image ↔ label contrastive model on MNIST and uses its critic three ways:
crossmodal retrieval, classification, and generation. We do the same offline on
scikit-learn's ``load_digits`` (1,797 8×8 images, 10 classes): an MLP image encoder and a
label embedding (a linear map of the one-hot label) trained with symmetric InfoNCE and a
cosine similarity. On held-out images we measure

- label → image retrieval: precision@K of the images ranked by ``f(image, label)``;
- image → label retrieval = zero-shot classification: ``argmax_label f(image, label)``
  (recall@1 and recall@3), next to logistic-regression probes on the raw pixels and on the
  learned embedding (the paper's fine-tuned classifier);
- generation: the critic's tilted conditional over a bank of held-out images,
  ``p(m | label) ∝ exp f(image_m, label)`` (:class:`pyro_contrast.ContrastiveConditional`),
  sampled per label; we report how often a sample has the conditioning label and the
  effective number of distinct images the conditional spreads over, and draw a grid.

The paper's claim: one contrastively trained pair of encoders supports retrieval,
classification (close to a supervised classifier after fine-tuning) and, read as a tilted
conditional, generation of samples from the right class.

Example::

    python examples/digits.py --out /tmp/bst-digits
"""

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import pyro_contrast as pc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

NUM_CLASSES = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, "results/digits")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--num-samples", type=int, default=8, help="generated images per label")
    parser.add_argument(
        "--max-images", type=int, default=None, help="use only the first N images (for quick runs)"
    )
    return parser.parse_args(argv)


def load(args):
    """Pixels scaled to [0, 1] and one-hot labels, split into train and test (float32)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images.reshape(len(data.images), -1) / 16.0, dtype=torch.float32)
    labels = torch.tensor(data.target)
    if args.max_images:
        images, labels = images[: args.max_images], labels[: args.max_images]
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
    n_test = int(round(args.test_fraction * len(images)))
    test, train = perm[:n_test], perm[n_test:]
    return images[train], labels[train], images[test], labels[test]


def one_hot(labels):
    return F.one_hot(labels, NUM_CLASSES).float()


def retrieval_metrics(critic, images, labels):
    """Zero-shot classification (image → label) and precision@K (label → image)."""
    with torch.no_grad():
        scores = critic.pairwise(images, one_hot(torch.arange(NUM_CLASSES)))  # (N, 10)
    ranked = scores.argsort(-1, descending=True)
    metrics = {
        "image→label recall@1": float((ranked[:, 0] == labels).float().mean()),
        "image→label recall@3": float((ranked[:, :3] == labels[:, None]).any(-1).float().mean()),
    }
    for k in (10, 50):
        k_eff = min(k, len(images))
        top = scores.T.topk(k_eff, dim=-1).indices  # (10, k) image indices per label
        hits = labels[top] == torch.arange(NUM_CLASSES)[:, None]
        metrics[f"label→image precision@{k}"] = float(hits.float().mean())
    return metrics, scores


def probes(critic, train, test, seed):
    """Logistic-regression accuracy on raw pixels and on the learned image embedding."""
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_test, y_test) = train, test
    out = {}
    with torch.no_grad():
        feats = {
            "pixels": (x_train, x_test),
            "embedding": (critic.encode_x(x_train), critic.encode_x(x_test)),
        }
    for name, (a, b) in feats.items():
        model = LogisticRegression(max_iter=2000, random_state=seed)
        model.fit(a.numpy(), y_train.numpy())
        out[f"linear probe on {name}"] = float(model.score(b.numpy(), y_test.numpy()))
    return out


def generate(critic, bank, bank_labels, num_samples, seed):
    """Sample bank images from the tilted conditional p(m | label) for every label."""
    pyro_seed = torch.Generator().manual_seed(seed)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=pyro_seed)))
    # The conditional is over the critic's y side: the same (symmetric) cosine critic, read
    # with labels as x and images as y.
    flipped = pc.Critic(
        critic.encoder_y,
        critic.encoder_x,
        similarity=critic.similarity,
        temperature=float(critic.temperature),
    )
    with torch.no_grad():
        dist = pc.ContrastiveConditional(flipped, one_hot(torch.arange(NUM_CLASSES)), bank)
        samples = dist.sample((num_samples,))  # (S, 10) bank indices
        probs = dist.logits.softmax(-1)  # (10, M)
    correct = float((bank_labels[samples] == torch.arange(NUM_CLASSES)).float().mean())
    mass = float(
        ((bank_labels[None, :] == torch.arange(NUM_CLASSES)[:, None]) * probs).sum(-1).mean()
    )
    effective = float((1.0 / probs.pow(2).sum(-1)).mean())
    return samples, {
        "generation: sample has the label": correct,
        "generation: probability mass on the label": mass,
        "generation: effective bank size per label": effective,
    }


@common.threaded
def main(args):
    out = common.prepare_out(args.out, args.force)
    start = time.time()
    x_train, y_train, x_test, y_test = load(args)
    torch.manual_seed(args.seed)
    encoder_x = nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.embedding_dim)
    )
    encoder_y = nn.Linear(NUM_CLASSES, args.embedding_dim, bias=False)
    critic = pc.Critic(encoder_x, encoder_y, similarity="cosine", temperature=args.temperature)
    pc.fit(
        critic,
        (x_train, one_hot(y_train)),
        loss="symmetric_infonce",
        steps=args.steps,
        batch_size=min(args.batch_size, len(x_train) // 2),
        lr=args.lr,
        schedule="cosine",
        validation=0.0,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    critic.eval()
    metrics, _ = retrieval_metrics(critic, x_test, y_test)
    metrics.update(probes(critic, (x_train, y_train), (x_test, y_test), args.seed))
    samples, gen = generate(critic, x_test, y_test, args.num_samples, args.seed)
    metrics.update(gen)
    table = pd.DataFrame({"value": metrics}).rename_axis("metric")
    text = common.write_table(out, "digits_metrics", table)
    print(f"Held-out digits ({len(x_test)} images, chance = 0.1):")
    print(text)
    print()
    common.claim(
        "retrieval, classification and generation from one contrastive critic",
        f"zero-shot accuracy {metrics['image→label recall@1']:.3f} vs linear probe "
        f"on pixels {metrics['linear probe on pixels']:.3f}; generated samples of the "
        f"right class {metrics['generation: sample has the label']:.3f}",
    )
    common.write_json(
        os.path.join(out, "results.json"),
        {
            "args": vars(args),
            "seconds": time.time() - start,
            "metrics": metrics,
            "samples": samples.tolist(),
        },
    )
    if not args.no_plots:
        _plot(x_test, samples, out)
    return metrics


def _plot(bank, samples, out):
    plt = common.pyplot()
    num_samples = samples.shape[0]
    fig, axes = plt.subplots(
        NUM_CLASSES, num_samples, figsize=(0.6 * num_samples, 0.6 * NUM_CLASSES), squeeze=False
    )
    for label in range(NUM_CLASSES):
        for j in range(num_samples):
            ax = axes[label, j]
            ax.imshow(bank[samples[j, label]].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[label, 0].set_ylabel(str(label), rotation=0, labelpad=8, fontsize=9)
    fig.suptitle("samples of p(image | label) over the held-out bank", fontsize=9)
    common.save_figure(fig, os.path.join(out, "bst_digits_samples.png"))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    common.script(main, parse_args, __file__)
