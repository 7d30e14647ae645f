"""See why: where two models disagree, what each stage does to an image, what the network looks at.

    python tools/explain.py disagree --study output/pooling_vs_stride --pair LeNet LeNet_nopool --out why/
    python tools/explain.py disagree --a output/lenet --b output/lenet_nopool --out why/
    python tools/explain.py features output/lenet output/lenet_nopool --index 0 --out why/
    python tools/explain.py saliency output/lenet output/lenet_nopool --index 0 --out why/

Each writes a PNG and a JSON of the same numbers into --out.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import ArgParser, nonnegative_int, positive_int, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="job", required=True)
    d = sub.add_parser("disagree", help="test images one model gets right and the other wrong (in every seed)")
    d.add_argument("--study", help="a study folder (output/<study>); with --pair A B, all seeds of both labels")
    d.add_argument("--pair", nargs=2, metavar=("A", "B"))
    d.add_argument("--a", nargs="+", metavar="RUN", help="run folders of model A (one per seed)")
    d.add_argument("--b", nargs="+", metavar="RUN", help="run folders of model B (one per seed)")
    d.add_argument("--per-side", type=positive_int, default=8, help="images shown per side (default 8)")
    for name, text in (("features", "feature maps after each stage, and their change under a 1-2 px shift"),
                       ("saliency", "plain gradient and guided backpropagation of the predicted class")):
        p = sub.add_parser(name, help=text)
        p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (one per model)")
        p.add_argument("--index", type=nonnegative_int, default=0, help="test image index (default 0)")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="folder for the PNG and JSON")
    args = parser.parse_args(argv)
    from paddle_lenet import explain
    from paddle_lenet.errors import ConfigError

    if args.job == "disagree":
        if args.study and args.pair:
            a, b = explain.paired_study_runs(args.study, *args.pair)
            names = tuple(args.pair)
        elif args.a and args.b:
            a, b = args.a, args.b
            names = (os.path.basename(os.path.normpath(a[0])), os.path.basename(os.path.normpath(b[0])))
            if names[0] == names[1]:
                names = ("A", "B")
        else:
            raise ConfigError("disagree needs --study DIR --pair A B, or --a RUN... --b RUN...")
        result = explain.disagree(a, b, names, args.out, args.per_side)
        print(json.dumps({k: result[k] for k in ("a", "b", "seeds", "a_only_count", "b_only_count", "per_seed", "png")}))
        return 0
    labels = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(set(labels)) < len(labels):
        labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
    job = explain.features if args.job == "features" else explain.saliency_maps
    print(json.dumps(job(args.runs, labels, args.index, args.out)))
    return 0


if __name__ == "__main__":
    run(main)
