"""Train the book's small default model: a tiny Qwen3-layout decoder that writes readable text.

The book runs on any laptop without a download, so the package ships one trained
checkpoint (``tutorial_engine/book/models/tiny-qwen3-pydoc/``). This script is how it
was made; running it again on the same machine and library versions rewrites the
same files (seeded data order and initialisation, one CPU thread).

The training text ships with Python itself: the prose of ``pydoc_data.topics`` (the
pages ``help("if")`` and friends print), plus a few paragraphs this project wrote about
inference engines (:data:`tutorial_engine.book.tiny.CORPUS`). The tokenizer is a
byte-level BPE trained on the same text with the ``tokenizers`` library. The model is
Qwen3's layout (a Llama-family decoder with per-head RMSNorm on queries and keys, and
grouped-query attention), written by transformers in the Hugging Face layout, so the
engine loads it through the same ``LLM(path)`` code as a downloaded Qwen3-0.6B.

About one million parameters and a few CPU minutes of training make a model that
continues a prompt with plausible, mostly grammatical sentences about Python; it
knows nothing else, and it is not meant to.

    python -m tutorial_engine.book.train_tiny                 # writes the shipped checkpoint
    python -m tutorial_engine.book.train_tiny --draft         # its draft model (speculative decoding)
    python -m tutorial_engine.book.train_tiny --out /tmp/m --steps 50   # a quick try

``--draft`` trains a smaller sibling (2 layers, hidden size 96) on the same text with
the shipped model's own tokenizer files, so the two share a vocabulary token for
token, as a draft model for speculative decoding must (Leviathan et al., 2023).

References: the training loop is the standard next-token objective (Radford et al.,
"Language Models are Unsupervised Multitask Learners", 2019, section 2), with AdamW
(Loshchilov & Hutter, ICLR 2019) and a cosine learning-rate schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .tiny import CORPUS

MODEL_NAME = "tiny-qwen3-pydoc"
DRAFT_NAME = "tiny-qwen3-pydoc-draft"
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_OUT = MODELS_DIR / MODEL_NAME
DRAFT_OUT = MODELS_DIR / DRAFT_NAME
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2
MODEL_CARD = """# tiny-qwen3-pydoc

The book's default model: a 0.9M-parameter decoder in Qwen3's layout (4 layers,
hidden size 128, 4 query and 2 key/value heads of 32, a 1,024-entry byte-level BPE
vocabulary, tied embeddings), trained for about five CPU minutes on the prose of
CPython's `pydoc_data.topics` (the text `help("if")` prints) and a few paragraphs this
project wrote. It continues a prompt with sentences from Python's reference manual;
it knows nothing else.

Made by `python -m tutorial_engine.book.train_tiny` (settings and final loss in
`training.json`). The training text is from the Python documentation,
© Python Software Foundation, under the PSF License Agreement.
"""


DRAFT_MODEL_CARD = """# tiny-qwen3-pydoc-draft

The draft model of the book's speculative-decoding chapter: a 0.3M-parameter sibling
of `tiny-qwen3-pydoc` (2 layers, hidden size 96, 3 query and 1 key/value heads of 32,
tied embeddings) trained for about two CPU minutes on the same text with that model's
own tokenizer files, so both share one vocabulary. It proposes tokens cheaply; the
target model verifies them.

Made by `python -m tutorial_engine.book.train_tiny --draft` (settings and final loss
in `training.json`). The training text is from the Python documentation,
© Python Software Foundation, under the PSF License Agreement.
"""


def training_paragraphs() -> list[str]:
    """The training text as one paragraph per string: the prose of Python's own help
    topics (headings, code samples and grammar rules dropped, lines unwrapped), in a
    fixed order, then this project's paragraphs."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.split("\n")
            if any(line.startswith((" ", "\t")) for line in lines):  # code samples, tables, grammar
                continue
            if any(set(line.strip()) <= set("*=-~^") for line in lines):  # headings and underlines
                continue
            text = " ".join(line.strip() for line in lines)
            if len(text) >= 60 and "::=" not in text:
                paragraphs.append(text)
    own = [" ".join(CORPUS.split("\n")).strip()]
    return paragraphs + own


def train_tokenizer(paragraphs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any input encodes; no unknown token) with ``<s>`` added in front."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(paragraphs, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def model_config(vocab_size: int, draft: bool = False) -> transformers.Qwen3Config:
    """Qwen3-0.6B's layout at toy size: 4 layers, hidden 128, 4 query / 2 KV heads of 32;
    the draft: 2 layers, hidden 96, 3 query / 1 KV head of 32 (a third of the parameters)."""
    size = (dict(hidden_size=96, intermediate_size=288, num_hidden_layers=2, num_attention_heads=3,
                 num_key_value_heads=1) if draft else
            dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2))
    return transformers.Qwen3Config(
        vocab_size=vocab_size, **size, head_dim=32, max_position_embeddings=512,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.02,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, architectures=["Qwen3ForCausalLM"],
    )


def train(out: Path, steps: int = 1200, batch_size: int = 16, seq_len: int = 128, lr: float = 3e-3,
          vocab_size: int = 1024, seed: int = 0, draft: bool = False) -> dict:
    """Train and write the checkpoint folder ``out``; returns a summary (also saved as
    ``training.json`` beside the weights). ``draft``: the smaller draft model, with the
    tokenizer of the shipped model (which must exist) instead of a freshly trained one."""
    torch.set_num_threads(1)  # one thread: the same float sums in the same order on every run
    torch.manual_seed(seed)
    paragraphs = training_paragraphs()
    if draft:  # the target's own files: a retrained BPE could merge differently
        tokenizer = PreTrainedTokenizerFast.from_pretrained(DEFAULT_OUT)
    else:
        tokenizer = train_tokenizer(paragraphs, vocab_size)
    stream: list[int] = []
    for text in paragraphs:
        stream += tokenizer(text).input_ids + [tokenizer.eos_token_id]
    data = torch.tensor(stream, dtype=torch.long)

    model = transformers.Qwen3ForCausalLM(model_config(len(tokenizer), draft)).float()
    model.config._attn_implementation = "sdpa"
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    generator = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
        batch = torch.stack([data[s: s + seq_len + 1] for s in starts.tolist()])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone(), use_cache=False).loss
        # (transformers shifts the labels by one inside the loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {sum(losses[-50:]) / len(losses[-50:]):.3f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {
        "model": DRAFT_NAME if draft else MODEL_NAME, "parameters": sum(p.numel() for p in model.parameters()),
        "training_tokens": steps * batch_size * seq_len, "corpus_tokens": len(stream),
        "steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "seed": seed,
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 3),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "command": "python -m tutorial_engine.book.train_tiny" + (" --draft" if draft else ""),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(DRAFT_MODEL_CARD if draft else MODEL_CARD)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.train_tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"checkpoint folder (default: {DEFAULT_OUT}, or {DRAFT_OUT} with --draft)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draft", action="store_true",
                        help="train the smaller draft model, with the shipped model's tokenizer")
    args = parser.parse_args(argv)
    out = args.out or (DRAFT_OUT if args.draft else DEFAULT_OUT)
    summary = train(out, steps=args.steps, seed=args.seed, draft=args.draft)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
