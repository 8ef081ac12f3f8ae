"""``python -m selfloop.testing make-model DIR``: a random-weight model directory to try the
``pretrained`` provider on, with no download (a byte-level BPE tokenizer trained on the spot, a
chat template, Qwen2 or Llama shape)."""

from __future__ import annotations

import argparse

from .models import tiny_bpe_model_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selfloop.testing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-model", help="save a tiny random-weight model directory")
    make.add_argument("directory")
    make.add_argument("--architecture", choices=("qwen2", "llama"), default="qwen2")
    make.add_argument("--hidden-size", type=int, default=48)
    make.add_argument("--layers", type=int, default=2)
    make.add_argument("--no-chat-template", action="store_true")
    args = parser.parse_args(argv)
    path = tiny_bpe_model_dir(args.directory, architecture=args.architecture, hidden_size=args.hidden_size,
                              layers=args.layers, chat_template=not args.no_chat_template)
    print(f"saved a random-weight {args.architecture} model to {path}")


if __name__ == "__main__":
    main()
